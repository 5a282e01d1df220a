/*
 * marlin_gptq.h: GPTQ quantization of a linear layer into the Marlin format.
 *
 * For a layer y = W x (W: n x k, torch.nn.Linear's layout) and calibration
 * inputs x, GPTQ picks 4-bit codes that minimise ||X W^T - X Q^T||^2 using the
 * Hessian H = (2/N) sum x x^T, one column at a time, pushing each column's
 * rounding error onto the columns not yet quantized (Frantar et al., 2022).
 *
 * Flow: zero a k x k float H and a row counter; call marlin_hessian_accumulate
 * for each batch of calibration rows; then marlin_gptq_quantize. Its codes and
 * scales go straight to marlin_pack (marlin.h).
 *
 * The quantization grid is the kernel's: dequant(q) = (q - 8) * s, q in 0..15,
 * s one fp16 scale per group of group_size input features and per output, so
 * the representable values are s * {-8..7}. Codes are always computed with the
 * fp16-rounded scale, so codes and scales agree exactly, and the error GPTQ
 * feeds forward is that of the fp16-rounded dequantized weight the kernel uses.
 *
 * What is done, in order (the same on the CPU and the GPU):
 *   1. dead inputs (H_ii = 0): H_ii := 1 and W's column i := 0, as in GPTQ
 *      (and H's row and column i off the diagonal read as 0);
 *   2. act_order: columns visited in order of decreasing H_ii (ties: lower
 *      index first), with *static groups*: every group's scale is chosen up
 *      front from the weights in the original column order, so the result
 *      needs no g_idx and packs like any other;
 *   3. damping: H += damp_fraction * mean(diag H) * I; if H is then not
 *      positive definite the damping is raised (x10, x100, at least 1e-2 and
 *      1e-1 of the mean diagonal) before MARLIN_STATUS_NOT_POSITIVE_DEFINITE;
 *   4. U = upper Cholesky factor of H^-1, computed in double as the inverse of
 *      the "reversed" Cholesky factor of H (H = V V^T, V upper; U = V^-1);
 *   5. columns in blocks of block_size: each column is quantized, its error
 *      divided by U_ii is pushed onto the later columns of its block at once
 *      and onto the columns after the block in one matrix product per block;
 *   6. group scales (without act_order) are chosen when the group is reached,
 *      from the weights as updated so far; blocks are cut where needed so
 *      that a group starting inside a block lies wholly inside it;
 *   7. the scale of a group and output: s = fp16(shrink * max|w| / 7) for the
 *      clip_grid_points shrink factors 1.0 down to clip_min_shrink, the one
 *      with the least sum of squared errors sum (w - dequant(q))^2 (ties:
 *      the larger shrink); an all-zero group gets s = 1 like marlin_quantize_rtn.
 *      With clip_grid_points = 1 and an H proportional to I the codes and
 *      scales are exactly marlin_quantize_rtn's.
 *
 * The CPU code is plain C with its own Cholesky factorisation and triangular
 * inverse in double (no external BLAS or LAPACK); it runs on the calling
 * thread. The GPU path (marlin_gptq_gpu_*) uses cuBLAS and cuSOLVER plus a few
 * small kernels; it gives the same codes except where a rounding tie is broken
 * differently by a different summation order (tests/test_gptq_gpu.c states the
 * tolerance).
 *
 * Only the lower triangle of H (H[r][c] with r >= c, row-major) is read; H is
 * assumed symmetric. NaN or Inf anywhere in W, X or that triangle gives
 * MARLIN_STATUS_INVALID_VALUE. On any error nothing is written to codes or
 * scales.
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
 * Checks options: damp_fraction finite and >= 0, block_size >= 1,
 * act_order 0 or 1, clip_grid_points in 1..256, clip_min_shrink in (0, 1].
 * Returns MARLIN_STATUS_INVALID_VALUE otherwise.
 */
MARLIN_API marlin_status marlin_gptq_check_options(const marlin_gptq_options* options);

/* ------------------------------------------------------------------ CPU -- */

/*
 * Folds `rows` input rows into the running Hessian H = (2/N) sum x x^T.
 *   H          k x k fp32, in/out (zeroed by the caller before the first batch);
 *              both triangles are written, exactly symmetric
 *   rows_seen  in/out: N so far (0 before the first batch)
 *   X          rows x k fp32, row-major; NaN/Inf gives MARLIN_STATUS_INVALID_VALUE
 * Any k >= 1; rows >= 0 (0 changes nothing). On error H is unchanged.
 */
MARLIN_API marlin_status marlin_hessian_accumulate(float* H, int64_t* rows_seen, const float* X,
                                                   int rows, int k);
