/*
 * plan_internal.h: the launch planning of marlin_matmul for a described
 * device, without one (tests/test_plan.c), and the device facts it reads
 * (src/matmul.cu queries them once per device). Not part of the public API.
 */
#ifndef MARLIN_PLAN_INTERNAL_H
#define MARLIN_PLAN_INTERNAL_H

#include <stddef.h>

#include "marlin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int sm_count;
    int smem_per_block_optin; /* bytes a block may have after cudaFuncSetAttribute */
    int smem_per_sm;          /* bytes all resident blocks of an SM share */
    int major;                /* compute capability */
} marlin_device_facts;

typedef struct {
    int rows;          /* rows of A per row chunk (0: no such launch) */
    int grid;          /* striped blocks per row chunk */
    int iters_per_block;
    int slices;        /* column slices of block_n */
    int k_iters;       /* k steps of block_k per slice */
    int cluster_split; /* > 1: cluster mode */
    int blocks_per_sm;
    int block_n, block_k;
} marlin_launch_summary;

typedef struct {
    int chunk_rows, chunks; /* row chunks of a launch, side by side */
    int launch_rows;        /* rows of a full launch */
    marlin_launch_summary full, rest; /* the full launches and the last, shorter one */
    size_t workspace_bytes;
} marlin_plan_summary;

/* The plan of an m x n x k call on a device with these facts. */
marlin_status marlin_plan_for_device(int m, int n, int k, const marlin_device_facts* facts, marlin_plan_summary* out);

#ifdef __cplusplus
}
#endif
#endif
