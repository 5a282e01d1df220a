/*
 * test_plan.c: marlin_matmul's launch planning, on the CPU, for described
 * devices (an H100 and an sm_86 part), through src/plan_internal.h.
 *
 * For the layers of the benchmark's shape sets and random shapes, at
 * m = 1..256 and some larger m: every k step of every slice is covered by
 * exactly the launched blocks, no block is empty, the striped grid fits the
 * device at once (its blocks wait on one another's slots only through the
 * last arriver, but the even split is planned for resident grids); where
 * the even split (bench/NOTES.md step 57) changed the plain striping, it
 * did so only from 9 rows, with fewer runs on the most-cut slice and at
 * least 85% of the blocks, and the runs it planned are
 * ceil(k_iters / (block_slots / slices)). Plain striping is worked out here
 * from its definition (equal runs over the block slots, at least 4 steps).
 */
#include <stdio.h>

#include "../src/plan_internal.h"
#include "test_util.h"

#define MIN_ITERS 4 /* kMinItersPerBlock in src/matmul.cu */

/* The most runs of `iters` steps that one slice of k_iters steps meets, counted step by step. */
static int most_runs_brute_force(int slices, int k_iters, int iters) {
    int most = 0;
    for (int s = 0; s < slices; s++) {
        int runs = 0, previous = -1;
        for (int i = s * k_iters; i < (s + 1) * k_iters; i++)
            if (i / iters != previous) runs++, previous = i / iters;
        if (runs > most) most = runs;
    }
    return most;
}

static int even_split_cases; /* launches where the even split was taken */
static int launches_checked, launch_failures;

/* A property of one launch: only failures are printed (some 30 000 launches pass). */
#define EXPECT(ok, ...) \
    do { \
        if (!(ok)) test_check(0, __VA_ARGS__), launch_failures++; \
    } while (0)

static void check_launch(const char* device, int sm_count, int m, int n, int k, int chunks,
                         const marlin_launch_summary* l) {
    if (l->rows == 0) return;
    launches_checked++;
    const int total = l->slices * l->k_iters, slots = sm_count * l->blocks_per_sm;
    int ok = l->grid >= 1 && l->iters_per_block >= 1 && (long long)l->grid * l->iters_per_block >= total &&
             (long long)(l->grid - 1) * l->iters_per_block < total && l->slices * l->block_n >= n &&
             l->k_iters * l->block_k >= k;
    EXPECT(ok, "%s m=%d k=%d n=%d: grid %d x %d steps covers %d slices x %d steps exactly", device, m, k, n,
               l->grid, l->iters_per_block, l->slices, l->k_iters);
    if (l->cluster_split > 1) return; /* cluster mode: one cluster per slice, not striped */
    EXPECT(l->grid * chunks <= slots, "%s m=%d k=%d n=%d: %d chunks x %d blocks fit %d slots", device, m, k, n,
               chunks, l->grid, slots);
    int plain = (total + slots - 1) / slots;
    if (plain < MIN_ITERS) plain = total < MIN_ITERS ? total : MIN_ITERS;
    if (l->iters_per_block == plain) return;
    even_split_cases++;
    const int parts = slots / l->slices;
    int even = parts > 0 ? (l->k_iters + parts - 1) / parts : -1;
    if (even >= 0 && even < MIN_ITERS) even = total < MIN_ITERS ? total : MIN_ITERS;
    const int plain_grid = (total + plain - 1) / plain;
    ok = l->rows > 8 && l->slices <= slots && l->iters_per_block == even &&
         most_runs_brute_force(l->slices, l->k_iters, even) < most_runs_brute_force(l->slices, l->k_iters, plain) &&
         100 * l->grid >= 85 * plain_grid;
    EXPECT(ok, "%s m=%d k=%d n=%d (%d rows a chunk): even split %d steps x %d blocks instead of %d x %d", device,
               m, k, n, l->rows, l->iters_per_block, l->grid, plain, plain_grid);
}

static void check_call(const char* device, const marlin_device_facts* facts, int m, int n, int k) {
    marlin_plan_summary plan;
    marlin_status status = marlin_plan_for_device(m, n, k, facts, &plan);
    EXPECT(status == MARLIN_STATUS_SUCCESS, "%s m=%d k=%d n=%d: planned (%s)", device, m, k, n,
           marlin_status_string(status));
    if (status != MARLIN_STATUS_SUCCESS) return;
    check_launch(device, facts->sm_count, m, n, k, plan.chunks, &plan.full);
    check_launch(device, facts->sm_count, m, n, k, plan.chunks, &plan.rest);
}

int main(void) {
    test_seed("test_plan");
    const marlin_device_facts h100 = {132, 232448, 233472, 9}, sm86 = {84, 101376, 102400, 8};
    static const int layers[][2] = {/* k x n of the benchmark's sets */
                                    {4096, 12288}, {4096, 4096},  {4096, 22016}, {11008, 4096}, {5120, 15360},
                                    {5120, 5120},  {5120, 27648}, {13824, 5120}, {8192, 10240}, {8192, 8192},
                                    {8192, 57344}, {28672, 8192}, {4096, 6144},  {4096, 28672}, {14336, 4096},
                                    {576, 960},    {576, 576},    {576, 3072},   {1536, 576},   {33792, 16896}};
    const int layer_count = sizeof layers / sizeof layers[0];
    static const int big_m[] = {300, 1000, 4096};
    for (int d = 0; d < 2; d++) {
        const char* name = d == 0 ? "H100" : "sm_86";
        const marlin_device_facts* facts = d == 0 ? &h100 : &sm86;
        for (int i = 0; i < layer_count; i++) {
            for (int m = 1; m <= 256; m++) check_call(name, facts, m, layers[i][1], layers[i][0]);
            for (int j = 0; j < 3; j++) check_call(name, facts, big_m[j], layers[i][1], layers[i][0]);
        }
        for (int r = 0; r < 200; r++) /* random shapes, multiples of 64 */
            check_call(name, facts, 1 + test_rand_int(256), 64 * (1 + test_rand_int(512)), 64 * (1 + test_rand_int(512)));
    }
    test_check(launch_failures == 0, "%d launches (%d layers x 259 m and 200 random calls, 2 devices): %d failed",
               launches_checked, layer_count, launch_failures);
    /* The rule is exercised: on the H100 llama2-13b's qkv at m = 64 takes it (20 steps x 120 blocks, bench/NOTES.md step 57). */
    marlin_plan_summary plan;
    const int got = marlin_plan_for_device(64, 15360, 5120, &h100, &plan) == MARLIN_STATUS_SUCCESS;
    test_check(got && plan.full.iters_per_block == 20 && plan.full.grid == 120,
               "H100 llama2-13b qkv m=64: even split, 20 steps x 120 blocks (got %d x %d)", got ? plan.full.iters_per_block : 0,
               got ? plan.full.grid : 0);
    test_check(even_split_cases > 0, "the even split was taken in %d launches", even_split_cases);
    marlin_status refused = marlin_plan_for_device(64, 15360, 5120, NULL, &plan);
    test_check(refused == MARLIN_STATUS_NULL_POINTER, "NULL facts refused: %s", marlin_status_string(refused));
    return test_finish();
}
