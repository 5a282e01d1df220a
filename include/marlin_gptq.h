/*
 * marlin_gptq.h: GPTQ quantization of a linear layer into the Marlin format.
 *
 * For a layer y = W x (W: n x k, torch.nn.Linear's layout) and calibration
 * inputs x, GPTQ picks 4-bit codes that minimise ||X W^T - X Q^T||^2 using the
 * Hessian H = (2/N) sum x x^T, one column at a time, pushing each column's
 * rounding error onto the columns not yet quantized.
 *
 * Flow: zero a k x k float H and a row counter; call marlin_hessian_accumulate
 * for each batch of calibration rows; then marlin_gptq_quantize. Its codes and
 * scales go straight to marlin_pack (marlin.h).
 */
#ifndef MARLIN_GPTQ_H
#define MARLIN_GPTQ_H

#include "marlin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct marlin_gptq_options {
    float damp_fraction;     /* added to H's diagonal, times its mean; default 0.01 */
    int block_size;          /* columns per lazy batch update; default 128 */
    int act_order;           /* 1: columns in order of decreasing H_ii, static groups; default 0 */
    int clip_grid_points;    /* shrink factors tried per group (1.00 down to clip_min_shrink); 1 = no clipping; default 20 */
    float clip_min_shrink;   /* smallest shrink factor; default 0.5 */
} marlin_gptq_options;

/* Fills the defaults documented above. */
MARLIN_API void marlin_gptq_default_options(marlin_gptq_options* options);

/*
 * Folds `rows` input rows into the running Hessian H = (2/N) sum x x^T.
 *   H          k x k fp32, in/out (zeroed by the caller before the first batch)
 *   rows_seen  in/out: N so far (0 before the first batch)
 *   X          rows x k fp32, row-major; NaN/Inf gives MARLIN_STATUS_INVALID_VALUE
 */
MARLIN_API marlin_status marlin_hessian_accumulate(float* H, int64_t* rows_seen, const float* X,
                                                   int rows, int k);

/*
 * Quantizes W given H into codes + scales (symmetric, zero code 8).
 *   W       n x k fp32, row-major (not modified)
 *   H       k x k fp32 (not modified)
 *   codes   out: k x n bytes (0..15);  scales  out: ceil(k/group_size) x n fp16
 * options may be NULL for the defaults.
 */
MARLIN_API marlin_status marlin_gptq_quantize(const float* W, int n, int k, const float* H,
                                              int group_size, const marlin_gptq_options* options,
                                              uint8_t* codes, uint16_t* scales);

#ifdef __cplusplus
}
#endif

#endif /* MARLIN_GPTQ_H */