/* The same with X as fp16 bits (rows x k). */
MARLIN_API marlin_status marlin_hessian_accumulate_fp16(float* H, int64_t* rows_seen,
                                                        const uint16_t* X, int rows, int k);

/*
 * Quantizes W given H into codes + scales (symmetric, zero code 8).
 *   W       n x k fp32, row-major (not modified)
 *   H       k x k fp32 (not modified; lower triangle read)
 *   codes   out: k x n bytes (0..15);  scales  out: ceil(k/group_size) x n fp16
 * k, n multiples of 64 and group_size 32, 64, 128 or k, as marlin_pack takes
 * them. options may be NULL for the defaults. Needs about 8*k*k + 4*k*n bytes
 * of host memory (MARLIN_STATUS_OUT_OF_MEMORY otherwise).
 */
MARLIN_API marlin_status marlin_gptq_quantize(const float* W, int n, int k, const float* H,
                                              int group_size, const marlin_gptq_options* options,
                                              uint8_t* codes, uint16_t* scales);
/* The same with W as fp16 bits (n x k). */
MARLIN_API marlin_status marlin_gptq_quantize_fp16(const uint16_t* W, int n, int k, const float* H,
                                                   int group_size,
                                                   const marlin_gptq_options* options,
                                                   uint8_t* codes, uint16_t* scales);

/* ------------------------------------------------------------------ GPU -- */

/*
 * An opaque GPU context: the cuBLAS and cuSOLVER handles (created once) and
 * one device scratch buffer, grown on demand and kept until destroy (about
 * 12*k*k + 5*k*n bytes for the largest layer quantized; for k = 28672 that is
 * 9.9 GB). It belongs to the device current at create time; use it from one
 * host thread at a time. All pointers passed to the calls below are device
 * pointers unless marked host.
 */
typedef struct marlin_gptq_gpu marlin_gptq_gpu;

/* Creates a context on the current device: MARLIN_STATUS_NO_DEVICE without one. */
MARLIN_API marlin_status marlin_gptq_gpu_create(marlin_gptq_gpu** context);
/* Frees the context and its scratch memory (waits for its work). NULL is allowed. */
MARLIN_API marlin_status marlin_gptq_gpu_destroy(marlin_gptq_gpu* context);

/*
 * marlin_hessian_accumulate on the GPU (one cuBLAS product with fp32
 * accumulation; fp32 inputs without TF32). Synchronous: it checks X for
 * NaN/Inf first and waits for that check on `stream`, so on error H is
 * unchanged; the product itself is queued on `stream` when the call returns.
 *   H          device k x k fp32, in/out (zeroed before the first batch); the
 *              two triangles may differ in the last bit (quantize reads the lower)
 *   rows_seen  host, in/out
 *   X          device rows x k, fp32 (or fp16 for the _fp16 variant), row-major
 */
MARLIN_API marlin_status marlin_gptq_gpu_hessian_accumulate(marlin_gptq_gpu* context, float* H,
                                                            int64_t* rows_seen, const float* X,
                                                            int rows, int k, cudaStream_t stream);
MARLIN_API marlin_status marlin_gptq_gpu_hessian_accumulate_fp16(marlin_gptq_gpu* context, float* H,
                                                                 int64_t* rows_seen, const void* X,
                                                                 int rows, int k,
                                                                 cudaStream_t stream);

/*
 * marlin_gptq_quantize on the GPU: same arguments, same algorithm, device
 * pointers. Synchronous (it reads back the Cholesky status and the checks):
 * when it returns the outputs are written, or on error left untouched.
 *   W       device n x k fp32 (or fp16 for the _fp16 variant), row-major
 *   H       device k x k fp32 (lower triangle read)
 *   codes   device out: k x n bytes;  scales  device out: ceil(k/g) x n fp16
 * block_size above 128 is treated as 128 (the block's weights live in shared
 * memory); on the CPU the block size does not change the result, so this
 * changes nothing but speed. The double-precision Cholesky factorisation and
 * triangular inverse are cuSOLVER's, the lazy updates fp32 cuBLAS products.
 */
MARLIN_API marlin_status marlin_gptq_gpu_quantize(marlin_gptq_gpu* context, const float* W, int n,
                                                  int k, const float* H, int group_size,
                                                  const marlin_gptq_options* options,
                                                  uint8_t* codes, uint16_t* scales,
                                                  cudaStream_t stream);
MARLIN_API marlin_status marlin_gptq_gpu_quantize_fp16(marlin_gptq_gpu* context, const void* W,
                                                       int n, int k, const float* H,
                                                       int group_size,
                                                       const marlin_gptq_options* options,
                                                       uint8_t* codes, uint16_t* scales,
                                                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* MARLIN_GPTQ_H */
