/*
 * marlin_kernel.cuh: the fp16 x int4 Marlin GEMM kernel.
 *
 * Design, for one launch over at most 64 rows of A (the host splits larger m):
 *
 *  - Tiles. A block computes a BM x BN tile of C (BM = 16*M_BLOCKS rows, BN =
 *    64*N_TILES columns), walking k in steps of BK = 16*K_TILES. One step of
 *    one column slice is an "iteration".
 *  - Striped partition. All slices' iterations are laid end to end, slice by
 *    slice ("column-major"), and cut into gridDim.x equal runs, one per block,
 *    so every SM gets the same amount of work whatever the tile count. A run
 *    may start or end inside a slice; such partial slices are summed through
 *    the workspace (below).
 *  - Warps. 8 warps; warp w owns n-tile w % N_TILES (64 columns) and every
 *    K_GROUPS-th 16-row k-tile of a step, where K_GROUPS = 8 / N_TILES. So
 *    several warps share one output tile, each summing a share of k; they are
 *    reduced through shared memory at the end of a slice, in fixed order.
 *  - Pipeline. STAGES shared-memory buffers filled by cp.async (16-byte
 *    copies that skip L1) STAGES-1 iterations ahead of the compute; one
 *    barrier per iteration.
 *  - Inner loop. The B words a lane loads already hold its m16n8k16 operand
 *    fragments (layout.h), so dequantization is a few lop3/hsub2/hfma2 in
 *    registers, scaled by one hmul2, feeding mma.sync directly. A comes from
 *    shared memory by ldmatrix, XOR-swizzled to be free of bank conflicts.
 *  - Launch overlap. On sm_90 a launch may begin while the previous kernel on
 *    the stream finishes (programmatic dependent launch): the first stages of
 *    weights are fetched before griddepcontrol.wait, A and C only after.
 *  - Global reduction. Each contributor to a partial slice writes its fp32
 *    tile to its own workspace slot, then bumps the slice's counter; the last
 *    to arrive sums all slots in block order (so the result never depends on
 *    timing), writes C, and resets the counter to 0 for the next call.
 *
 * Extension points: the weight format is a template parameter (dequantize
 * a 32-bit word into four half2 fragment registers); bf16 activations, zero
 * points and 8-bit weights become further formats.
 */
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace marlin {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

/* Everything a launch needs; passed by value. */
struct KernelArgs {
    const int4* A;              /* m x k fp16, row-major (this chunk's first row) */
    const int4* B;              /* packed codes, k*n/8 words */
    const int4* scales;         /* packed scales, ceil(k/g) x n fp16 */
    half2* C;                   /* m x n fp16, row-major (this chunk's first row) */
    float* partials;            /* workspace: 2 slots per block of BM x BN fp32 */
    int* counters;              /* workspace: one arrival counter per column slice */
    int m;                      /* rows in this chunk, 1..BM */
    int n, k;
    int group_shift;            /* scale row of k-index i: i >> group_shift (30 for one group) */
    int iters_per_block;        /* length of each block's run of iterations */
};

/* ------------------------------------------------------------ PTX helpers -- */

__device__ __forceinline__ uint32_t shared_address(const void* ptr) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

/* 16-byte asynchronous copy global -> shared that skips L1 (.cg); with
 * valid == false nothing is read and the destination is zero-filled. */
__device__ __forceinline__ void copy_async_16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)),
                 "l"(src), "r"(valid ? 16 : 0));
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

/* ------------------------------------------------------------------ kernel -- */

template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES>
struct TileConfig {
    static constexpr int kBM = 16 * M_BLOCKS;
    static constexpr int kBN = 64 * N_TILES;
    static constexpr int kBK = 16 * K_TILES;
    static constexpr int kKGroups = kWarps / N_TILES;       /* warps sharing one n-tile */
    static constexpr int kKTilesPerWarp = K_TILES / kKGroups;
    static constexpr int kScaleRows = kBK / 32 > 0 ? kBK / 32 : 1; /* most groups one step spans */
    /* Shared memory, in int4 (16-byte) units. */
    static constexpr int kAChunksPerRow = kBK / 8;
    static constexpr int kAStage = kBM * kAChunksPerRow;
    static constexpr int kBStage = K_TILES * N_TILES * 32;
    static constexpr int kSStage = kScaleRows * kBN / 8;
    static constexpr int kStage = kAStage + kBStage + kSStage;
    static constexpr int kReduce = (kKGroups - 1) * N_TILES * 8 * 32; /* float4 = int4 */
    static constexpr int kSmemBytes = 16 * (STAGES * kStage + kReduce);
    /* One workspace slot: a BM x BN fp32 tile. */
    static constexpr int kSlotFloats = kBM * kBN;

