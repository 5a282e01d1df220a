/*
 * marlin_kernel.cuh: the fp16 x int4 Marlin GEMM kernel.
 *
 * Design, for one block row of at most 64 rows of A, or 128 with warpgroup
 * MMA (the host splits larger m into launches, and for tiny layers runs
 * several 16-row block rows side by side as gridDim.y, each with its own
 * workspace slots and counters):
 *
 *  - Tiles. A block computes a BM x BN tile of C (BM = 16*M_BLOCKS rows, BN =
 *    64*N_TILES columns), walking k in steps of BK = 16*K_TILES. One step of
 *    one column slice is an "iteration".
 *  - Striped partition. All slices' iterations are laid end to end, slice by
 *    slice ("column-major"), and cut into gridDim.x equal runs, one per block,
 *    so every SM gets the same amount of work whatever the tile count. A run
 *    may start or end inside a slice; such partial slices are summed through
 *    the workspace (below).
 *  - Cluster mode (sm_90, chosen by the host for some shapes): clusters of
 *    cluster_split blocks, one per slice, block r taking the r-th share of
 *    its k steps; the blocks' partial tiles are summed through distributed
 *    shared memory, each block its share of the tile, in rank order.
 *  - Warps. 8 warps; warp w owns n-tile w % N_TILES (64 columns) and the
 *    (w / N_TILES)-th of K_GROUPS = 8 / N_TILES equal runs of k-tiles of a
 *    step. So several warps share one output tile, each summing a share of
 *    k; they are reduced through shared memory at the end of a slice, in
 *    fixed order. Warpgroup MMA tiles of 128 rows or 128 columns instead
 *    give each warp its own columns for all k (K_GROUPS = 1, see k_groups).
 *  - Pipeline. STAGES shared-memory buffers filled STAGES-1 iterations
 *    ahead of the compute (STAGES-2 with warpgroup MMA, whose instructions
 *    still read the previous stage); one barrier per iteration. On sm_90 the
 *    copy engine fills them: thread 0 issues a stage as four or five tensor
 *    copies (a K_TILES x N_TILES box of weight tiles, a box of scale rows,
 *    the A tile in 64-column halves) that complete on the stage's mbarrier,
 *    so copying costs the other threads nothing and the engine zero-fills
 *    whatever lies past m, k or n. Before sm_90 every thread issues cp.async
 *    16-byte copies (skipping L1) into the same layout.
 *  - Inner loop. The B words a lane loads already hold its m16n8k16 operand
 *    fragments (layout.h), so dequantization is a few lop3/hsub2/hfma2 in
 *    registers, scaled by one hmul2, feeding the tensor cores directly: up
 *    to 16 rows mma.sync with the weights as the M operand (C^T = W^T A^T,
 *    one instruction per word for 16 columns x 8 rows; A from shared memory
 *    by ldmatrix; variants for 1..8 rows hold accumulators for 8 rows only),
 *    from 17 rows on sm_90a warpgroup MMA, also with the weights as the
 *    register operand and A read by the instruction from the swizzled tile,
 *    and elsewhere mma.sync with A as the M operand. The
 *    loop over a slice's k steps holds nothing but copies and MMAs; the
 *    epilogue runs after it, so warpgroup MMAs stay in flight from one step
 *    to the next.
 *  - Launch overlap. On sm_90 a launch may begin while the previous kernel on
 *    the stream finishes (programmatic dependent launch): the first stages of
 *    weights are fetched before griddepcontrol.wait, A and C only after.
 *  - Global reduction. Each contributor to a partial slice writes its fp32
 *    tile to its own workspace slot, then bumps the slice's counter (one
 *    acquire-release atomic per block); the last to arrive sums all slots in
 *    block order (so the result never depends on timing), writes C, and
 *    resets the counter to 0 for the next call. A block that finds every
 *    other contributor already arrived (it reads the counter at the start of
 *    its epilogue) knows it is the last without the atomic's round trip.
 *
 * Extension points: the weight format is a template parameter (dequantize
 * a 32-bit word into four half2 fragment registers); bf16 activations, zero
 * points and 8-bit weights become further formats.
 */
#pragma once

#include <cuda.h> /* CUtensorMap (a plain struct: no driver library needed) */
#include <cuda_fp16.h>
#include <stdint.h>
#ifdef MARLIN_TRACE
#include "trace.h"
#endif

/* Warpgroup MMA: k-tiles whose instructions may still be in flight when the
 * next k-tile's are issued, for tiles of one weight word per lane and k-tile
 * (narrow: 128 columns) and of two (wide: 256). Build-time knobs for tuning
 * (bench/NOTES.md step 55); 1 and 1 give 51e9333's machine code. */
#ifndef MARLIN_WG_NARROW_PENDING
#define MARLIN_WG_NARROW_PENDING 1
#endif
#ifndef MARLIN_WG_WIDE_PENDING
#define MARLIN_WG_WIDE_PENDING 1
#endif

namespace marlin {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

/* Everything a launch needs; passed by value (the tensor maps must live in
 * kernel parameter space: the kernel takes it as __grid_constant__). */
struct KernelArgs {
    /* sm_90: copy-engine descriptors of this launch's rows of A (k x m fp16,
     * boxes of 64 x BM, 128-byte swizzle), of B (k-tile rows x n-tiles x 128
     * words, boxes of K_TILES x N_TILES tiles) and of the scales (n x rows
     * fp16, boxes of BN x the scale rows of a step). Unused before sm_90. */
    CUtensorMap a_map, b_map, s_map;
    const int4* A;              /* m x k fp16, row-major (this launch's first row) */
    const int4* B;              /* packed codes, k*n/8 words */
    const int4* scales;         /* packed scales, ceil(k/g) x n fp16 */
    half2* C;                   /* m x n fp16, row-major (this launch's first row) */
    float* partials;            /* workspace: 2 slots per block of BM x BN fp32 (per row chunk) */
    int* counters;              /* workspace: one arrival counter per column slice (per row chunk) */
    int m;                      /* rows of this launch: 1..BM per row chunk (gridDim.y chunks) */
    int n, k;
    int group_shift;            /* scale row of k-index i: i >> group_shift (30 for one group) */
    int iters_per_block;        /* length of each block's run of iterations */
    int cluster_split;          /* > 1: cluster mode (see the kernel); else the striped partition */
    /* The RMSNorm epilogues (up to 16 rows, one row chunk, striped; unused
     * by the others): */
    float* residual;            /* kResidualEpilogue: x, m x n fp32; x += A B */
    const float* norm_weight;   /* kResidualEpilogue: n fp32; C = fp16(x . norm_weight) */
    float* sumsq_out;           /* kResidualEpilogue: m x n/64, row r's sum of x^2 over columns 64 g .. 64 g + 63 */
    const float* sumsq_in;      /* row-scaled: m x k/64 such sums; C's row r times 1/sqrt(its sum / k + rms_eps) */
    float rms_eps;
#ifdef MARLIN_TRACE
    int trace_launch; /* record slot of this launch, < MARLIN_TRACE_LAUNCHES, or -1: not traced */
#endif
};

#ifdef MARLIN_TRACE
/* Tracing builds (trace.h): per launch and block, the SM and the stamps. */
__device__ unsigned long long trace_records[MARLIN_TRACE_LAUNCHES][MARLIN_TRACE_BLOCKS][MARLIN_TRACE_FIELDS];
#endif
#ifdef MARLIN_TRACE
constexpr bool kTracing = true;
constexpr int kTraceStart = MARLIN_TRACE_START, kTraceWaited = MARLIN_TRACE_WAITED,
              kTraceFirstStage = MARLIN_TRACE_FIRST_STAGE, kTraceLastFinish = MARLIN_TRACE_LAST_FINISH,
              kTraceReduced = MARLIN_TRACE_REDUCED, kTraceArrived = MARLIN_TRACE_ARRIVED, kTraceEnd = MARLIN_TRACE_END;
#else
constexpr bool kTracing = false;
constexpr int kTraceStart = 0, kTraceWaited = 0, kTraceFirstStage = 0, kTraceLastFinish = 0, kTraceReduced = 0,
              kTraceArrived = 0, kTraceEnd = 0;
#endif
/* Thread 0 of a block of row chunk 0 stamps the global timer; a no-op
 * unless built with MARLIN_TRACE. */
__device__ __forceinline__ void trace_stamp(const KernelArgs& args, int field) {
#ifdef MARLIN_TRACE
    if (args.trace_launch < 0 || threadIdx.x != 0 || blockIdx.y != 0 || blockIdx.x >= MARLIN_TRACE_BLOCKS) return;
    unsigned long long now;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(now));
    unsigned long long* record = trace_records[args.trace_launch][blockIdx.x];
    record[field] = now;
    if (field == MARLIN_TRACE_START) {
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;\n" : "=r"(sm));
        record[MARLIN_TRACE_SM] = sm;
    }
#else
    (void)args, (void)field;
#endif
}

/* ------------------------------------------------------------ PTX helpers -- */

__device__ __forceinline__ uint32_t shared_address(const void* ptr) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

/* 16-byte asynchronous copy global -> shared that skips L1 (.cg). */
__device__ __forceinline__ void copy_async_16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)), "l"(src));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int PENDING>
__device__ __forceinline__ void copy_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

