/*
 * gptq_internal.h: the pieces of GPTQ that the CPU (gptq.c) and the GPU
 * (gptq_cuda.cu) paths share, so that both make the same decisions: option
 * defaults, the damping schedule, the shrink grid, the column order, and where
 * a block of lazy updates ends. Not part of the public API.
 */
#ifndef MARLIN_GPTQ_INTERNAL_H
#define MARLIN_GPTQ_INTERNAL_H

#include "marlin_gptq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most shrink factors a grid may have (marlin_gptq_check_options). */
#define GPTQ_MAX_GRID_POINTS 256
/* Damping tries before MARLIN_STATUS_NOT_POSITIVE_DEFINITE. */
#define GPTQ_DAMPING_ATTEMPTS 3

/* options or the defaults, checked; MARLIN_STATUS_INVALID_VALUE when bad. */
marlin_status gptq_resolve_options(const marlin_gptq_options* options, marlin_gptq_options* resolved);

/* Damping fraction of try `attempt` (0-based): the option, then x10, x100 (at least 1e-2, 1e-1). */
double gptq_damping_fraction(const marlin_gptq_options* options, int attempt);

/* The grid of shrink factors, 1.0 first (clip_grid_points floats). Computed
 * once on the host so both paths use bitwise the same factors. */
void gptq_shrink_factors(const marlin_gptq_options* options, float* factors);

/*
 * Column order: order[i] = the original column visited i-th. Identity without
 * act_order; with it, decreasing H_ii (dead columns counting as H_ii = 1),
 * ties by index. diagonal: the k values H_ii. MARLIN_STATUS_OUT_OF_MEMORY
 * if the sort's scratch cannot be allocated.
 */
marlin_status gptq_column_order(const float* diagonal, int k, int act_order, int* order);

/* End (exclusive) of the block of lazy updates starting at column `begin`:
 * at most block_size columns, cut so that a group starting inside the block
 * (dynamic groups only) lies wholly inside it. */
int gptq_block_end(int begin, int k, int block_size, int group_size, int static_groups);

#ifdef __cplusplus
}
#endif

#endif /* MARLIN_GPTQ_INTERNAL_H */