    static_assert(kWarps % N_TILES == 0, "N_TILES must divide the warp count");
    static_assert(K_TILES % kKGroups == 0, "every warp needs the same number of k-tiles");
    static_assert(kAChunksPerRow >= 8, "the A swizzle needs rows of at least 8 chunks");
    static_assert(STAGES >= 2, "the pipeline needs at least two stages");
};

/* BLOCKS_PER_SM: blocks meant to share one SM (caps registers to fit); two
 * blocks overlap one block's barrier and fragment-load latency with the
 * other's work. */
template <typename Format, int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, int BLOCKS_PER_SM>
__global__ void __launch_bounds__(kThreads, BLOCKS_PER_SM) marlin_gemm_kernel(const KernelArgs args) {
    using Cfg = TileConfig<M_BLOCKS, N_TILES, K_TILES, STAGES>;
    extern __shared__ int4 smem[];
    __shared__ int is_last_arrival; /* set by thread 0 in finish_slice */
    int4* smem_reduce = smem + STAGES * Cfg::kStage;

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int warp_n_tile = warp % N_TILES, warp_k_group = warp / N_TILES;
    const int n = args.n, k = args.k;
    const int k_tiles_total = k / 16, n_tiles_total = n / 64;
    const int k_iters = (k + Cfg::kBK - 1) / Cfg::kBK;
    const int slices = (n + Cfg::kBN - 1) / Cfg::kBN;

    const int run_begin = blockIdx.x * args.iters_per_block;
    int run_end = run_begin + args.iters_per_block;
    if (run_end > slices * k_iters) run_end = slices * k_iters;
    const int run_length = run_end - run_begin;
    if (run_length <= 0) return;

    /* Per-thread copy assignments are fixed for the whole run: work them out
     * once, so each iteration only adds the step's k and n offsets. */
    constexpr int kALoads = (Cfg::kAStage + kThreads - 1) / kThreads;
    constexpr int kBLoads = (Cfg::kBStage + kThreads - 1) / kThreads;
    constexpr int kSLoads = (Cfg::kSStage + kThreads - 1) / kThreads;
    const int4* a_src[kALoads];
    int a_dst[kALoads], a_col[kALoads];
    bool a_row_ok[kALoads];
#pragma unroll
    for (int j = 0; j < kALoads; j++) {
        int i = tid + j * kThreads;
        int row = i / Cfg::kAChunksPerRow, chunk = i % Cfg::kAChunksPerRow;
        a_row_ok[j] = i < Cfg::kAStage && row < args.m;
        a_src[j] = args.A + (size_t)(a_row_ok[j] ? row : 0) * (k / 8) + chunk;
        a_dst[j] = row * Cfg::kAChunksPerRow + (chunk ^ (row % 8));
        a_col[j] = chunk * 8;
    }
    int b_src[kBLoads], b_k_tile[kBLoads], b_n_tile[kBLoads];
#pragma unroll
    for (int j = 0; j < kBLoads; j++) {
        int i = tid + j * kThreads;
        int tile = i / 32;
        b_k_tile[j] = tile / N_TILES;
        b_n_tile[j] = i < Cfg::kBStage ? tile % N_TILES : n_tiles_total; /* past the end: never valid */
        b_src[j] = (b_k_tile[j] * n_tiles_total + b_n_tile[j]) * 32 + i % 32;
    }
    int s_row[kSLoads], s_col[kSLoads];
#pragma unroll
    for (int j = 0; j < kSLoads; j++) {
        int i = tid + j * kThreads;
        s_row[j] = i < Cfg::kSStage ? i / (Cfg::kBN / 8) : Cfg::kScaleRows; /* past the end: never valid */
        s_col[j] = (i % (Cfg::kBN / 8)) * 8;
    }

    /* Issues the copies of A for one iteration (column slice, k step). */
    auto load_activations = [&](int stage_index, int k_step) {
        const int k0 = k_step * Cfg::kBK;
        int4* stage_a = smem + stage_index * Cfg::kStage;
#pragma unroll
        for (int j = 0; j < kALoads; j++) {
            if (tid + j * kThreads >= Cfg::kAStage) break;
            bool valid = a_row_ok[j] && k0 + a_col[j] < k;
            copy_async_16(stage_a + a_dst[j], valid ? a_src[j] + k0 / 8 : args.A, valid);
        }
    };
    /* Issues the copies of the weights and scales of one iteration. */
    auto load_weights = [&](int stage_index, int slice, int k_step) {
        const int k0 = k_step * Cfg::kBK, n0 = slice * Cfg::kBN;
        const int k_tile0 = k0 / 16, n_tile0 = n0 / 64;
        int4* stage_b = smem + stage_index * Cfg::kStage + Cfg::kAStage;
        int4* stage_s = stage_b + Cfg::kBStage;
        const size_t b_base = ((size_t)k_tile0 * n_tiles_total + n_tile0) * 32;
#pragma unroll
        for (int j = 0; j < kBLoads; j++) {
            if (k_tile0 + b_k_tile[j] < k_tiles_total && n_tile0 + b_n_tile[j] < n_tiles_total)
                copy_async_16(stage_b + tid + j * kThreads, args.B + b_base + b_src[j], true);
        }
        const int first_scale_row = k0 >> args.group_shift;
        const int last_scale_row = ((k0 + Cfg::kBK < k ? k0 + Cfg::kBK : k) - 1) >> args.group_shift;
#pragma unroll
        for (int j = 0; j < kSLoads; j++) {
            int row = first_scale_row + s_row[j];
            if (row <= last_scale_row && n0 + s_col[j] < n)
                copy_async_16(stage_s + tid + j * kThreads, args.scales + ((size_t)row * n + n0 + s_col[j]) / 8, true);
        }
    };

    float acc[M_BLOCKS][8][4];
    auto clear_acc = [&]() {
#pragma unroll
        for (int mb = 0; mb < M_BLOCKS; mb++)
#pragma unroll
            for (int b = 0; b < 8; b++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[mb][b][e] = 0.0f;
    };
    clear_acc();

    /* Tensor-core work of iteration t on its stage. */
    auto compute_iteration = [&](int stage_index, int slice, int k_step) {
        const int k0 = k_step * Cfg::kBK;
        if (slice * N_TILES + warp_n_tile >= n_tiles_total) return; /* past the last column */
        const int4* stage = smem + stage_index * Cfg::kStage;
        const int4* stage_a = stage;
        const int4* stage_b = stage + Cfg::kAStage;
        const half* stage_s = reinterpret_cast<const half*>(stage_b + Cfg::kBStage);
#pragma unroll
        for (int j = 0; j < Cfg::kKTilesPerWarp; j++) {
            const int kt_local = warp_k_group + j * Cfg::kKGroups;
            const int k_index = k0 + kt_local * 16;
            if (k_index >= k) break;
            const int4 b_words = stage_b[(kt_local * N_TILES + warp_n_tile) * 32 + lane];
            const int scale_row = (k_index >> args.group_shift) - (k0 >> args.group_shift);
            const int4 scale_vec = *reinterpret_cast<const int4*>(
                stage_s + scale_row * Cfg::kBN + warp_n_tile * 64 + (lane / 4) * 8);
            const uint32_t* scale_pairs = reinterpret_cast<const uint32_t*>(&scale_vec);
            uint32_t a_frag[M_BLOCKS][4];
#pragma unroll
            for (int mb = 0; mb < M_BLOCKS; mb++) {
                int row = mb * 16 + lane % 16, chunk = kt_local * 2 + lane / 16;
                load_matrix_x4(a_frag[mb], stage_a + row * Cfg::kAChunksPerRow + (chunk ^ (row % 8)));
            }
            const uint32_t words[4] = {(uint32_t)b_words.x, (uint32_t)b_words.y, (uint32_t)b_words.z,
                                       (uint32_t)b_words.w};
#pragma unroll
            for (int s = 0; s < 4; s++) {
                uint32_t frag[4];
                Format::dequantize(words[s], frag);
                /* Scales 2s and 2s+1 of this lane's 8 are its columns in n8 blocks 2s and 2s+1. */
                half2 scale_pair = as_half2(scale_pairs[s]);
                half2 scale_lo = __low2half2(scale_pair), scale_hi = __high2half2(scale_pair);
                uint32_t b00 = as_bits(__hmul2(as_half2(frag[0]), scale_lo));
                uint32_t b01 = as_bits(__hmul2(as_half2(frag[1]), scale_lo));
                uint32_t b10 = as_bits(__hmul2(as_half2(frag[2]), scale_hi));
                uint32_t b11 = as_bits(__hmul2(as_half2(frag[3]), scale_hi));
#pragma unroll
                for (int mb = 0; mb < M_BLOCKS; mb++) {
                    mma_16816(acc[mb][2 * s], a_frag[mb], b00, b01);
                    mma_16816(acc[mb][2 * s + 1], a_frag[mb], b10, b11);
                }
            }
        }
    };

    /* End of a slice: sum the warps of each n-tile, then write C or a slot. */
    auto finish_slice = [&](int slice, bool whole_slice) {
        float4* reduce = reinterpret_cast<float4*>(smem_reduce);
#pragma unroll
        for (int mb = 0; mb < M_BLOCKS; mb++) {
            if (mb * 16 >= args.m) break;
            if (warp_k_group > 0) {
#pragma unroll
                for (int b = 0; b < 8; b++)
                    reduce[(((warp_k_group - 1) * N_TILES + warp_n_tile) * 8 + b) * 32 + lane] =
                        make_float4(acc[mb][b][0], acc[mb][b][1], acc[mb][b][2], acc[mb][b][3]);
            }
            __syncthreads();
            if (warp_k_group == 0) {
                for (int g = 1; g < Cfg::kKGroups; g++) {
#pragma unroll
                    for (int b = 0; b < 8; b++) {
                        float4 v = reduce[(((g - 1) * N_TILES + warp_n_tile) * 8 + b) * 32 + lane];
                        acc[mb][b][0] += v.x, acc[mb][b][1] += v.y, acc[mb][b][2] += v.z, acc[mb][b][3] += v.w;
                    }
                }
            }
            __syncthreads();
        }

        const int n_tile = slice * N_TILES + warp_n_tile;
        const bool writer = warp_k_group == 0 && n_tile < n_tiles_total;
        const int row_in_block = lane / 4, col_pair = lane % 4;
        auto store_c = [&]() {
#pragma unroll
            for (int mb = 0; mb < M_BLOCKS; mb++)
#pragma unroll
                for (int b = 0; b < 8; b++) {
                    int row = mb * 16 + row_in_block;
                    int col = n_tile * 64 + b * 8 + col_pair * 2;
                    if (row < args.m)
                        args.C[((size_t)row * n + col) / 2] = __floats2half2_rn(acc[mb][b][0], acc[mb][b][1]);
                    if (row + 8 < args.m)
                        args.C[((size_t)(row + 8) * n + col) / 2] =
                            __floats2half2_rn(acc[mb][b][2], acc[mb][b][3]);
                }
        };
        if (whole_slice) {
            if (writer) store_c();
            return;
        }

        /* Partial slice: publish this block's share in its slot. */
        const int slice_begin = slice * k_iters, slice_end = slice_begin + k_iters;
        auto slot_of = [&](int block) {
            bool head = block * args.iters_per_block >= slice_begin; /* its run starts in this slice */
            return args.partials + (size_t)(2 * block + (head ? 0 : 1)) * Cfg::kSlotFloats;
        };
        auto slot_index = [&](int mb, int b) { return ((warp_n_tile * M_BLOCKS + mb) * 8 + b) * 32 + lane; };
        /* Visits the accumulator pairs of rows < m with their float2 index in a
         * slot: only those rows go through the workspace (at m = 1, 1/16 of the tile). */
        auto for_each_valid_pair = [&](auto&& visit) {
#pragma unroll
            for (int mb = 0; mb < M_BLOCKS; mb++) {
                if (mb * 16 >= args.m) break;
                const bool lo = mb * 16 + row_in_block < args.m, hi = mb * 16 + row_in_block + 8 < args.m;
#pragma unroll
                for (int b = 0; b < 8; b++) {
                    if (lo) visit(2 * slot_index(mb, b), acc[mb][b][0], acc[mb][b][1]);
                    if (hi) visit(2 * slot_index(mb, b) + 1, acc[mb][b][2], acc[mb][b][3]);
                }
            }
        };
        if (writer) {
            float2* slot = reinterpret_cast<float2*>(slot_of(blockIdx.x));
            for_each_valid_pair([&](int i, float& x, float& y) { __stcg(slot + i, make_float2(x, y)); });
            __threadfence();
        }
        const int first_block = slice_begin / args.iters_per_block;
        const int last_block = (slice_end - 1) / args.iters_per_block;
        __syncthreads();
        if (tid == 0) {
            int arrived = atomicAdd(&args.counters[slice], 1);
            is_last_arrival = arrived == last_block - first_block;
            if (is_last_arrival) {
                args.counters[slice] = 0; /* every contributor has arrived: ready for the next call */
                __threadfence();
            }
        }
        __syncthreads();
        if (!is_last_arrival || !writer) return;
        /* Sum every contributor's slot in block order: the same order whoever arrives last. */
        clear_acc();
        for (int block = first_block; block <= last_block; block++) {
            const float2* slot = reinterpret_cast<const float2*>(slot_of(block));
            for_each_valid_pair([&](int i, float& x, float& y) {
                float2 v = __ldcg(slot + i);
                x += v.x, y += v.y;
            });
        }
        store_c();
    };

    /* Pipeline: STAGES-1 iterations in flight ahead of the one computed. The
     * (slice, k step) of the next load and of the computed iteration advance
     * incrementally: no divisions in the loop. */
    int load_slice = run_begin / k_iters, load_k_step = run_begin % k_iters;
    auto advance = [&](int& slice, int& k_step) {
        if (++k_step == k_iters) k_step = 0, slice++;
    };
    /* The weights do not depend on the previous kernel: fetch the first stages
     * of them before waiting for it, then A. The first commit group holds all
     * prologue weights, which only makes the first wait a little stricter. */
    {
        int slice_t = load_slice, k_step_t = load_k_step;
        for (int t = 0; t < STAGES - 1 && t < run_length; t++) {
            load_weights(t, slice_t, k_step_t);
            advance(slice_t, k_step_t);
        }
    }
    wait_for_previous_grid();
#pragma unroll
    for (int t = 0; t < STAGES - 1; t++) {
        if (t < run_length) {
            load_activations(t, load_k_step);
            advance(load_slice, load_k_step);
        }
        copy_async_commit();
    }
    allow_next_grid();
    int slice = run_begin / k_iters, k_step = run_begin % k_iters;
    int slice_first_t = 0; /* iteration of this run where the current slice began */
    int stage_index = 0, load_stage = STAGES - 1;
    for (int t = 0; t < run_length; t++) {
        copy_async_wait<STAGES - 2>();
        __syncthreads();
        if (t + STAGES - 1 < run_length) {
            load_activations(load_stage, load_k_step);
            load_weights(load_stage, load_slice, load_k_step);
            advance(load_slice, load_k_step);
        }
        copy_async_commit();
        load_stage = load_stage == STAGES - 1 ? 0 : load_stage + 1;
        compute_iteration(stage_index, slice, k_step);
        stage_index = stage_index == STAGES - 1 ? 0 : stage_index + 1;

        if (k_step == k_iters - 1 || t == run_length - 1) {
            /* Whole if this run covered the slice from k step 0 to the last. */
            const bool whole_slice = k_step == k_iters - 1 && k_step == t - slice_first_t;
            finish_slice(slice, whole_slice);
            clear_acc();
            slice_first_t = t + 1;
        }
        advance(slice, k_step);
    }
    copy_async_wait<0>();
}

}  // namespace marlin