/* Programmatic dependent launch (sm_90): a launch may start while the
 * previous kernel on the stream is finishing; wait_for_previous_grid blocks
 * until that kernel's results are visible, allow_next_grid lets the next one
 * start early. Both are no-ops before sm_90. */
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* mbarrier and bulk-copy (copy engine) helpers, sm_90 only. A stage's
 * mbarrier completes a phase once its one expected arrival has happened and
 * every byte announced with expect_tx has landed. */
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, int count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(count));
#endif
}
/* Makes initialized mbarriers visible to the copy engine. */
__device__ __forceinline__ void mbarrier_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/* The one arrival of a phase, announcing the bytes that phase waits for. */
__device__ __forceinline__ void mbarrier_arrive_expect_bytes(uint64_t* barrier, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)),
                 "r"(bytes)
                 : "memory");
#endif
}
/* Spins until the phase with the given parity has completed. */
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(shared_address(barrier)), "r"(parity)
            : "memory");
    } while (!done);
#endif
}
/* Copy-engine copies of one box of a tensor (coordinates in elements,
 * innermost first) into shared memory, completing on `barrier`. Parts of the
 * box outside the tensor arrive as zeros; the bytes counted are the whole box. */
__device__ __forceinline__ void tensor_copy_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* barrier) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(shared_address(dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(shared_address(barrier))
        : "memory");
#endif
}
__device__ __forceinline__ void tensor_copy_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                               uint64_t* barrier) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
        "%4}], [%5];\n" ::"r"(shared_address(dst)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(shared_address(barrier))
        : "memory");
#endif
}

/* counter += value at device scope, returning the old value, with acquire
 * and release semantics: after a block barrier, the release publishes every
 * write the block made before the barrier (the barrier orders them before
 * this thread's atomic), and the acquire, followed by a barrier, shows the
 * block every write published by earlier arrivals. Shorter on the critical
 * path than a sequentially consistent fence (__threadfence) in every thread. */
__device__ __forceinline__ int atomic_add_acq_rel(int* counter, int value) {
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(counter), "r"(value) : "memory");
    return old;
}

/* *counter at device scope, with acquire semantics (see atomic_add_acq_rel). */
__device__ __forceinline__ int load_acquire(const int* counter) {
    int value;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(value) : "l"(counter) : "memory");
    return value;
}

/* Thread-block clusters (sm_90): every thread of every block of the cluster
 * arrives, then waits for all the others; shared-memory writes before it are
 * visible to the cluster's blocks after it. */
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}
/* 16 bytes at the same shared-memory offset as `local`, in block `rank` of the cluster. */
__device__ __forceinline__ float4 load_cluster_float4(const void* local, int rank) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(shared_address(local)), "r"(rank));
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(remote)
                 : "memory");
#endif
    return v;
}

/* Four 8x8 fp16 matrices from shared memory: exactly an m16k16 A fragment. */
__device__ __forceinline__ void load_matrix_x4(uint32_t (&frag)[4], const void* smem_row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(frag[0]), "=r"(frag[1]), "=r"(frag[2]), "=r"(frag[3])
                 : "r"(shared_address(smem_row)));
}

/* acc += a (16x16, row) * b (16x8, col), fp16 inputs, fp32 accumulators. */
__device__ __forceinline__ void mma_16816(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Warpgroup MMA (sm_90a): D[64 x N] = A[64 x 16] . B[16 x N] + (D, or 0
 * when `accumulate` is 0: no instruction but the MMA writes D), A from
 * registers (each warp 16 rows, in the m16n8k16 A-fragment layout), B from
 * shared memory through a matrix descriptor, fp32 accumulators (each warp 16
 * rows, the m16n8 C-fragment layout repeated along N). Asynchronous: fence
 * before, commit after, wait before touching A or D again. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MARLIN_WGMMA 1
#endif
__device__ __forceinline__ void warpgroup_fence() {
#ifdef MARLIN_WGMMA
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void warpgroup_commit() {
#ifdef MARLIN_WGMMA
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int PENDING>
__device__ __forceinline__ void warpgroup_wait() {
#ifdef MARLIN_WGMMA
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#endif
}
/* Descriptor of a K-major operand tile in shared memory laid out by the copy
 * engine's 128-byte swizzle: rows of 128 bytes (64 fp16 of k), 8-row groups
 * 1024 bytes apart, the group base 1024-byte aligned; `address` may point
 * 32 * j bytes into a row to start at k = 16 j. */
__device__ __forceinline__ uint64_t swizzled_tile_descriptor(uint32_t address) {
    return (uint64_t)((address & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 |
           (uint64_t)1 << 62;
}
template <int N>
__device__ __forceinline__ void wgmma_16(float* d, const uint32_t (&a)[4], uint64_t b_descriptor,
                                         uint32_t accumulate);
template <>
__device__ __forceinline__ void wgmma_16<32>(float* d, const uint32_t (&a)[4], uint64_t b_descriptor,
                                            uint32_t accumulate) {
#ifdef MARLIN_WGMMA
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor), "r"(accumulate));
#endif
}
template <>
__device__ __forceinline__ void wgmma_16<64>(float* d, const uint32_t (&a)[4], uint64_t b_descriptor,
                                            uint32_t accumulate) {
#ifdef MARLIN_WGMMA
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,"
        "%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor), "r"(accumulate));
#endif
}

template <>
__device__ __forceinline__ void wgmma_16<128>(float* d, const uint32_t (&a)[4], uint64_t b_descriptor,
                                            uint32_t accumulate) {
#ifdef MARLIN_WGMMA
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,"
        "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"
        "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor), "r"(accumulate));
#endif
}

/* (a & mask) | bits in one instruction: 0xEA is the truth table of (A & B) | C. */
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t bits) {
    uint32_t out;
    asm volatile("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(out) : "r"(a), "r"(mask), "r"(bits));
    return out;
}

__device__ __forceinline__ half2 as_half2(uint32_t bits) {
    return *reinterpret_cast<half2*>(&bits);
}
__device__ __forceinline__ uint32_t as_bits(half2 value) {
    return *reinterpret_cast<uint32_t*>(&value);
}

/* A lane's 32-bit words of one 16-byte chunk of shared memory: all four, the
 * two from word `first` (0 or 2), or word `first`. */
__device__ __forceinline__ void load_lane_words(uint32_t (&out)[4], const int4* chunk, int /* first */) {
    const int4 v = *chunk;
    out[0] = (uint32_t)v.x, out[1] = (uint32_t)v.y, out[2] = (uint32_t)v.z, out[3] = (uint32_t)v.w;
}
__device__ __forceinline__ void load_lane_words(uint32_t (&out)[2], const int4* chunk, int first) {
    const int2 v = reinterpret_cast<const int2*>(chunk)[first / 2];
    out[0] = (uint32_t)v.x, out[1] = (uint32_t)v.y;
}
__device__ __forceinline__ void load_lane_words(uint32_t (&out)[1], const int4* chunk, int first) {
    out[0] = reinterpret_cast<const uint32_t*>(chunk)[first];
}

/* --------------------------------------------------------- weight formats -- */

/* 4-bit codes, zero point 8: q -> (q - 8) as fp16, for the 8 codes of one word.
 * OR-ing a nibble into the mantissa of 1024.0 (0x6400) gives 1024 + q exactly;
 * a nibble 4 bits higher gives 1024 + 16q. Subtracting 1032, or scaling by
 * 1/16 and adding -72, leaves q - 8 with no conversion instructions. */
struct Int4Symmetric {
    __device__ __forceinline__ static void dequantize(uint32_t word, uint32_t (&out)[4]) {
        constexpr uint32_t kLowNibbles = 0x000F000F, kHighNibbles = 0x00F000F0;
        constexpr uint32_t kExponent = 0x64006400;  /* 1024.0 in both halves */
        constexpr uint32_t kMinus1032 = 0x64086408; /* 1032.0, subtracted */
        constexpr uint32_t kOneSixteenth = 0x2C002C00, kMinus72 = 0xD480D480;
        uint32_t shifted = word >> 8;
        out[0] = as_bits(__hsub2(as_half2(and_or(word, kLowNibbles, kExponent)), as_half2(kMinus1032)));
        out[1] = as_bits(__hfma2(as_half2(and_or(word, kHighNibbles, kExponent)),
                                 as_half2(kOneSixteenth), as_half2(kMinus72)));
        out[2] = as_bits(__hsub2(as_half2(and_or(shifted, kLowNibbles, kExponent)), as_half2(kMinus1032)));
        out[3] = as_bits(__hfma2(as_half2(and_or(shifted, kHighNibbles, kExponent)),
                                 as_half2(kOneSixteenth), as_half2(kMinus72)));
    }
};

/* One lane word dequantized and scaled for the lane's two columns (pair of
 * scales, low then high half): out[0..1] with the low scale, out[2..3] with
 * the high one. */
template <typename Format>
__device__ __forceinline__ void dequantize_scaled(uint32_t word, uint32_t scale_pair_bits, uint32_t (&out)[4]) {
    uint32_t q[4];
    Format::dequantize(word, q);
    const half2 scale_pair = as_half2(scale_pair_bits);
    const half2 scale_lo = __low2half2(scale_pair), scale_hi = __high2half2(scale_pair);
    out[0] = as_bits(__hmul2(as_half2(q[0]), scale_lo));
    out[1] = as_bits(__hmul2(as_half2(q[1]), scale_lo));
    out[2] = as_bits(__hmul2(as_half2(q[2]), scale_hi));
    out[3] = as_bits(__hmul2(as_half2(q[3]), scale_hi));
}

/* A dequantized lane word (dequantize_scaled: q[0..1] columns 16 s + g,
 * q[2..3] columns 16 s + 8 + g) as the m16k16 A fragment of the transposed
 * product C^T = W^T A^T, whose M rows g and g + 8 are those two columns. */
__device__ __forceinline__ void transposed_fragment(const uint32_t (&q)[4], uint32_t (&w)[4]) {
    w[0] = q[0], w[1] = q[2], w[2] = q[1], w[3] = q[3];
}

/* ------------------------------------------------------------------ kernel -- */

/* The SwiGLU epilogue (marlin_matmul_swiglu): in every 16-column group of B,
 * columns 0-7 are gate features and columns 8-15 the up features of the same
 * index, so whichever thread holds a gate sum also holds its up sum (every
 * accumulator layout keeps columns c and c + 8 in one lane). Column c
 * (c % 16 < 8) of the product becomes output column (c + c % 16) / 2. */
__device__ __forceinline__ float silu_times(float gate, float up) { return gate / (1.0f + __expf(-gate)) * up; }
__device__ __forceinline__ int swiglu_column(int gate_column) { return (gate_column + gate_column % 16) / 2; }

/* A compile-time count of 8-row halves, to pick a code path by a runtime test. */
template <int N>
struct RowHalves {
    static constexpr int kValue = N;
};

/* Scale rows one whole k step of block_k spans (the rows of the copy
 * engine's scale box): the host's descriptor and the kernel's byte count
 * must agree. */
__host__ __device__ constexpr int step_scale_rows(int block_k, int group_shift) {
    return ((block_k - 1) >> group_shift) + 1;
}

/* Warps that share one n-tile, each summing its share of a step's k-tiles:
 * kWarps / N_TILES; but warpgroup MMA tiles of 128 rows (whose accumulators
 * fill a warpgroup's registers for 128 columns) or of 128 columns split the
 * columns between the two warpgroups instead, and each warp takes every
 * k-tile. */
__host__ __device__ constexpr int k_groups(int m_blocks, int n_tiles, bool warpgroup_mma) {
    return warpgroup_mma && (m_blocks == 8 || n_tiles == 2) ? 1 : kWarps / n_tiles;
}

template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, int K_GROUPS = kWarps / N_TILES>
struct TileConfig {
    static constexpr int kBM = 16 * M_BLOCKS;
    static constexpr int kBN = 64 * N_TILES;
    static constexpr int kBK = 16 * K_TILES;
    static constexpr int kKGroups = K_GROUPS;               /* warps sharing one n-tile */
    static constexpr int kKTilesPerWarp = K_TILES / kKGroups;
    static constexpr int kScaleRows = kBK / 32 > 0 ? kBK / 32 : 1; /* most groups one step spans */
    /* Shared memory, in int4 (16-byte) units. A stage holds A as BK/64
     * column halves of BM rows x 128 bytes, 16-byte chunk c of row r stored
     * at chunk c ^ (r % 8) (the copy engine's 128-byte swizzle, so ldmatrix
     * is free of bank conflicts), then the weights as K_TILES x N_TILES
     * tiles of 512 bytes, then the scale rows; stages are 1 KB aligned (the
     * swizzle needs it). */
    static constexpr int kAHalves = kBK / 64;
    static constexpr int kAHalf = kBM * 8;
    static constexpr int kAStage = kAHalves * kAHalf;
    static constexpr int kBStage = K_TILES * N_TILES * 32;
    static constexpr int kSStage = kScaleRows * kBN / 8;
    static constexpr int kStage = (kAStage + kBStage + kSStage + 63) / 64 * 64;
    static constexpr int kReduce = (kKGroups - 1) * N_TILES * 8 * 32; /* float4 = int4 */
    static constexpr int kAlignSlack = 1024; /* dynamic shared memory is only 16-byte aligned */
    static constexpr int kSmemBytes = 16 * (STAGES * kStage + kReduce) + kAlignSlack;
    /* One workspace slot: a BM x BN fp32 tile. */
    static constexpr int kSlotFloats = kBM * kBN;

    static_assert(kWarps % N_TILES == 0, "N_TILES must divide the warp count");
    static_assert(K_GROUPS == 1 || K_GROUPS == kWarps / N_TILES, "k-groups: all warps of an n-tile, or one");
    static_assert(K_TILES % kKGroups == 0, "every warp needs the same number of k-tiles");
    static_assert(K_TILES % 4 == 0, "A is copied in 64-column halves");
    static_assert(STAGES >= 2, "the pipeline needs at least two stages");
};

/* What a launch stores (the kernel's EPILOGUE; a template parameter, so
 * each kernel compiles only its own):
 *   kPlainEpilogue            C = A B (marlin_matmul)
 *   kSwigluEpilogue           C (m x n/2) = silu(gate) * up of each column
 *                             pair of A B (marlin_matmul_swiglu, see silu_times)
 *   kRowScaledEpilogue        C = (A B) / rms(row), rms from sumsq_in: with
 *                             A = x . w, RMSNorm(x) w B (marlin_matmul_rms_scaled)
 *   kRowScaledSwigluEpilogue  both (marlin_matmul_rms_scaled_swiglu)
 *   kResidualEpilogue         x += A B, C = fp16(x . norm_weight) and the sums
 *                             of x^2 per row and 64 columns in sumsq_out, which
 *                             the next row-scaled multiply reads
 *                             (marlin_matmul_residual)
 * The last three (the RMSNorm of a transformer block folded into its
 * multiplies, no norm kernels between them) exist for up to 16 rows. */
enum Epilogue {
    kPlainEpilogue,
    kSwigluEpilogue,
    kRowScaledEpilogue,
    kRowScaledSwigluEpilogue,
    kResidualEpilogue,
    kEpilogueCount
};
/* What each epilogue stores, for the kernel and the host alike: the SwiGLU
 * (C m x n/2), rows scaled by 1/rms, and any of the RMSNorm three. */
__host__ __device__ constexpr bool swiglu_epilogue(int e) {
    return e == kSwigluEpilogue || e == kRowScaledSwigluEpilogue;
}
__host__ __device__ constexpr bool row_scaled_epilogue(int e) {
    return e == kRowScaledEpilogue || e == kRowScaledSwigluEpilogue;
}
__host__ __device__ constexpr bool rms_epilogue(int e) { return e >= kRowScaledEpilogue; }

/* Whether a tile shape has the RMSNorm epilogues: up to 16 rows with
 * mma.sync (transposed accumulators), and a reduce buffer that can hold the
 * tile (kResidualEpilogue stages a whole slice's tile there). */
template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, bool WARPGROUP_MMA>
__host__ __device__ constexpr bool has_rms_epilogues() {
    using Cfg = TileConfig<M_BLOCKS, N_TILES, K_TILES, STAGES, k_groups(M_BLOCKS, N_TILES, WARPGROUP_MMA)>;
    return M_BLOCKS == 1 && !WARPGROUP_MMA && Cfg::kKGroups > 1 && Cfg::kBM * Cfg::kBN * 4 <= 16 * Cfg::kReduce;
}

/* BLOCKS_PER_SM: blocks meant to share one SM (caps registers to fit); two
 * blocks overlap one block's barrier and fragment-load latency with the
 * other's work. EPILOGUE: see Epilogue.
 *
 * The loop is written for few instructions per weight byte: at m <= 16 an
 * SM must consume ~11 bytes of weights per cycle, so every instruction
 * outside dequantization and mma counts (hence the copy engine on sm_90,
 * offsets worked out once per run, and all fragments of a step read before
 * the first is used). */
template <typename Format, int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, int BLOCKS_PER_SM,
          bool WARPGROUP_MMA = false, bool EIGHT_ROWS = false, int EPILOGUE = kPlainEpilogue>
__global__ void __launch_bounds__(kThreads, BLOCKS_PER_SM) marlin_gemm_kernel(const __grid_constant__ KernelArgs args) {
    using Cfg = TileConfig<M_BLOCKS, N_TILES, K_TILES, STAGES, k_groups(M_BLOCKS, N_TILES, WARPGROUP_MMA)>;
    constexpr bool kSwiglu = swiglu_epilogue(EPILOGUE);
    constexpr bool kRowScaled = row_scaled_epilogue(EPILOGUE);
    constexpr bool kResidual = EPILOGUE == kResidualEpilogue;
    static_assert(!rms_epilogue(EPILOGUE) || has_rms_epilogues<M_BLOCKS, N_TILES, K_TILES, STAGES, WARPGROUP_MMA>(),
                  "RMSNorm epilogues: up to 16 rows (transposed mma.sync), a reduce buffer that holds the tile");
    static_assert(!WARPGROUP_MMA || ((N_TILES == 4 || N_TILES == 2) && (M_BLOCKS == 2 || M_BLOCKS == 4 ||
                                     M_BLOCKS == 8) && Cfg::kKTilesPerWarp % 2 == 0 && STAGES >= 3),
                  "warpgroup MMA: 2 or 4 n-tiles per block, N = 32, 64 or 128 rows, an even number of k-tiles per "
                  "warpgroup, a stage of slack");
    /* Warpgroup MMA with split columns (see k_groups): the two warpgroups
     * take half the tile's columns each, warp w columns 64 N_TILES / 8 * w
     * and on (half an n-tile, two instructions per k-tile, with 4 n-tiles; a
     * quarter, one instruction, with 2); otherwise warp w holds n-tile w % 4
     * (four instructions per k-tile) and the warpgroups split k. */
    constexpr bool kSplitColumns = WARPGROUP_MMA && Cfg::kKGroups == 1;
    /* Up to 16 rows with mma.sync, the weights are the M operand too (C^T =
     * W^T A^T, as with warpgroup MMA): one instruction per weight word covers
     * 16 columns x 8 rows, so rows 1..8 take half the instructions of the
     * 16-row A operand (see compute_iteration). kTransposed: accumulators in
     * the warpgroup layout (pairs along a column). */
    constexpr bool kSwappedMma = !WARPGROUP_MMA && M_BLOCKS == 1;
    constexpr bool kTransposed = WARPGROUP_MMA || kSwappedMma;
    /* the last arriver's slot sum with several units' loads in flight (see
     * finish_slice): warpgroup tiles of 17+ rows one block per SM, and the
     * 16-row mma.sync tiles but for the RMSNorm epilogues (whose units span
     * whole warps); the 64-128-row 256-column tiles (kWideBigTile) hold
     * fewer loads, since 4 units of 4 slots spill their registers
     * (bench/NOTES.md steps 51-52). Not the 8-row variant: at m <= 4 its
     * tile has at most one unit a thread, and the loads of one unit's 8
     * slots at once beat 4 a round (step 54). */
    constexpr bool kBatchedSlotSum =
        (WARPGROUP_MMA && BLOCKS_PER_SM == 1) || (kSwappedMma && !EIGHT_ROWS && !rms_epilogue(EPILOGUE));
    constexpr bool kWideBigTile = M_BLOCKS > 2 && N_TILES > 2;
    static_assert(!kBatchedSlotSum || !rms_epilogue(EPILOGUE),
                  "the RMSNorm epilogues sum unit by unit (their units span whole warps)");
    /* EIGHT_ROWS: a variant for 1..8 rows only (transposed mma.sync): the
     * accumulators hold 8 rows, half the registers and half the epilogue. */
    static_assert(!EIGHT_ROWS || kSwappedMma, "8-row variants: mma.sync, one row block");
    constexpr int kRowHalvesMax = EIGHT_ROWS ? 1 : 2 * M_BLOCKS;
    constexpr int kWarpsPerNTile = kWarps / N_TILES;
    constexpr int kWarpWords = kSplitColumns ? 4 / kWarpsPerNTile : 4; /* weight words per lane and k-tile */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(MARLIN_NO_COPY_ENGINE)
    constexpr bool kCopyEngine = true;
#else
    constexpr bool kCopyEngine = false;
#endif
    extern __shared__ int4 smem_unaligned[];
    __shared__ float row_inv_rms[kRowScaled ? 16 : 1]; /* row-scaled epilogues: 1 / rms of each row */
    __shared__ int is_last_arrival;              /* set by thread 0 in finish_slice */
    __shared__ uint64_t stage_full[STAGES];      /* copy engine: one mbarrier per stage */
    trace_stamp(args, kTraceStart);
    int4* smem = smem_unaligned + (1024 - shared_address(smem_unaligned) % 1024) % 1024 / 16;
    int4* smem_reduce = smem + STAGES * Cfg::kStage;

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int warp_n_tile = kSplitColumns ? warp / kWarpsPerNTile : warp % N_TILES;
    const int warp_k_group = kSplitColumns ? 0 : warp / N_TILES;
    /* first of the lane's words this warp uses */
    const int warp_word0 = kSplitColumns ? (warp % kWarpsPerNTile) * kWarpWords : 0;
    const int n = args.n, k = args.k;
    const int k_tiles_total = k / 16, n_tiles_total = n / 64;
    const int k_iters = (k + Cfg::kBK - 1) / Cfg::kBK;
    const int slices = (n + Cfg::kBN - 1) / Cfg::kBN;
    /* Row chunk blockIdx.y of the launch (side by side where the host runs
     * several, for layers too small to fill the device with one): rows
     * row0 .. row0 + m - 1, with their own workspace slots and counters. */
    const int row0 = blockIdx.y * Cfg::kBM;
    const int m = args.m - row0 < Cfg::kBM ? args.m - row0 : Cfg::kBM;
    const int4* A = args.A + (size_t)row0 * k / 8;

    /* Striped: block b runs iterations b * iters_per_block ... Cluster mode
     * (sm_90, small layers): the launch's clusters of cluster_split blocks
     * each take one slice, block r of a cluster its r-th share of k steps
     * (at least one), and they sum their tiles through distributed shared
     * memory: no workspace, no global round trips. No block returns early
     * in cluster mode (every block takes part in the cluster barriers). */
    const bool cluster_mode = args.cluster_split > 1;
    int run_begin, run_end;
    if (cluster_mode) {
        const int cluster_slice = blockIdx.x / args.cluster_split, rank = blockIdx.x % args.cluster_split;
        run_begin = cluster_slice * k_iters + rank * k_iters / args.cluster_split;
        run_end = cluster_slice * k_iters + (rank + 1) * k_iters / args.cluster_split;
    } else {
        run_begin = blockIdx.x * args.iters_per_block;
        run_end = run_begin + args.iters_per_block;
        if (run_end > slices * k_iters) run_end = slices * k_iters;
    }
    const int run_length = run_end - run_begin;
    if (run_length <= 0) return;

    if constexpr (kCopyEngine) {
        if (tid == 0) {
            for (int i = 0; i < STAGES; i++) mbarrier_init(&stage_full[i], 1);
            mbarrier_init_fence();
        }
        __syncthreads();
    }

    /* ---- copies into a stage.
     *
     * sm_90: thread 0 issues the whole stage as four or five copy-engine
     * copies (the weight box, the scale box, the A halves), announced to the
     * stage's mbarrier with one arrival; every other thread spends no
     * instruction on copying. Boxes that reach past m, k or n arrive
     * zero-filled. */
    const uint32_t stage_bytes =
        16u * (Cfg::kAStage + Cfg::kBStage) + 2u * Cfg::kBN * step_scale_rows(Cfg::kBK, args.group_shift);
    auto engine_load_weights = [&](int stage_index, int slice, int k_step) {
        const int k0 = k_step * Cfg::kBK;
        int4* stage = smem + stage_index * Cfg::kStage;
        uint64_t* barrier = &stage_full[stage_index];
        mbarrier_arrive_expect_bytes(barrier, stage_bytes);
        tensor_copy_3d(stage + Cfg::kAStage, &args.b_map, 0, slice * N_TILES, k0 / 16, barrier);
        tensor_copy_2d(stage + Cfg::kAStage + Cfg::kBStage, &args.s_map, slice * Cfg::kBN, k0 >> args.group_shift,
                       barrier);
    };
    auto engine_load_activations = [&](int stage_index, int k_step) {
        int4* stage = smem + stage_index * Cfg::kStage;
#pragma unroll
        for (int h = 0; h < Cfg::kAHalves; h++)
            tensor_copy_2d(stage + h * Cfg::kAHalf, &args.a_map, k_step * Cfg::kBK + h * 64, row0,
                           &stage_full[stage_index]);
    };

    /* Before sm_90: every thread copies a fixed share with cp.async 16-byte
     * copies, into the same layout. Rows of A at or past m are not copied
     * (their garbage only reaches rows of C that are never stored: an mma row
     * depends on its own A row alone), nor anything past k or n (compute
     * skips k-tiles past k and warps past n). */
    constexpr int kALoads = (Cfg::kAStage + kThreads - 1) / kThreads;
    constexpr int kBLoads = Cfg::kBStage / kThreads;
    constexpr int kBRowsPerLoad = kThreads / 32 / N_TILES; /* k-tile rows between a thread's weight chunks */
    static_assert(Cfg::kBStage % kThreads == 0, "every thread copies the same number of weight chunks");
    static_assert(Cfg::kSStage <= kThreads, "one scale chunk per thread at most");
    auto thread_load_weights = [&](int stage_index, int slice, int k_step) {
        const int k0 = k_step * Cfg::kBK, k_tile0 = k0 / 16, n_tile0 = slice * N_TILES;
        const int valid_n_tiles = n_tiles_total - n_tile0 < N_TILES ? n_tiles_total - n_tile0 : N_TILES;
        const int weight_rows = k_tiles_total - k_tile0 < K_TILES ? k_tiles_total - k_tile0 : K_TILES;
        const int scale_rows =
            (((k0 + Cfg::kBK < k ? k0 + Cfg::kBK : k) - 1) >> args.group_shift) - (k0 >> args.group_shift) + 1;
        int4* stage = smem + stage_index * Cfg::kStage;
        const int b_k_tile = tid / 32 / N_TILES, b_n_tile = tid / 32 % N_TILES;
        if (b_n_tile < valid_n_tiles) {
            const int4* src = args.B + ((size_t)(k_tile0 + b_k_tile) * n_tiles_total + n_tile0 + b_n_tile) * 32 + lane;
#pragma unroll
            for (int j = 0; j < kBLoads; j++)
                if (b_k_tile + j * kBRowsPerLoad < weight_rows)
                    copy_async_16(stage + Cfg::kAStage + tid + j * kThreads,
                                  src + (size_t)j * kBRowsPerLoad * n_tiles_total * 32);
        }
        const int s_row = tid / (Cfg::kBN / 8), s_chunk = tid % (Cfg::kBN / 8);
        if (tid < Cfg::kSStage && s_row < scale_rows && s_chunk < valid_n_tiles * 8)
            copy_async_16(stage + Cfg::kAStage + Cfg::kBStage + tid,
                          args.scales + ((size_t)((k0 >> args.group_shift) + s_row) * n + n_tile0 * 64) / 8 + s_chunk);
    };
    auto thread_load_activations = [&](int stage_index, int k_step) {
        const int k0 = k_step * Cfg::kBK;
        int4* stage = smem + stage_index * Cfg::kStage;
#pragma unroll
        for (int j = 0; j < kALoads; j++) {
            /* chunk i: row i / (BK/8), 8 columns from 8 * (i % (BK/8)) */
            const int i = tid + j * kThreads, row = i / (Cfg::kBK / 8), chunk = i % (Cfg::kBK / 8);
            if (i < Cfg::kAStage && row < m && k0 + chunk * 8 < k)
                copy_async_16(stage + (chunk / 8) * Cfg::kAHalf + row * 8 + ((chunk % 8) ^ (row % 8)),
                              A + ((size_t)row * k + k0) / 8 + chunk);
        }
    };
    /* Both take effect only in the threads that issue copies. */
    auto load_weights = [&](int stage_index, int slice, int k_step) {
        if constexpr (kCopyEngine) {
            if (tid == 0) engine_load_weights(stage_index, slice, k_step);
        } else {
            thread_load_weights(stage_index, slice, k_step);
        }
    };
    auto load_activations = [&](int stage_index, int k_step) {
        if constexpr (kCopyEngine) {
            if (tid == 0) engine_load_activations(stage_index, k_step);
        } else {
            thread_load_activations(stage_index, k_step);
        }
    };

    /* A warp's accumulators, 32 * M_BLOCKS per thread, for its n-tile and all
     * rows. mma.sync from 17 rows: acc[mb][b] is the m16n8 C fragment of rows
     * 16 mb.. and columns 8 b.. of the n-tile. Warpgroup MMA and mma.sync up
     * to 16 rows (C^T = W^T A^T, weights as the M operand): acc[s][j] is the
     * C fragment of the instruction for columns 16 s.. of the n-tile (M rows)
     * and rows 8 j.. of A (N columns). */
    constexpr int kAccOuter = kTransposed ? kWarpWords : M_BLOCKS, kAccInner = kTransposed ? kRowHalvesMax : 8;
    float acc[kAccOuter][kAccInner][4];
    auto clear_acc = [&]() {
#pragma unroll
        for (int i = 0; i < kAccOuter; i++)
#pragma unroll
            for (int b = 0; b < kAccInner; b++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][b][e] = 0.0f;
    };
    clear_acc();

    /* With 16 rows, all weight words and A fragments of a warp's k-tiles are
     * read up front (latency hidden behind the first k-tiles' math); with
     * more rows the accumulators leave no registers for that: per k-tile. */
    constexpr bool kPreload = M_BLOCKS == 1;
    /* Warp w sums k-tiles w_k * T ... w_k * T + T - 1 of each step (T =
     * kKTilesPerWarp, w_k = warp_k_group). A step never spans groups
     * unevenly (g divides BK, or BK divides g and steps are aligned to BK),
     * so the scale row of k-tile j within the step is (its k offset) >>
     * shift; when one group covers all of a warp's k-tiles (g >= 16 T, e.g.
     * g = 128), the warp reads its scales once per step. */
    const int warp_k_offset = warp_k_group * Cfg::kKTilesPerWarp * 16; /* in the step */
    const bool warp_one_scale_row =
        (warp_k_offset >> args.group_shift) == ((warp_k_offset + Cfg::kKTilesPerWarp * 16 - 16) >> args.group_shift);
    /* This lane's ldmatrix address for k-tile j of the warp: the four 8 x 8
     * matrices are rows 0-7 / 8-15 by k 0-7 / 8-15, in the order of the m16k16
     * A fragment (row lane % 16, k half lane / 16), or with the weights as the
     * M operand rows 0-7 first (row lane % 8 + 8 (lane / 16), k half lane / 8
     * % 2), so each 8 rows' B fragment is two adjacent registers. Chunk
     * 2 (kt % 4) + k half of half kt / 4, swizzled. */
    const int a_lane_row = kSwappedMma ? lane % 8 + 8 * (lane / 16) : lane % 16;
    const int a_lane_k_half = kSwappedMma ? lane / 8 % 2 : lane / 16;
    int a_offset[Cfg::kKTilesPerWarp];
#pragma unroll
    for (int j = 0; j < Cfg::kKTilesPerWarp; j++) {
        const int kt = warp_k_group * Cfg::kKTilesPerWarp + j;
        a_offset[j] = (kt / 4) * Cfg::kAHalf + a_lane_row * 8 + (((kt % 4) * 2 + a_lane_k_half) ^ (lane % 8));
    }
    const int lane_b_offset = Cfg::kAStage + (warp_k_group * Cfg::kKTilesPerWarp * N_TILES + warp_n_tile) * 32 + lane;
    const int lane_scale_offset = Cfg::kAStage + Cfg::kBStage + (warp_n_tile * 64 + (lane / 4) * 8) / 8;
    /* Warpgroup MMA: warpgroup g (warps 4g..4g+3) takes the same k-tiles as
     * warp_k_group g (all k-tiles with 128 rows); warp w of it dequantizes
     * its words of a k-tile into the A fragments of kWarpWords instructions
     * (one per 16 columns s), and the warpgroup issues them against the
     * k-tile's activations. The fragments rotate through kFragBuffers
     * buffers, so a k-tile's dequantization overlaps the instructions of the
     * kPendingKTiles k-tiles before it. */
    constexpr int kPendingKTiles = kWarpWords == 1 ? MARLIN_WG_NARROW_PENDING : MARLIN_WG_WIDE_PENDING;
    constexpr int kFragBuffers = !WARPGROUP_MMA ? 1 : kPendingKTiles < 2 ? 2 : kPendingKTiles < 4 ? 4 : 8;
    static_assert(!WARPGROUP_MMA || kPendingKTiles < kFragBuffers, "a buffer for each pending k-tile and the next");
    static_assert(Cfg::kKTilesPerWarp % kFragBuffers == 0, "k-tile index mod buffers = buffer, in every step");
    uint32_t frags[kFragBuffers][kWarpWords][4];
    auto compute_iteration_warpgroup = [&](int stage_index, int k_step, uint32_t accumulate_first) {
      if constexpr (WARPGROUP_MMA) {
        const int4* stage = smem + stage_index * Cfg::kStage;
        const uint32_t a_tile = shared_address(stage);
        /* Fragment buffers live across iterations: the last two k-tiles'
         * instructions may still read them. */
#pragma unroll
        for (int j = 0; j < Cfg::kKTilesPerWarp; j++) {
            /* k-tile in the step. Past k the copy engine zero-filled A, so such
             * k-tiles add zeros: no branch here, which would make ptxas
             * serialize every warpgroup instruction (C7518). */
            const int kt = warp_k_group * Cfg::kKTilesPerWarp + j;
            uint32_t words[kWarpWords], scale_pairs[kWarpWords];
            load_lane_words(words, stage + lane_b_offset + j * N_TILES * 32, warp_word0);
            load_lane_words(scale_pairs, stage + lane_scale_offset + ((kt * 16) >> args.group_shift) * (Cfg::kBN / 8),
                            warp_word0);
            warpgroup_wait<kPendingKTiles>(); /* the instructions that read this buffer are done */
            uint32_t(&f)[kWarpWords][4] = frags[j % kFragBuffers];
#pragma unroll
            for (int s = 0; s < kWarpWords; s++) {
                uint32_t q[4];
                dequantize_scaled<Format>(words[s], scale_pairs[s], q);
                transposed_fragment(q, f[s]);
            }
            const uint64_t descriptor =
                swizzled_tile_descriptor(a_tile + (kt / 4) * Cfg::kAHalf * 16 + (kt % 4) * 32);
            warpgroup_fence();
#pragma unroll
            for (int s = 0; s < kWarpWords; s++)
                wgmma_16<16 * M_BLOCKS>(&acc[s][0][0], f[s], descriptor, j == 0 ? accumulate_first : 1u);
            warpgroup_commit();
        }
      }
    };
    /* Tensor-core work of one iteration on its stage; slice_start: the first
     * of its slice in this run (warpgroup MMA starts the accumulators there,
     * where mma.sync has them cleared by the previous finish_slice). */
    auto compute_iteration = [&](int stage_index, int slice, int k_step, bool slice_start) {
        if constexpr (WARPGROUP_MMA) {
            /* no check against n: past it the copy engine zero-filled the
             * weights, and finish_slice stores no column past n */
            compute_iteration_warpgroup(stage_index, k_step, slice_start ? 0u : 1u);
            return;
        }
        if (slice * N_TILES + warp_n_tile >= n_tiles_total) return; /* past the last column */
        const int k0 = k_step * Cfg::kBK;
        const bool full_k = k0 + Cfg::kBK <= k;
        const int4* stage = smem + stage_index * Cfg::kStage;
        int4 b_words[kPreload ? Cfg::kKTilesPerWarp : 1];
        uint32_t a_frags[kPreload ? Cfg::kKTilesPerWarp : 1][M_BLOCKS][4];
        auto load_a = [&](uint32_t (&frag)[M_BLOCKS][4], int j) {
#pragma unroll
            for (int mb = 0; mb < M_BLOCKS; mb++)
                load_matrix_x4(frag[mb], stage + a_offset[j] + mb * 16 * 8);
        };
        auto scales_of = [&](int j) {
            return stage[lane_scale_offset + ((warp_k_offset + j * 16) >> args.group_shift) * (Cfg::kBN / 8)];
        };
        auto load_b = [&](int j) { return stage[lane_b_offset + j * N_TILES * 32]; };
        if constexpr (kPreload) {
#pragma unroll
            for (int j = 0; j < Cfg::kKTilesPerWarp; j++) {
                b_words[j] = load_b(j);
                load_a(a_frags[j], j);
            }
        }
        /* The warp's k-tiles of the step through multiply(j, scales of k-tile j):
         * with one scale read when one group covers them all; a partial last
         * step skips the k-tiles past k (they hold stale data). */
        auto multiply_step = [&](auto&& multiply) {
            if (full_k && warp_one_scale_row) {
                const int4 scale_vec = scales_of(0);
#pragma unroll
                for (int j = 0; j < Cfg::kKTilesPerWarp; j++) multiply(j, scale_vec);
            } else {
#pragma unroll
                for (int j = 0; j < Cfg::kKTilesPerWarp; j++)
                    if (k0 + warp_k_offset + j * 16 < k) multiply(j, scales_of(j));
            }
        };
        if constexpr (kSwappedMma) {
            /* Up to 16 rows: the weights as the M operand (C^T = W^T A^T). Word s
             * of a lane dequantizes to rows g and g + 8 of the instruction's
             * A fragment (columns 16 s + g and 16 s + 8 + g, q[0..1] and q[2..3]);
             * the activations of rows 8 h.. are its B fragment, registers 2 h
             * and 2 h + 1 of the ldmatrix load (k 0-7 and 8-15, see a_offset).
             * Rows 1..8 need one instruction per word, rows 9..16 two. */
            auto swapped_step = [&](auto row_halves) {
                constexpr int kRowHalves = decltype(row_halves)::kValue;
                auto multiply = [&](int j, const int4& scale_vec) {
                    const uint32_t(&a)[4] = a_frags[j][0];
                    uint32_t words[4], scale_pairs[4];
                    load_lane_words(words, &b_words[j], 0);
                    load_lane_words(scale_pairs, &scale_vec, 0);
#pragma unroll
                    for (int s = 0; s < 4; s++) {
                        uint32_t q[4], w[4];
                        dequantize_scaled<Format>(words[s], scale_pairs[s], q);
                        transposed_fragment(q, w);
#pragma unroll
                        for (int h = 0; h < kRowHalves; h++) mma_16816(acc[s][h], w, a[2 * h], a[2 * h + 1]);
                    }
                };
                multiply_step(multiply);
            };
            if (!EIGHT_ROWS && m > 8)
                swapped_step(RowHalves<kRowHalvesMax>{});
            else
                swapped_step(RowHalves<1>{});
        } else {
            /* k-tile j: dequantize, scale and multiply. */
            auto multiply = [&](int j, const int4& scale_vec) {
                if constexpr (!kPreload) {
                    b_words[0] = load_b(j);
                    load_a(a_frags[0], j);
                }
                const uint32_t(&a)[M_BLOCKS][4] = a_frags[kPreload ? j : 0];
                uint32_t words[4], scale_pairs[4];
                load_lane_words(words, &b_words[kPreload ? j : 0], 0);
                load_lane_words(scale_pairs, &scale_vec, 0);
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    /* Scales 2s and 2s+1 of this lane's 8 are its columns in n8 blocks 2s and 2s+1. */
                    uint32_t frag[4];
                    dequantize_scaled<Format>(words[s], scale_pairs[s], frag);
#pragma unroll
                    for (int mb = 0; mb < M_BLOCKS; mb++) {
                        mma_16816(acc[mb][2 * s], a[mb], frag[0], frag[1]);
                        mma_16816(acc[mb][2 * s + 1], a[mb], frag[2], frag[3]);
                    }
                }
            };
            multiply_step(multiply);
        }
    };

    /* End of a slice: sum the warps of each n-tile, then write C or a slot. */
    auto finish_slice = [&](int slice, bool whole_slice) {
        /* worked out here, not kept in registers through the main loop */
        const int c_width = kSwiglu ? n / 2 : n; /* columns of C */
        half2* C = args.C + (size_t)row0 * c_width / 2;
        float* partials = args.partials + (size_t)blockIdx.y * gridDim.x * 2 * Cfg::kSlotFloats;
        int* counters = args.counters + blockIdx.y * slices;
        if constexpr (WARPGROUP_MMA) {
            warpgroup_wait<0>(); /* ptxas makes every read of an accumulator below wait for it */
        }
        /* Partial slice: thread 0 reads how many contributors have arrived
         * already, its round trip overlapped with the sums below (see the
         * arrival, after them). */
        int arrived_before = -1;
        if (!whole_slice && !cluster_mode && tid == 0) arrived_before = load_acquire(&counters[slice]);
        /* Warps of k-groups > 0 hand their accumulators to group 0 through
         * shared memory, kQuads float4 per lane at a time (one mma.sync row
         * block, an eighth of a warpgroup's instructions, or all of an 8-row
         * variant's four). */
        constexpr int kQuads = kAccOuter * kAccInner / M_BLOCKS;
        float4* reduce = reinterpret_cast<float4*>(smem_reduce);
        float(*quads)[4] = &acc[0][0];
#pragma unroll
        for (int c = 0; c < (Cfg::kKGroups > 1 ? M_BLOCKS : 0); c++) {
            if (!kTransposed && c * 16 >= m) break; /* mma.sync: row blocks past m hold nothing */
            if (warp_k_group > 0) {
#pragma unroll
                for (int b = 0; b < kQuads; b++)
                    reduce[(((warp_k_group - 1) * N_TILES + warp_n_tile) * kQuads + b) * 32 + lane] = make_float4(
                        quads[kQuads * c + b][0], quads[kQuads * c + b][1], quads[kQuads * c + b][2], quads[kQuads * c + b][3]);
            }
            __syncthreads();
            if (warp_k_group == 0) {
                for (int g = 1; g < Cfg::kKGroups; g++) {
#pragma unroll
                    for (int b = 0; b < kQuads; b++) {
                        float4 v = reduce[(((g - 1) * N_TILES + warp_n_tile) * kQuads + b) * 32 + lane];
                        float* q = quads[kQuads * c + b];
                        q[0] += v.x, q[1] += v.y, q[2] += v.z, q[3] += v.w;
                    }
                }
            }
            __syncthreads();
        }

        if (kTracing && Cfg::kKGroups > 1) trace_stamp(args, kTraceReduced);
        const int n_tile = slice * N_TILES + warp_n_tile;
        const bool writer = warp_k_group == 0 && n_tile < n_tiles_total;
        /* A lane's accumulators come in pairs of adjacent elements: along a
         * row for mma.sync (columns c, c + 1), along a column for warpgroup
         * MMA (rows r, r + 1). lane_row / lane_col: the lane's first element
         * in the tile; the visitor gets offsets from there. */
        constexpr bool kPairInRow = !kTransposed;
        const int lane_row = kTransposed ? (lane % 4) * 2 : lane / 4;
        const int lane_col = /* in the slice */
            warp_n_tile * 64 + (kTransposed ? 16 * warp_word0 + lane / 4 : (lane % 4) * 2);
        /* Visits this lane's pairs whose first row is < m as (row offset, column
         * offset, x, y, second row valid): compile-time offsets, so no address
         * is worked out ahead (and kept in registers across the main loop). */
        auto for_each_valid_pair = [&](auto&& visit) {
#pragma unroll
            for (int i = 0; i < kAccOuter; i++)
#pragma unroll
                for (int b = 0; b < kAccInner; b++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        /* mma.sync from 17 rows: i = row block, b = 8 columns,
                         * h = +8 rows; transposed: i = 16 columns, b = 8 rows,
                         * h = +8 columns */
                        const int row_offset = kTransposed ? 8 * b : 16 * i + 8 * h;
                        const int col_offset = kTransposed ? 16 * i + 8 * h : 8 * b;
                        if (!kTransposed && 16 * i >= m) continue;
                        if (lane_row + row_offset < m)
                            visit(row_offset, col_offset, acc[i][b][2 * h], acc[i][b][2 * h + 1],
                                  kPairInRow || lane_row + row_offset + 1 < m);
                    }
        };
        const int n0 = slice * Cfg::kBN;
        /* row-scaled epilogues: the factor of a row of the tile (1 otherwise;
         * rows >= m are never stored) */
        auto row_scale = [&](int row) {
            if constexpr (kRowScaled) return row < 16 ? row_inv_rms[row] : 1.0f;
            else return 1.0f;
        };
        /* This lane's pairs, rows < m, into a row-major fp32 tile of kBN
         * columns (a cluster block's stage memory or a workspace slot),
         * through store(pointer, float2 or float). */
        auto store_fp32_tile = [&](float* tile, auto&& store) {
            float* lane_tile = tile + lane_row * Cfg::kBN + lane_col;
            for_each_valid_pair([&](int row_offset, int col_offset, float x, float y, bool second) {
                float* out = lane_tile + row_offset * Cfg::kBN + col_offset;
                if (kPairInRow) {
                    store(reinterpret_cast<float2*>(out), make_float2(x, y));
                } else {
                    store(out, x);
                    if (second) store(out + Cfg::kBN, y);
                }
            });
        };
        /* The summed tile goes to C in units of 4 output columns: vector e of
         * the tile (row e / (kBN/4), 4 columns), or with SwiGLU the gate
         * vector of unit u and the up vector 8 columns on. sum_of(e) gives
         * the sum of vector e; nothing is stored past n. */
        const int cols = n - n0 < Cfg::kBN ? n - n0 : Cfg::kBN; /* a multiple of 64 */
        const int units = m * (Cfg::kBN / 4) / (kSwiglu ? 2 : 1);
        /* kResidualEpilogue: the unit loops run over whole warps (16 lanes sum
         * each 64 columns' squares by shuffles); units past `units` store nothing */
        const int unit_loop_end = kResidual ? (units + 31) / 32 * 32 : units;
        /* The first tile vector that unit u reads: u itself, or with SwiGLU
         * its gate vector (2 per 16-column group; the up vector is 2 on). */
        auto first_vector_of = [&](int u) {
            if constexpr (kSwiglu) {
                const int q = u % (Cfg::kBN / 8);
                return (u / (Cfg::kBN / 8)) * (Cfg::kBN / 4) + (q / 2) * 4 + q % 2;
            } else {
                return u;
            }
        };
        auto store_c_unit = [&](int u, auto&& sum_of) {
            if constexpr (kResidual) {
                /* x += sum; C = fp16(x . norm_weight); units u .. u + 15 (64
                 * columns of a row, 16 consecutive lanes) sum their squares */
                const int row = u / (Cfg::kBN / 4), col = (u % (Cfg::kBN / 4)) * 4;
                const bool valid = u < units && col < cols;
                float squares = 0.0f;
                if (valid) {
                    const float4 sum = sum_of(u);
                    float4* x = reinterpret_cast<float4*>(args.residual + (size_t)(row0 + row) * n + n0 + col);
                    float4 r = __ldcg(x); /* written by earlier kernels: through L2 */
                    r.x += sum.x, r.y += sum.y, r.z += sum.z, r.w += sum.w;
                    __stcg(x, r);
                    const float4 w = __ldg(reinterpret_cast<const float4*>(args.norm_weight + n0 + col));
                    half2* out = C + ((size_t)row * n + n0 + col) / 2;
                    out[0] = __floats2half2_rn(r.x * w.x, r.y * w.y);
                    out[1] = __floats2half2_rn(r.z * w.z, r.w * w.w);
                    squares = r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w;
                }
#pragma unroll
                for (int offset = 8; offset > 0; offset /= 2) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
                if (valid && u % 16 == 0) args.sumsq_out[(size_t)(row0 + row) * (n / 64) + (n0 + col) / 64] = squares;
            } else if constexpr (!kSwiglu) {
                float4 sum = sum_of(u);
                const int row = u / (Cfg::kBN / 4), col = (u % (Cfg::kBN / 4)) * 4;
                if constexpr (kRowScaled) {
                    const float scale = row_inv_rms[row];
                    sum.x *= scale, sum.y *= scale, sum.z *= scale, sum.w *= scale;
                }
                if (col < cols) {
                    half2* out = C + ((size_t)row * n + n0 + col) / 2;
                    out[0] = __floats2half2_rn(sum.x, sum.y);
                    out[1] = __floats2half2_rn(sum.z, sum.w);
                }
            } else {
                const int e = first_vector_of(u), row = e / (Cfg::kBN / 4), col = (e % (Cfg::kBN / 4)) * 4;
                if (col >= cols) return;
                float4 gate = sum_of(e), up = sum_of(e + 2);
                if constexpr (kRowScaled) {
                    const float scale = row_inv_rms[row];
                    gate.x *= scale, gate.y *= scale, gate.z *= scale, gate.w *= scale;
                    up.x *= scale, up.y *= scale, up.z *= scale, up.w *= scale;
                }
                half2* out = C + ((size_t)row * c_width + swiglu_column(n0 + col)) / 2;
                out[0] = __floats2half2_rn(silu_times(gate.x, up.x), silu_times(gate.y, up.y));
                out[1] = __floats2half2_rn(silu_times(gate.z, up.z), silu_times(gate.w, up.w));
            }
        };
        if (whole_slice && kResidual) {
            /* the tile through the reduce buffer (free after the k-group sums),
             * then in units like a summed tile */
            float* tile = reinterpret_cast<float*>(smem_reduce);
            if (writer) store_fp32_tile(tile, [](auto* out, auto value) { *out = value; });
            __syncthreads();
            for (int u = tid; u < unit_loop_end; u += kThreads)
                store_c_unit(u, [&](int e) { return reinterpret_cast<const float4*>(tile)[e]; });
            __syncthreads(); /* the tile is read before the buffer's next use */
            return;
        }
        if (whole_slice) {
            if (writer) {
                /* a lane's pair at `out`: along a row, or rows out and out + c_width */
                auto store_pair = [&](half* out, float x, float y, bool second) {
                    if (kPairInRow) {
                        *reinterpret_cast<half2*>(out) = __floats2half2_rn(x, y);
                    } else {
                        out[0] = __float2half_rn(x);
                        if (second) out[c_width] = __float2half_rn(y);
                    }
                };
                if constexpr (kSwiglu) {
                    /* this lane's pairs as for_each_valid_pair, gate columns
                     * only, each value silu_times(gate, up) with the up sum 8
                     * columns on: transposed, h = 0 holds the gate and h = 1
                     * the up column; mma.sync from 17 rows, 8-column block b
                     * (even) the gates and b + 1 the ups */
                    auto for_each_valid_gate_up = [&](auto&& visit) {
#pragma unroll
                        for (int i = 0; i < kAccOuter; i++)
#pragma unroll
                            for (int b = 0; b < kAccInner; b++) {
                                if constexpr (kTransposed) {
                                    if (lane_row + 8 * b < m) {
                                        /* rows r and r + 1 of the gate (0, 1) and up (2, 3) column */
                                        const float s0 = row_scale(lane_row + 8 * b), s1 = row_scale(lane_row + 8 * b + 1);
                                        visit(8 * b, 16 * i, silu_times(s0 * acc[i][b][0], s0 * acc[i][b][2]),
                                              silu_times(s1 * acc[i][b][1], s1 * acc[i][b][3]), lane_row + 8 * b + 1 < m);
                                    }
                                } else if (b % 2 == 0 && 16 * i < m) {
#pragma unroll
                                    for (int h = 0; h < 2; h++)
                                        if (lane_row + 16 * i + 8 * h < m)
                                            visit(16 * i + 8 * h, 8 * b,
                                                  silu_times(acc[i][b][2 * h], acc[i][b + 1][2 * h]),
                                                  silu_times(acc[i][b][2 * h + 1], acc[i][b + 1][2 * h + 1]), true);
                                }
                            }
                    };
                    half* lane_c = reinterpret_cast<half*>(C) + (size_t)lane_row * c_width;
                    for_each_valid_gate_up([&](int row_offset, int col_offset, float x, float y, bool second) {
                        store_pair(lane_c + (size_t)row_offset * c_width + swiglu_column(n0 + lane_col + col_offset),
                                   x, y, second);
                    });
                } else {
                    half* lane_c = reinterpret_cast<half*>(C) + (size_t)lane_row * n + n0 + lane_col;
                    for_each_valid_pair([&](int row_offset, int col_offset, float x, float y, bool second) {
                        const int row = lane_row + row_offset;
                        store_pair(lane_c + (size_t)row_offset * n + col_offset, row_scale(row) * x,
                                   row_scale(kPairInRow ? row : row + 1) * y, second);
                    });
                }
            }
            return;
        }

        if (cluster_mode) {
            /* (Never with the RMSNorm epilogues: the host launches those
             * striped, as their square sums span whole warps of units.)
             * Every block of the cluster holds part of the sums of one slice:
             * each stores rows < m of its tile in its own (now idle) stage
             * memory, row-major fp32; then block r adds up the r-th share of
             * the tile from all blocks, in rank order, and writes C. */
            static_assert(Cfg::kBM * Cfg::kBN * 4 <= 16 * STAGES * Cfg::kStage, "a tile fits in the stages");
            float* tile = reinterpret_cast<float*>(smem);
            __syncthreads(); /* every warp is done with the stages */
            if (writer) store_fp32_tile(tile, [](auto* out, auto value) { *out = value; });
            cluster_sync();
            const int blocks = args.cluster_split, rank = blockIdx.x % blocks;
            const int share_end = (rank + 1) * units / blocks;
            for (int u = rank * units / blocks + tid; u < share_end; u += kThreads)
                store_c_unit(u, [&](int e) {
                    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    for (int b = 0; b < blocks; b++) {
                        const float4 v = load_cluster_float4(tile + 4 * e, b);
                        sum.x += v.x, sum.y += v.y, sum.z += v.z, sum.w += v.w;
                    }
                    return sum;
                });
            cluster_sync(); /* no block leaves while another still reads its tile */
            return;
        }

        /* Partial slice: publish this block's share, rows < m of its tile
         * row-major in fp32, in its slot. */
        const int slice_begin = slice * k_iters, slice_end = slice_begin + k_iters;
        auto slot_of = [&](int block) {
            const bool head = block * args.iters_per_block >= slice_begin; /* its run starts in this slice */
            return reinterpret_cast<float2*>(partials + (size_t)(2 * block + (head ? 0 : 1)) * Cfg::kSlotFloats);
        };
        if (writer)
            store_fp32_tile(reinterpret_cast<float*>(slot_of(blockIdx.x)), [](auto* out, auto value) { __stcg(out, value); });
        const int first_block = slice_begin / args.iters_per_block;
        const int last_block = (slice_end - 1) / args.iters_per_block;
        __syncthreads(); /* the block's slot writes come before thread 0's release */
        if (tid == 0) {
            /* Every other contributor had published its slot before this block's
             * sums began: this block is the last, with no atomic to wait for.
             * Otherwise it announces its slot, and the count tells whether it
             * was the last. The last resets the counter for the next call. */
            is_last_arrival = arrived_before == last_block - first_block ||
                              atomic_add_acq_rel(&counters[slice], 1) == last_block - first_block;
            if (is_last_arrival) counters[slice] = 0;
        }
        __syncthreads(); /* thread 0's acquire comes before every thread's slot loads */
        if (kTracing) trace_stamp(args, kTraceArrived);
        if (!is_last_arrival) return;
        /* The last to arrive sums every contributor's slot in block order (the
         * same order whoever arrives last), spread over all its threads, four
         * columns per load. This one block reads every slot (8 of them for a
         * slice cut 8 ways), so the sum is latency-bound: each thread keeps
         * kSlotsInFlight loads in flight (the accumulators are dead here, so
         * the registers are free). The loads go to L2 (.cg), never to L1. */
        constexpr int kSlotsInFlight = 8;
        if constexpr (kBatchedSlotSum) {
            /* One-block tiles of 17-128 rows: 8-16 units a thread and 2-4
             * contributors a slice, so one unit's loads alone leave the
             * sum latency-bound (7.5 us of a 64-row qkv call, bench/NOTES.md
             * step 50); 16-row tiles at 9-16 rows: 2-4 units a thread and
             * 3-8 contributors (step 54). kUnitsInFlight units' loads of up
             * to kSlotsPerRound slots are in flight together (2 x 4 at 16
             * rows: 2 x 8 spilled 100-700 B there), each sum still in block
             * order. */
            constexpr int kUnitsInFlight = kSwappedMma || kWideBigTile ? 2 : 4, kVectors = kSwiglu ? 2 : 1,
                          kSlotsPerRound = kWideBigTile ? (kSwiglu ? 1 : 2) : (kSwiglu ? 2 : 4);
            for (int u0 = tid; u0 < units; u0 += kUnitsInFlight * kThreads) {
                float4 sum[kUnitsInFlight][kVectors];
                int e0[kUnitsInFlight];
#pragma unroll
                for (int j = 0; j < kUnitsInFlight; j++) {
                    e0[j] = first_vector_of(u0 + j * kThreads);
#pragma unroll
                    for (int h = 0; h < kVectors; h++) sum[j][h] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                }
                /* Two passes over the same (slot, unit, vector) loops: every load
                 * is issued before the first add. One helper running both
                 * passes cost the SwiGLU kernels 5-19 registers and up to 8 B
                 * more stack (ptxas, sm_90a), so they stay spelled out. */
                for (int block0 = first_block; block0 <= last_block; block0 += kSlotsPerRound) {
                    float4 v[kSlotsPerRound][kUnitsInFlight][kVectors];
#pragma unroll
                    for (int i = 0; i < kSlotsPerRound; i++)
#pragma unroll
                        for (int j = 0; j < kUnitsInFlight; j++)
#pragma unroll
                            for (int h = 0; h < kVectors; h++)
                                if (block0 + i <= last_block && u0 + j * kThreads < units)
                                    v[i][j][h] = __ldcg(reinterpret_cast<const float4*>(slot_of(block0 + i)) + e0[j] + 2 * h);
#pragma unroll
                    for (int i = 0; i < kSlotsPerRound; i++)
#pragma unroll
                        for (int j = 0; j < kUnitsInFlight; j++)
#pragma unroll
                            for (int h = 0; h < kVectors; h++)
                                if (block0 + i <= last_block && u0 + j * kThreads < units) {
                                    float4& s = sum[j][h];
                                    s.x += v[i][j][h].x, s.y += v[i][j][h].y, s.z += v[i][j][h].z, s.w += v[i][j][h].w;
                                }
                }
#pragma unroll
                for (int j = 0; j < kUnitsInFlight; j++)
                    if (u0 + j * kThreads < units)
                        store_c_unit(u0 + j * kThreads, [&](int e) { return e == e0[j] ? sum[j][0] : sum[j][kVectors - 1]; });
            }
        } else {
            for (int u = tid; u < unit_loop_end; u += kThreads)
                store_c_unit(u, [&](int e) {
                    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    for (int block0 = first_block; block0 <= last_block; block0 += kSlotsInFlight) {
                        float4 v[kSlotsInFlight];
#pragma unroll
                        for (int i = 0; i < kSlotsInFlight; i++)
                            if (block0 + i <= last_block)
                                v[i] = __ldcg(reinterpret_cast<const float4*>(slot_of(block0 + i)) + e);
#pragma unroll
                        for (int i = 0; i < kSlotsInFlight; i++)
                            if (block0 + i <= last_block) sum.x += v[i].x, sum.y += v[i].y, sum.z += v[i].z, sum.w += v[i].w;
                    }
                    return sum;
                });
        }
    };

    /* Pipeline: kLookahead iterations in flight ahead of the one computed:
     * STAGES - 1, or STAGES - 2 with warpgroup MMA, whose instructions still
     * read the previous iteration's stage while the next one is refilled.
     * The (slice, k step) of the next load and of the computed iteration
     * advance incrementally: no divisions in the loop. */
    constexpr int kLookahead = WARPGROUP_MMA ? STAGES - 2 : STAGES - 1;
    static_assert(kLookahead >= 1, "too few stages");
    int load_slice = run_begin / k_iters, load_k_step = run_begin % k_iters;
    auto advance = [&](int& slice, int& k_step) {
        if (++k_step == k_iters) k_step = 0, slice++;
    };
    /* The weights do not depend on the previous kernel: fetch the first stages
     * of them before waiting for it, then A. (cp.async: the first commit
     * group holds all prologue weights, which only makes the first wait a
     * little stricter.) */
    {
        int slice_t = load_slice, k_step_t = load_k_step;
        for (int t = 0; t < kLookahead && t < run_length; t++) {
            load_weights(t, slice_t, k_step_t);
            advance(slice_t, k_step_t);
        }
    }
    wait_for_previous_grid();
    trace_stamp(args, kTraceWaited);
    if constexpr (kRowScaled) {
        /* 1 / rms of each row from its k/64 sums of squares, summed in a fixed
         * order (each lane its stride, then the lanes); warp w takes rows w
         * and w + 8. Written before the main loop's barriers, read after them
         * in the epilogue; its round trip overlaps the first stage's. */
        const int groups = k / 64;
        for (int row = warp; row < m; row += kWarps) {
            float sum = 0.0f;
            for (int g = lane; g < groups; g += 32) sum += __ldcg(args.sumsq_in + (size_t)(row0 + row) * groups + g);
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
            if (lane == 0) row_inv_rms[row] = rsqrtf(sum / k + args.rms_eps);
        }
    }
#pragma unroll
    for (int t = 0; t < kLookahead; t++) {
        if (t < run_length) {
            load_activations(t, load_k_step);
            advance(load_slice, load_k_step);
        }
        if constexpr (!kCopyEngine) copy_async_commit();
    }
    allow_next_grid();
    int slice = run_begin / k_iters, k_step = run_begin % k_iters;
    int stage_index = 0, load_stage = kLookahead;
    uint32_t stage_parity = 0; /* phase parity of this pass over the stages */
    /* One pass of the outer loop per slice the run touches; the epilogue
     * (finish_slice) stays outside the inner loop, so the accumulators are
     * touched by nothing but MMAs there and warpgroup MMAs stay in flight
     * from one iteration to the next. */
    for (int t = 0; t < run_length;) {
        const int slice_first_t = t;
        const int slice_end_t = t + (k_iters - k_step < run_length - t ? k_iters - k_step : run_length - t);
        for (; t < slice_end_t; t++) {
            if constexpr (kCopyEngine)
                mbarrier_wait(&stage_full[stage_index], stage_parity);
            else
                copy_async_wait<kLookahead - 1>();
            if (kTracing && t == 0) trace_stamp(args, kTraceFirstStage);
            /* Warpgroup MMA: the instructions of iteration t - 2, which read the
             * stage refilled next, are done (at most one iteration's are pending). */
            if constexpr (WARPGROUP_MMA) warpgroup_wait<Cfg::kKTilesPerWarp>();
            __syncthreads(); /* every thread's copies are visible; every warp is done with the stage refilled next */
            if (t + kLookahead < run_length) {
                load_weights(load_stage, load_slice, load_k_step);
                load_activations(load_stage, load_k_step);
                advance(load_slice, load_k_step);
            }
            if constexpr (!kCopyEngine) copy_async_commit();
            load_stage = load_stage == STAGES - 1 ? 0 : load_stage + 1;
            compute_iteration(stage_index, slice, k_step + (t - slice_first_t), t == slice_first_t);
            if (++stage_index == STAGES) stage_index = 0, stage_parity ^= 1;
        }
        /* Whole if this run covered the slice from k step 0 to the last. */
        const bool whole_slice = k_step == 0 && t - slice_first_t == k_iters;
        trace_stamp(args, kTraceLastFinish);
        finish_slice(slice, whole_slice);
        if constexpr (!WARPGROUP_MMA) clear_acc(); /* warpgroup MMA starts the next slice with accumulate = 0 */
        slice++, k_step = 0;
    }
    if constexpr (!kCopyEngine) copy_async_wait<0>();
    trace_stamp(args, kTraceEnd);
}

}  // namespace marlin
