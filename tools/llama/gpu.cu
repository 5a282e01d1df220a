/*
 * gpu.cu: the GPU backend (see gpu.h): weights upload, small kernels, and
 * the forward pass built from cuBLAS / marlin_matmul calls and these kernels.
 *
 * Data on the device:
 *   residual x        fp32 rows x dim (kept in fp32 so long residual sums do not drift)
 *   activations       fp16: xn (rows x dim), qkv, attn, proj, gate_up, hidden
 *   KV cache          fp16, layers x max_seqs x max_ctx x kv_dim (keys already rotated)
 *   dense weights     fp16 n x k (torch layout), multiplied by cublasGemmEx with
 *                     op(A) = transpose, so no re-layout is needed
 *   int4 weights      marlin_pack's output, multiplied by marlin_matmul; gate/up
 *                     with its columns interleaved (marlin_interleave_gate_up) and
 *                     multiplied by marlin_matmul_swiglu, which writes the SwiGLU
 * A decode step should cost little more than reading the weights once, so
 * the small kernels are shaped for few rows (see docs/llama.md, "Where a
 * decode step's time goes"): per layer of a decode step 8 launches (qkv
 * GEMM, attention with RoPE and the cache write, out GEMM, residual add
 * fused with the next RMSNorm, gate_up GEMM, SwiGLU, down GEMM, residual add
 * + RMSNorm; 7 with int4 weights, whose gate_up GEMM ends in the SwiGLU;
 * prompts add a cache write before attention); each is shaped to
 * need few dependent round trips to memory, which is what it costs at batch
 * 1: the norm keeps its row in registers between its one load and one store,
 * attention spreads each (head, row) over 8-32 warps (by the batch size)
 * whose groups of lanes read a position's key and value rows with 16-byte
 * loads (128 positions per round with 32 warps and head_dim 128), with a
 * running softmax per lane group, and SwiGLU moves 16 bytes per access;
 * RoPE angles come
 * from a table built once; on sm_90+ the small kernels launch with
 * programmatic dependent launch, as Marlin does, and let the next kernel
 * launch before they wait (begin_dependent_kernel), so each launch overlaps
 * the previous kernels' tails; no allocation, memset or
 * synchronization inside a step (one pinned copy of the row ids in, one
 * stream synchronization at the end).
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "gpu.h"
#include "marlin.h"
}

namespace {

constexpr int kThreads = 256;
constexpr int kNormValuesPerThread = 16;  // residual_rmsnorm_kernel: registers per thread for x (and weight)
constexpr int kNormMaxThreads = 1024;
constexpr int kNormMaxDim = kNormValuesPerThread * kNormMaxThreads;
constexpr int kAttentionMaxThreads = 1024;  // attention_kernel: up to 32 warps per (head, row)
/* attention_kernel's block sizes, warps per (head, row), in launch_attention's table order */
constexpr int kAttentionWarpCounts[] = {8, 16, 32};
constexpr int kAttentionSizes = sizeof(kAttentionWarpCounts) / sizeof(kAttentionWarpCounts[0]);
constexpr int kMaxHeadDim = 256;
constexpr int kSwigluThreads = 128;
/* The RMSNorms are folded into the int4 multiplies up to this many rows (of
 * MARLIN_RMS_MAX_ROWS): measured on the H100 with llama2-7b shapes, 2-3%
 * faster at 1-8 rows, 0.7% slower at 16, where the 16-row kernels' RMSNorm
 * epilogues spill (docs/llama.md). */
constexpr int kFusedNormMaxRows = 8;

/* attention_kernel: positions each lane group loads per round, by the
 * pairs of a head each lane holds: as many as fit in the 64 registers a
 * thread of a 1024-thread block has, with no spills (ptxas -v). */
__host__ __device__ constexpr int attention_unroll(int pairs_per_lane) { return pairs_per_lane <= 2 ? 8 : pairs_per_lane == 3 ? 4 : 2; }

struct gpu_linear {
    int n = 0, k = 0, group_size = 0;  // group_size 0: dense fp16
    __half* weight = nullptr;          // dense: n x k fp16
    void* packed_b = nullptr;          // int4: k*n/8 uint32
    void* packed_scales = nullptr;     // int4: ceil(k/g) x n fp16
};

struct gpu_layer {
    float* attn_norm = nullptr;  // dim
    float* ffn_norm = nullptr;   // dim
    gpu_linear qkv, out, down;
    gpu_linear gate_up;  // int4: columns in marlin_interleave_gate_up's order, for marlin_matmul_swiglu
};

void set_error(char* error, size_t error_bytes, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error, error_bytes, fmt, args);
    va_end(args);
}

}  // namespace

struct llama_gpu {
    llama_config config;
    int max_rows = 0, max_seqs = 0, max_ctx = 0;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    __half* embedding = nullptr;  // vocab x dim
    __half* output = nullptr;     // vocab x dim (== embedding when tied)
    float* output_norm = nullptr; // dim
    gpu_layer* layers = nullptr;  // n_layers (host array of device pointers)
    __half* key_cache = nullptr;
    __half* value_cache = nullptr;
    float* x = nullptr;
    __half *xn = nullptr, *qkv = nullptr, *attn = nullptr, *proj = nullptr, *gate_up = nullptr, *hidden = nullptr;
    float* logits = nullptr;      // max_rows x vocab
    /* one device block of 3 x max_rows ints (tokens, sequences, positions)
     * filled by one copy from a pinned host mirror per call */
    int* row_ids = nullptr;
    int* host_row_ids = nullptr;  // pinned, 3 x max_rows
    int *tokens = nullptr, *seq_ids = nullptr, *positions = nullptr;  // max_rows each, inside row_ids
    float2* rope_table = nullptr;  // max_ctx x rope_dim/2 (cos, sin)
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
    void* cublas_workspace = nullptr; /* our own, so cuBLAS allocates nothing during graph capture */
    size_t weight_bytes = 0;
    int dependent_launch = 0;  /* sm_90+: small kernels launch with programmatic dependent launch */
    /* CUDA graphs of the forward pass for small row counts (decode steps):
     * one per row count and kind of call (index 1: every row its own
     * sequence, see attention_kernel), captured on first use; use_graphs is
     * 0 after a failed capture. */
    int use_graphs = 1;
    cudaGraphExec_t graphs[2][65] = {};
    int linear_only = 0; /* see llama_gpu_set_linear_only */
    int attention_warps = 0; /* see llama_gpu_set_attention_warps; 0: by the row count */
    /* RMSNorm folded into the int4 multiplies (see enqueue_forward): on
     * unless llama_gpu_set_fused_norms turned it off; possible where every
     * linear layer is int4 */
    int fused_norms = 1;
    int all_int4 = 0;
    float* sumsq[2] = {};  /* max_rows x dim/64 each: the sums of squares for the attention / MLP norm */
};

/* ------------------------------------------------------------- kernels -- */

/* First statement of every kernel that launch() starts (every thread runs
 * it, before any read or write of memory, so no block can finish without
 * having waited): let the next kernel begin launching, then wait until the
 * previous kernel on the stream has finished and its writes are visible.
 * Triggering before waiting lets the next kernel's blocks be scheduled while
 * the previous one's tail still runs (a Marlin layer fetches its first
 * weights then: they depend on nothing). The next kernel waits for this
 * grid's completion before it touches memory, and a grid completes only
 * after it has waited for its predecessor, so a kernel sees the writes of all
 * earlier ones; and the next grid can launch only once every block of this
 * one has started, so waiting blocks never hold back an earlier grid. No-ops
 * before sm_90 and in plain launches. attention_kernel and
 * residual_rmsnorm_kernel call the two halves themselves, and between them
 * read only what the host wrote before the pass (row ids, copied in before
 * it; weights and tables, at set-up): the pass's first kernel starts after
 * that copy (copies do not trigger early), and every later one only once
 * all blocks of the one before have started, so every kernel of the pass
 * starts after it. */
__device__ __forceinline__ void allow_next_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void begin_dependent_kernel() {
    allow_next_kernel();
    wait_for_previous_kernel();
}

/* Asks L2 for the 128-byte line holding p (a hint: it changes no data). */
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* 2^x (MUFU.EX2, flushing denormal results to 0; 2^-inf = 0): the
 * attention scores are kept in log2 units so each exponential is one
 * instruction. */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Sum over the kLanes consecutive lanes of a lane group (kLanes a power of
 * two dividing 32); every lane of the group gets it. */
template <int kLanes>
__device__ float lane_group_sum(float v) {
#pragma unroll
    for (int o = kLanes / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block-wide sum; every thread gets the total. blockDim.x <= 1024, multiple of 32. */
__device__ float block_sum(float v, float* shared /* 32 floats */) {
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) total += shared[w];
    return total;
}

/* x = the tokens' embeddings, one block per row. With a weight (the
 * first norm's, when the norms are folded into the multiplies, dim % 64 ==
 * 0): also xw = fp16(x . weight) and the sums of x^2 over each 64 columns,
 * what marlin_matmul_rms_scaled takes (a warp per 64 columns). */
__global__ void embed_kernel(const __half* embedding, const int* tokens, float* x /* rows x dim */, int dim,
                             const float* weight /* dim, or NULL */, __half* xw /* rows x dim */,
                             float* sumsq /* rows x dim/64 */) {
    begin_dependent_kernel();
    int row = blockIdx.x;
    const __half* e = embedding + (size_t)tokens[row] * dim;
    if (!weight) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) x[(size_t)row * dim + i] = __half2float(e[i]);
        return;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int g = warp; g < dim / 64; g += blockDim.x / 32) {
        int i = 64 * g + 2 * lane;
        float2 v = __half22float2(*(const __half2*)(e + i));
        *(float2*)(x + (size_t)row * dim + i) = v;
        *(__half2*)(xw + (size_t)row * dim + i) = __floats2half2_rn(v.x * weight[i], v.y * weight[i + 1]);
        float squares = warp_sum(v.x * v.x + v.y * v.y);
        if (lane == 0) sumsq[(size_t)row * (dim / 64) + g] = squares;
    }
}

/* W consecutive values moved with one access (W * 4 or W * 2 bytes, which
 * the address must be aligned to), converted to or from fp32. */
template <typename T, int W>
struct alignas(sizeof(T) * W) packed_values {
    T v[W];
};
template <int W>
__device__ void load_floats(const float* p, float (&v)[W]) {
    packed_values<float, W> t = *(const packed_values<float, W>*)p;
#pragma unroll
    for (int e = 0; e < W; e++) v[e] = t.v[e];
}
template <int W>
__device__ void store_floats(float* p, const float (&v)[W]) {
    packed_values<float, W> t;
#pragma unroll
    for (int e = 0; e < W; e++) t.v[e] = v[e];
    *(packed_values<float, W>*)p = t;
}
template <int W>
__device__ void load_halves(const __half* p, float (&v)[W]) {
    packed_values<__half, W> t = *(const packed_values<__half, W>*)p;
#pragma unroll
    for (int e = 0; e < W; e++) v[e] = __half2float(t.v[e]);
}
template <int W>
__device__ void store_halves(__half* p, const float (&v)[W]) {
    packed_values<__half, W> t;
#pragma unroll
    for (int e = 0; e < W; e++) t.v[e] = __float2half(v[e]);
    *(packed_values<__half, W>*)p = t;
}

/* kPairs consecutive half2 pairs (4, 8 or 16 bytes, which the address must
 * be aligned to) in one load, or zeros where !ok. Volatile asm, so the
 * compiler issues each load where it is written (attention_kernel issues a
 * round's loads before using any; a plain load would be sunk into the
 * branch that uses it). */
template <int kPairs>
__device__ __forceinline__ packed_values<__half2, kPairs> load_pairs(const __half2* p, bool ok) {
    static_assert(kPairs == 1 || kPairs == 2 || kPairs == 4, "4, 8 or 16-byte loads");
    uint32_t r[4] = {0u, 0u, 0u, 0u};
    if constexpr (kPairs == 4)
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\t@q ld.global.v4.b32 {%0, %1, %2, %3}, [%4];\n\t}"
                     : "+r"(r[0]), "+r"(r[1]), "+r"(r[2]), "+r"(r[3])
                     : "l"(p), "r"((int)ok));
    else if constexpr (kPairs == 2)
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %3, 0;\n\t@q ld.global.v2.b32 {%0, %1}, [%2];\n\t}"
                     : "+r"(r[0]), "+r"(r[1])
                     : "l"(p), "r"((int)ok));
    else
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %2, 0;\n\t@q ld.global.b32 %0, [%1];\n\t}"
                     : "+r"(r[0])
                     : "l"(p), "r"((int)ok));
    packed_values<__half2, kPairs> out;
#pragma unroll
    for (int e = 0; e < kPairs; e++) out.v[e] = *reinterpret_cast<const __half2*>(&r[e]);
    return out;
}

/* x += y (when y is not NULL), then out = RMSNorm(x) . weight; one block per
 * row of ceil(dim / kNormValuesPerThread) threads, rounded up to warps
 * (launch_norm). Every residual add is followed by a norm (the next
 * sub-layer's or the output's), so fusing them saves a launch and a pass
 * over x. A decode step runs this at batch 1 on one SM, so its time is
 * memory latency: each thread loads its (at most kNormValuesPerThread)
 * values of the weight before waiting for the previous kernel, then those
 * of x and y at once, in W-wide accesses (W = 4 where dim allows, else 2),
 * keeps them in registers across the block sum and writes x and out once:
 * two dependent round trips to memory instead of one per value. All stores
 * follow all loads, so the aliasing of x's loads and stores cannot
 * serialize them. */
template <int W>
__global__ void __launch_bounds__(kNormMaxThreads)
    residual_rmsnorm_kernel(float* x /* rows x dim */, const __half* y /* rows x dim or NULL */,
                            const float* weight /* dim */, __half* out /* rows x dim */, int dim, float eps) {
    constexpr int kChunks = kNormValuesPerThread / W;
    __shared__ float shared[32];
    int row = blockIdx.x, chunks = dim / W;
    float* xr = x + (size_t)row * dim;
    const __half* yr = y ? y + (size_t)row * dim : nullptr;
    float v[kChunks][W], w[kChunks][W];
    /* the weight (written at set-up) before waiting for the previous kernel */
    allow_next_kernel();
#pragma unroll
    for (int c = 0; c < kChunks; c++) {
        int chunk = threadIdx.x + c * blockDim.x;
#pragma unroll
        for (int e = 0; e < W; e++) w[c][e] = 0.0f;
        if (chunk < chunks) load_floats(weight + chunk * W, w[c]);
    }
    wait_for_previous_kernel();
#pragma unroll
    for (int c = 0; c < kChunks; c++) {
        int chunk = threadIdx.x + c * blockDim.x;
#pragma unroll
        for (int e = 0; e < W; e++) v[c][e] = 0.0f;
        if (chunk >= chunks) continue;
        load_floats(xr + chunk * W, v[c]);
        if (yr) {
            float add[W];
            load_halves(yr + chunk * W, add);
#pragma unroll
            for (int e = 0; e < W; e++) v[c][e] += add[e];
        }
    }
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; c++) {
        int chunk = threadIdx.x + c * blockDim.x;
        if (yr && chunk < chunks) store_floats(xr + chunk * W, v[c]);
#pragma unroll
        for (int e = 0; e < W; e++) sum += v[c][e] * v[c][e];
    }
    sum = block_sum(sum, shared);
    float inv = rsqrtf(sum / dim + eps);
#pragma unroll
    for (int c = 0; c < kChunks; c++) {
        int chunk = threadIdx.x + c * blockDim.x;
        if (chunk >= chunks) continue;
        float normed[W];
#pragma unroll
        for (int e = 0; e < W; e++) normed[e] = v[c][e] * inv * w[c][e];
        store_halves(out + (size_t)row * dim + chunk * W, normed);
    }
}

/* cos/sin of position * base^(-2i/rope_dim) for every position < max_ctx and
 * i < rope_dim/2, in double as the CPU backend computes them; filled once at
 * set-up so the per-step kernels only read it. */
__global__ void rope_table_kernel(float2* table /* max_ctx x rope_dim/2: (cos, sin) */, int max_ctx, int rope_dim,
                                  float rope_base) {
    int half_rope = rope_dim / 2;
    for (size_t item = blockIdx.x * (size_t)blockDim.x + threadIdx.x; item < (size_t)max_ctx * half_rope;
         item += (size_t)gridDim.x * blockDim.x) {
        int pos = (int)(item / half_rope), i = (int)(item % half_rope);
        double angle = pos * pow((double)rope_base, -2.0 * i / rope_dim);
        table[item] = make_float2((float)cos(angle), (float)sin(angle));
    }
}

/* RoPE rotation of one adjacent pair (GGUF order) by (cos, sin). Explicitly
 * rounded operations, never contracted into FMAs, so a key rotated by
 * cache_write_kernel and by attention_kernel has the same bits. */
__device__ float2 rotate(float2 ab, float2 cs) {
    return make_float2(__fsub_rn(__fmul_rn(ab.x, cs.x), __fmul_rn(ab.y, cs.y)),
                       __fadd_rn(__fmul_rn(ab.x, cs.y), __fmul_rn(ab.y, cs.x)));
}

/* A key pair as the cache stores it: rotated in fp32, rounded to fp16. */
__device__ __half2 rotate_key(__half2 k, float2 cs) {
    float2 r = rotate(__half22float2(k), cs);
    return __floats2half2_rn(r.x, r.y);
}

/* Calls where some sequence has several rows (a prompt): every row's rotated
 * keys and values go into the cache before attention runs, so each row sees
 * the earlier positions of its own call. One block per row; pairs as half2
 * (head_dim is even). Decode steps skip it: attention writes the cache. */
__global__ void cache_write_kernel(const __half* qkv /* rows x (q_dim + 2 kv_dim) */, const int* seq_ids,
                                   const int* positions, const float2* rope_table /* max_ctx x rope_dim/2 */,
                                   __half* key_cache, __half* value_cache, int n_heads, int n_kv_heads, int head_dim,
                                   int rope_dim, int max_seqs, int max_ctx, int layer) {
    begin_dependent_kernel();
    int row = blockIdx.x;
    int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim, pairs = head_dim / 2;
    const __half2* k = (const __half2*)(qkv + (size_t)row * (q_dim + 2 * kv_dim) + q_dim);
    const __half2* v = k + kv_dim / 2;
    int pos = positions[row];
    const float2* angles = rope_table + (size_t)pos * (rope_dim / 2);
    size_t slot = (((size_t)layer * max_seqs + seq_ids[row]) * max_ctx + pos) * kv_dim;
    __half2* kc = (__half2*)(key_cache + slot);
    __half2* vc = (__half2*)(value_cache + slot);
    for (int i = threadIdx.x; i < kv_dim / 2; i += blockDim.x) {
        int pair = i % pairs;
        kc[i] = pair < rope_dim / 2 ? rotate_key(k[i], angles[pair]) : k[i];
        vc[i] = v[i];
    }
}

/* Attention of one query head of one row, with RoPE: one block of kWarps
 * warps per (head, row) (launch_attention picks kWarps by the row count).
 * Positions before the row's own come from the cache, its own position from
 * what the block holds (the key it rotates itself, the value straight from
 * qkv), so no block depends on a cache write of the same launch.
 * write_cache (decode steps, every row its own sequence): the first query
 * head of each KV group also stores the row's rotated key and value in the
 * cache, one writer per (KV head, row), and no block of the launch reads
 * that slot (other rows are other sequences; the other heads of the group
 * use their own copy). Otherwise (a prompt, whose rows read each other's
 * positions) cache_write_kernel has stored every row's before this launch.
 *
 * At batch 1 only n_heads blocks run, so the kernel's time is the number of
 * dependent round trips to memory and the instructions each SM issues, and
 * it is shaped for few of both. A position's key and value rows are read by
 * a group of kLanes lanes, each loading kChunks chunks of kChunkPairs
 * consecutive half2 pairs (16-byte loads where head_dim % 8 == 0: with
 * head_dim 128, 16 lanes of 8 values, two positions per warp), so a score
 * needs log2(kLanes) shuffles and a lane converts and multiplies 8 values
 * per load. Every warp rotates its own copy of the query (no barrier before
 * the main loop); the row's own position seeds the running softmax of lane
 * group 0 of warp 0. A round loads the keys and values (which do not depend
 * on the scores) of kUnroll positions per lane group before using any:
 * kWarps * (32 / kLanes) * kUnroll positions per round (with 32 warps, 128
 * at head_dim 128 and 256 at 64); a warp skips the unrolled steps that lie
 * wholly past the row's position. Before it waits for the previous kernel
 * (the qkv projection), the block asks L2 for the cached keys and values of
 * its first round, which earlier calls or this call's cache_write_kernel wrote (a
 * prefetch changes no data, so it is safe whatever it finds), and loads its
 * row's position, sequence and RoPE angles, which the host copied in before
 * the forward pass's first kernel (every kernel of the pass starts after
 * that copy: see allow_next_kernel). Each lane group keeps a running softmax (its
 * maximum score, its sum of exponentials, its weighted sum of values,
 * rescaled when the maximum grows); the groups of a warp are combined by
 * shuffles and the warps at the end through shared memory, in a fixed
 * order, so the output bits do not vary from run to run. No shared memory
 * grows with the context. */
template <int kChunkPairs, int kChunks, int kLanes, int kWarps>
__global__ void __launch_bounds__(kAttentionMaxThreads)
    attention_kernel(const __half* qkv /* rows x (q_dim + 2 kv_dim) */, const int* seq_ids, const int* positions,
                     const float2* rope_table /* max_ctx x rope_dim/2 */, __half* key_cache, __half* value_cache,
                     __half* out /* rows x q_dim */, int n_heads, int n_kv_heads, int head_dim, int rope_dim,
                     int max_seqs, int max_ctx, int layer, int write_cache) {
    constexpr int kGroups = 32 / kLanes;                 // positions per warp and unrolled step
    constexpr int kGroupPairs = kLanes * kChunks * kChunkPairs;  // pairs one lane group covers
    constexpr int kUnroll = attention_unroll(kChunks * kChunkPairs);
    constexpr int kRound = kWarps * kGroups * kUnroll;  // positions per round
    using chunk = packed_values<__half2, kChunkPairs>;
    static_assert(32 % kLanes == 0, "lane groups tile a warp");
    __shared__ float2 partial[kWarps][kGroupPairs];  // each warp's weighted sum of values
    __shared__ float warp_max[kWarps], warp_total[kWarps];
    allow_next_kernel();
    int head = blockIdx.x, row = blockIdx.y;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / kLanes, sub = lane % kLanes;
    int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim, pairs = head_dim / 2;
    int heads_per_kv = n_heads / n_kv_heads, kv_head = head / heads_per_kv;
    int pos = positions[row];
    const __half* row_qkv = qkv + (size_t)row * (q_dim + 2 * kv_dim);
    const __half2* qr = (const __half2*)(row_qkv + (size_t)head * head_dim);
    const __half2* kr = (const __half2*)(row_qkv + q_dim + (size_t)kv_head * head_dim);
    const __half2* vr = (const __half2*)(row_qkv + q_dim + kv_dim + (size_t)kv_head * head_dim);
    const float2* angles = rope_table + (size_t)pos * (rope_dim / 2);
    size_t base = ((size_t)layer * max_seqs + seq_ids[row]) * max_ctx * kv_dim + (size_t)kv_head * head_dim;
    __half2* keys = (__half2*)(key_cache + base);      // position t at keys + t * kv_dim / 2
    __half2* values = (__half2*)(value_cache + base);  // likewise
    size_t stride = (size_t)kv_dim / 2;
    /* first pair of chunk c of this lane; pairs past head_dim stay zero in
     * q, so they add nothing to a score (chunks lie wholly inside or past) */
    auto first_pair = [&](int c) { return (sub + kLanes * c) * kChunkPairs; };
    {
        /* the cached key and value rows of the first round's positions into
         * L2, one prefetch per 128 bytes (all positions < pos: slower where
         * they outgrow L2, 7-12% at 8-16 rows and context 1024) */
        const int lines = (head_dim * 2 + 127) / 128;
        const int first_round = pos < kRound ? pos : kRound;
        for (int i = threadIdx.x; i < 2 * lines * first_round; i += blockDim.x) {
            int t = i / (2 * lines), line = i % (2 * lines);
            const __half2* row_start = (line < lines ? keys : values) + (size_t)t * stride;
            prefetch_l2((const char*)row_start + 128 * (line % lines));
        }
    }
    float2 rotation[kChunks][kChunkPairs];  // (cos, sin) of each pair this lane holds (pairs past rope_dim: unused)
#pragma unroll
    for (int c = 0; c < kChunks; c++)
#pragma unroll
        for (int e = 0; e < kChunkPairs; e++)
            rotation[c][e] = first_pair(c) + e < rope_dim / 2 ? angles[first_pair(c) + e] : make_float2(1.0f, 0.0f);
    wait_for_previous_kernel();

    /* the query (rotated, and scaled so that scores come out in log2 units
     * for exp2) and the row's own key, rotated; the own value */
    const float score_scale = rsqrtf((float)head_dim) * 1.4426950408889634f;
    float2 q[kChunks][kChunkPairs], acc[kChunks][kChunkPairs];
    float own_dot = 0.0f;
    const bool seeds = warp == 0 && group == 0;  // the lane group whose softmax starts at the own position
#pragma unroll
    for (int c = 0; c < kChunks; c++) {
        int p0 = first_pair(c);
        bool inside = p0 < pairs;
        chunk qc = load_pairs<kChunkPairs>(qr + p0, inside);
        chunk kc = load_pairs<kChunkPairs>(kr + p0, inside);
        chunk vc = load_pairs<kChunkPairs>(vr + p0, inside);
#pragma unroll
        for (int e = 0; e < kChunkPairs; e++) {
            q[c][e] = __half22float2(qc.v[e]);
            if (p0 + e < rope_dim / 2) {
                q[c][e] = rotate(q[c][e], rotation[c][e]);
                kc.v[e] = rotate_key(kc.v[e], rotation[c][e]);
            }
            q[c][e].x *= score_scale;
            q[c][e].y *= score_scale;
            float2 kf = __half22float2(kc.v[e]), vf = __half22float2(vc.v[e]);
            own_dot = fmaf(q[c][e].y, kf.y, fmaf(q[c][e].x, kf.x, own_dot));
            acc[c][e] = seeds ? vf : make_float2(0.0f, 0.0f);
        }
        if (write_cache && head % heads_per_kv == 0 && seeds && inside) {
            *(chunk*)(keys + (size_t)pos * stride + p0) = kc;
            *(chunk*)(values + (size_t)pos * stride + p0) = vc;
        }
    }
    own_dot = lane_group_sum<kLanes>(own_dot);
    float max_score = seeds ? own_dot : -INFINITY, total = seeds ? 1.0f : 0.0f;
    /* the running softmax's sum of exponentials and weighted values times f */
    auto scale_sums = [&](float f) {
        total *= f;
#pragma unroll
        for (int c = 0; c < kChunks; c++)
#pragma unroll
            for (int e = 0; e < kChunkPairs; e++) {
                acc[c][e].x *= f;
                acc[c][e].y *= f;
            }
    };

    const int lane_first = warp * kGroups + group;      // this lane's position in a round's first step
    const size_t step_stride = (size_t)kWarps * kGroups * stride;  // between unrolled steps
    const __half2* key_row = keys + lane_first * stride;
    const __half2* value_row = values + lane_first * stride;
    for (int t0 = 0; t0 < pos; t0 += kRound, key_row += kUnroll * step_stride, value_row += kUnroll * step_stride) {
        chunk k[kUnroll][kChunks], v[kUnroll][kChunks];
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            bool cached = t0 + lane_first + u * kWarps * kGroups < pos;
#pragma unroll
            for (int c = 0; c < kChunks; c++) {
                int p0 = first_pair(c);
                k[u][c] = load_pairs<kChunkPairs>(key_row + u * step_stride + p0, cached && p0 < pairs);
                v[u][c] = load_pairs<kChunkPairs>(value_row + u * step_stride + p0, cached && p0 < pairs);
            }
        }
        float score[kUnroll], round_max = -INFINITY;
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            int warp_first = t0 + (u * kWarps + warp) * kGroups;  // the same in every lane of the warp
            score[u] = -INFINITY;
            if (warp_first >= pos) continue;
            float dot = 0.0f;
#pragma unroll
            for (int c = 0; c < kChunks; c++)
#pragma unroll
                for (int e = 0; e < kChunkPairs; e++) {
                    float2 kf = __half22float2(k[u][c].v[e]);
                    dot = fmaf(q[c][e].y, kf.y, fmaf(q[c][e].x, kf.x, dot));
                }
            dot = lane_group_sum<kLanes>(dot);
            if (warp_first + group < pos) score[u] = dot;
            round_max = fmaxf(round_max, score[u]);
        }
        /* new_max is -inf only for a group that has had no position yet (its
         * sums are 0): shift by 0 then, so no exponent is -inf - -inf */
        float new_max = fmaxf(max_score, round_max), shift = new_max == -INFINITY ? 0.0f : new_max;
        scale_sums(fast_exp2(max_score - shift));
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            if (t0 + (u * kWarps + warp) * kGroups >= pos) continue;
            float p = fast_exp2(score[u] - shift);  // 0 for a position past the row's
            total += p;
#pragma unroll
            for (int c = 0; c < kChunks; c++)
#pragma unroll
                for (int e = 0; e < kChunkPairs; e++) {
                    float2 vf = __half22float2(v[u][c].v[e]);
                    acc[c][e].x += p * vf.x;
                    acc[c][e].y += p * vf.y;
                }
        }
        max_score = new_max;
    }

    /* the warp's lane groups combined into group 0 (butterfly: a fixed order) */
    float best = max_score;
#pragma unroll
    for (int o = kLanes; o < 32; o <<= 1) best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, o));
    scale_sums(max_score == -INFINITY ? 0.0f : fast_exp2(max_score - best));
#pragma unroll
    for (int o = kLanes; o < 32; o <<= 1) {
        total += __shfl_xor_sync(0xffffffffu, total, o);
#pragma unroll
        for (int c = 0; c < kChunks; c++)
#pragma unroll
            for (int e = 0; e < kChunkPairs; e++) {
                acc[c][e].x += __shfl_xor_sync(0xffffffffu, acc[c][e].x, o);
                acc[c][e].y += __shfl_xor_sync(0xffffffffu, acc[c][e].y, o);
            }
    }
    if (lane == 0) {
        warp_max[warp] = best;  // -inf for a warp without positions (its total and sums are 0)
        warp_total[warp] = total;
    }
    if (group == 0) {
#pragma unroll
        for (int c = 0; c < kChunks; c++)
#pragma unroll
            for (int e = 0; e < kChunkPairs; e++) partial[warp][first_pair(c) + e] = acc[c][e];
    }
    __syncthreads();

    /* the warps combined: lane w of each output warp weighs warp w */
    if (threadIdx.x >= (pairs + 31) / 32 * 32) return;
    float w_max = lane < kWarps ? warp_max[lane] : -INFINITY, overall_max = w_max;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) overall_max = fmaxf(overall_max, __shfl_xor_sync(0xffffffffu, overall_max, o));
    float w_weight = fast_exp2(w_max - overall_max);  // overall_max is finite (warp 0 has the own position)
    float sum_total = warp_sum(lane < kWarps ? w_weight * warp_total[lane] : 0.0f);
    int i = threadIdx.x;
    float2 sum = make_float2(0.0f, 0.0f);
#pragma unroll 8
    for (int w = 0; w < kWarps; w++) {
        float wt = __shfl_sync(0xffffffffu, w_weight, w);
        if (i < pairs) {
            sum.x += wt * partial[w][i].x;
            sum.y += wt * partial[w][i].y;
        }
    }
    float inv_total = 1.0f / sum_total;
    if (i < pairs) {
        __half2* o = (__half2*)(out + (size_t)row * q_dim + (size_t)head * head_dim);
        o[i] = __floats2half2_rn(sum.x * inv_total, sum.y * inv_total);
    }
}

/* hidden = silu(gate) * up, W values per thread (8: 16-byte accesses, where
 * ffn allows; else 1); grid (ceil(ffn / (W kSwigluThreads)), rows). */
template <int W>
__global__ void __launch_bounds__(kSwigluThreads)
    swiglu_kernel(const __half* gate_up /* rows x 2 ffn */, __half* hidden /* rows x ffn */, int ffn) {
    begin_dependent_kernel();
    int row = blockIdx.y, i = (blockIdx.x * blockDim.x + threadIdx.x) * W;
    if (i >= ffn) return;
    const __half* g = gate_up + (size_t)row * 2 * ffn;
    float a[W], b[W], h[W];
    load_halves(g + i, a);
    load_halves(g + ffn + i, b);
#pragma unroll
    for (int e = 0; e < W; e++) h[e] = a[e] / (1.0f + __expf(-a[e])) * b[e];
    store_halves(hidden + (size_t)row * ffn + i, h);
}

/* splitmix64 of the index: reproducible synthetic data without cuRAND. */
__device__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__global__ void fill_half_kernel(__half* p, size_t count, float amplitude, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        double u = (double)(mix64(seed + i * 0x9E3779B97F4A7C15ull) >> 11) / 9007199254740992.0;
        p[i] = __float2half((float)(2.0 * u - 1.0) * amplitude);
    }
}
__global__ void fill_words_kernel(uint32_t* p, size_t count, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint32_t)mix64(seed + i * 0x9E3779B97F4A7C15ull);
}
__global__ void fill_float_kernel(float* p, size_t count, float value) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        p[i] = value;
}

/* ------------------------------------------------------------- helpers -- */

namespace {

#define CUDA_TRY(call)                                                                                  \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            set_error(error, error_bytes, "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
                      __LINE__);                                                                        \
            return -1;                                                                                  \
        }                                                                                               \
    } while (0)

/* Launches one of the forward pass's small kernels on gpu->stream. On sm_90+
 * as a programmatic dependent launch, like marlin_matmul's: the kernel may
 * be scheduled while the previous one finishes, hiding the launch gap, and
 * waits for it in begin_dependent_kernel(). After a kernel that does not
 * trigger early (cuBLAS) or a copy it simply starts when that one is done;
 * in stream capture the attribute becomes a programmatic graph edge.
 * Without the attribute (older GPUs) this is a plain launch. */
template <typename... Params, typename... Args>
int launch(const llama_gpu* gpu, const char* name, void (*kernel)(Params...), dim3 grid, int threads,
           size_t shared_bytes, char* error, size_t error_bytes, Args... args) {
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = gpu->stream;
    config.attrs = &attribute;
    config.numAttrs = gpu->dependent_launch ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&config, kernel, args...);
    if (e != cudaSuccess) {
        set_error(error, error_bytes, "launch of %s failed: %s", name, cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* The three per-layer kernels with the variant and shape the config needs
 * (widest accesses its dimensions allow, see the kernels). */
int launch_norm(const llama_gpu* gpu, const __half* y, const float* weight, int n_rows, char* error,
                size_t error_bytes) {
    const llama_config& c = gpu->config;
    /* every thread fills its kNormValuesPerThread registers; at least a warp */
    int threads = (c.dim + kNormValuesPerThread - 1) / kNormValuesPerThread;
    threads = threads < 32 ? 32 : (threads + 31) / 32 * 32;
    return launch(gpu, "residual_rmsnorm_kernel", c.dim % 4 ? residual_rmsnorm_kernel<2> : residual_rmsnorm_kernel<4>,
                  n_rows, threads, 0, error, error_bytes, gpu->x, y, weight, gpu->xn, c.dim, c.norm_eps);
}

/* Warps per (head, row) for attention_kernel: gpu->attention_warps where
 * set (llama_gpu_set_attention_warps), else by the row count. Measured on
 * the H100 with llama2-7b shapes at contexts 128-192 (docs/llama.md): up to
 * 4 rows, 32 warps take the context in one round (the blocks are few);
 * 5-8 rows run best with 16 and more rows with 8, whose smaller blocks all
 * fit on the device at once (512 blocks of 8 warps at 16 rows). */
int attention_warps(const llama_gpu* gpu, int n_rows) {
    if (gpu->attention_warps) return gpu->attention_warps;
    return n_rows <= 4 ? 32 : n_rows <= 8 ? 16 : 8;
}

/* Position of `warps` in kAttentionWarpCounts, or -1. */
int attention_size_index(int warps) {
    for (int i = 0; i < kAttentionSizes; i++)
        if (kAttentionWarpCounts[i] == warps) return i;
    return -1;
}

/* attention_kernel's lane layouts, in launch_attention's table order:
 * where head_dim % 8 == 0, 16-byte chunks (4 pairs) with 4, 8, 16 or 32
 * lanes per position (head_dim up to 32, 64, 128, 256); otherwise 4-byte
 * chunks, 32 lanes per position, 1-4 chunks per lane. */
constexpr int kAttentionLayouts = 8;
int attention_layout(int head_dim) {
    if (head_dim % 8 == 0) return head_dim <= 32 ? 0 : head_dim <= 64 ? 1 : head_dim <= 128 ? 2 : 3;
    return 4 + (head_dim / 2 - 1) / 32;  // head_dim <= kMaxHeadDim (checked at set-up)
}

/* Attention of one layer; where rows read each other's positions
 * (!write_cache: a prompt), cache_write_kernel stores their keys and values
 * first. */
int launch_attention(const llama_gpu* gpu, int layer, int write_cache, int n_rows, char* error, size_t error_bytes) {
    /* by attention_layout, then the block size (kAttentionWarpCounts) */
#define ATTENTION_SIZES(P, C, L) {attention_kernel<P, C, L, 8>, attention_kernel<P, C, L, 16>, attention_kernel<P, C, L, 32>}
    using kernel_type = decltype(&attention_kernel<1, 1, 32, 8>);
    static const kernel_type kernels[kAttentionLayouts][kAttentionSizes] = {
        ATTENTION_SIZES(4, 1, 4), ATTENTION_SIZES(4, 1, 8), ATTENTION_SIZES(4, 1, 16), ATTENTION_SIZES(4, 1, 32),
        ATTENTION_SIZES(1, 1, 32), ATTENTION_SIZES(1, 2, 32), ATTENTION_SIZES(1, 3, 32), ATTENTION_SIZES(1, 4, 32)};
#undef ATTENTION_SIZES
    static_assert(kAttentionWarpCounts[0] == 8 && kAttentionWarpCounts[1] == 16 && kAttentionWarpCounts[2] == 32,
                  "the table's columns follow kAttentionWarpCounts");
    const llama_config& c = gpu->config;
    if (!write_cache && launch(gpu, "cache_write_kernel", cache_write_kernel, n_rows, kThreads, 0, error, error_bytes,
                               gpu->qkv, gpu->seq_ids, gpu->positions, gpu->rope_table, gpu->key_cache,
                               gpu->value_cache, c.n_heads, c.n_kv_heads, c.head_dim, c.rope_dim, gpu->max_seqs,
                               gpu->max_ctx, layer))
        return -1;
    int warps = attention_warps(gpu, n_rows);
    return launch(gpu, "attention_kernel", kernels[attention_layout(c.head_dim)][attention_size_index(warps)],
                  dim3(c.n_heads, n_rows), 32 * warps, 0, error, error_bytes, gpu->qkv, gpu->seq_ids, gpu->positions,
                  gpu->rope_table, gpu->key_cache, gpu->value_cache, gpu->attn, c.n_heads, c.n_kv_heads, c.head_dim,
                  c.rope_dim, gpu->max_seqs, gpu->max_ctx, layer, write_cache);
}

int launch_swiglu(const llama_gpu* gpu, int n_rows, char* error, size_t error_bytes) {
    int ffn = gpu->config.ffn_dim, width = ffn % 8 ? 1 : 8;
    dim3 grid((ffn / width + kSwigluThreads - 1) / kSwigluThreads, n_rows);
    return launch(gpu, "swiglu_kernel", width == 8 ? swiglu_kernel<8> : swiglu_kernel<1>, grid, kSwigluThreads, 0,
                  error, error_bytes, gpu->gate_up, gpu->hidden, ffn);
}

int grid_for(size_t count) {
    size_t blocks = (count + kThreads - 1) / kThreads;
    return (int)(blocks > 4096 ? 4096 : (blocks ? blocks : 1));
}

template <typename T>
int device_alloc(T** p, size_t count, char* error, size_t error_bytes) {
    CUDA_TRY(cudaMalloc((void**)p, (count ? count : 1) * sizeof(T)));
    return 0;
}

/* Host fp32 -> device fp16. */
int upload_half(__half** dst, const float* src, size_t count, char* error, size_t error_bytes) {
    uint16_t* staging = (uint16_t*)malloc(count * sizeof(uint16_t));
    if (!staging) {
        set_error(error, error_bytes, "out of host memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) staging[i] = marlin_fp16_from_float(src[i]);
    int rc = device_alloc(dst, count, error, error_bytes);
    if (rc == 0 && cudaMemcpy(*dst, staging, count * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
        set_error(error, error_bytes, "cudaMemcpy of %zu fp16 values failed", count);
        rc = -1;
    }
    free(staging);
    return rc;
}

int upload_float(float** dst, const float* src, size_t count, char* error, size_t error_bytes) {
    if (device_alloc(dst, count, error, error_bytes)) return -1;
    CUDA_TRY(cudaMemcpy(*dst, src, count * sizeof(float), cudaMemcpyHostToDevice));
    return 0;
}

int upload_linear(gpu_linear* g, const llama_linear* l, char* error, size_t error_bytes) {
    g->n = l->n;
    g->k = l->k;
    g->group_size = l->group_size;
    if (!l->group_size) return upload_half(&g->weight, l->weight, (size_t)l->n * l->k, error, error_bytes);
    size_t packed = marlin_packed_weight_bytes(l->k, l->n), scales = marlin_scale_bytes(l->k, l->n, l->group_size);
    CUDA_TRY(cudaMalloc(&g->packed_b, packed));
    CUDA_TRY(cudaMalloc(&g->packed_scales, scales));
    CUDA_TRY(cudaMemcpy(g->packed_b, l->packed_b, packed, cudaMemcpyHostToDevice));
    CUDA_TRY(cudaMemcpy(g->packed_scales, l->packed_scales, scales, cudaMemcpyHostToDevice));
    return 0;
}

/* An int4 gate/up pair reordered for marlin_matmul_swiglu on the way up
 * (unpacked, interleaved, packed again); dense layers as upload_linear. */
int upload_gate_up(gpu_linear* g, const llama_linear* l, char* error, size_t error_bytes) {
    if (!l->group_size) return upload_linear(g, l, error, error_bytes);
    llama_linear interleaved = *l;
    size_t codes_bytes = (size_t)l->k * l->n, scale_bytes = marlin_scale_bytes(l->k, l->n, l->group_size);
    uint8_t* codes = (uint8_t*)malloc(codes_bytes);
    uint8_t* codes_out = (uint8_t*)malloc(codes_bytes);
    uint16_t* scales = (uint16_t*)malloc(scale_bytes);
    uint16_t* scales_out = (uint16_t*)malloc(scale_bytes);
    interleaved.packed_b = (uint32_t*)malloc(marlin_packed_weight_bytes(l->k, l->n));
    interleaved.packed_scales = (uint16_t*)malloc(scale_bytes);
    marlin_status s = MARLIN_STATUS_OUT_OF_MEMORY;
    if (codes && codes_out && scales && scales_out && interleaved.packed_b && interleaved.packed_scales) {
        s = marlin_unpack(l->packed_b, l->packed_scales, l->k, l->n, l->group_size, codes, scales);
        if (s == MARLIN_STATUS_SUCCESS)
            s = marlin_interleave_gate_up(codes, scales, l->k, l->n, l->group_size, codes_out, scales_out);
        if (s == MARLIN_STATUS_SUCCESS)
            s = marlin_pack(codes_out, scales_out, l->k, l->n, l->group_size, interleaved.packed_b,
                            interleaved.packed_scales);
    }
    int rc = s == MARLIN_STATUS_SUCCESS ? upload_linear(g, &interleaved, error, error_bytes) : -1;
    if (s != MARLIN_STATUS_SUCCESS)
        set_error(error, error_bytes, "gate/up %d x %d for marlin_matmul_swiglu: %s", l->n, l->k, marlin_status_string(s));
    free(codes), free(codes_out), free(scales), free(scales_out);
    free(interleaved.packed_b), free(interleaved.packed_scales);
    return rc;
}

size_t linear_bytes(const gpu_linear& g) {
    if (!g.group_size) return (size_t)g.n * g.k * 2;
    return marlin_packed_weight_bytes(g.k, g.n) + marlin_scale_bytes(g.k, g.n, g.group_size);
}

void free_linear(gpu_linear* g) {
    cudaFree(g->weight);
    cudaFree(g->packed_b);
    cudaFree(g->packed_scales);
}

/* Y[m x n] = X[m x k] . W^T with the layer's own format; with `swiglu`
 * (int4 gate/up only, see gpu_linear) Y[m x n/2] = SwiGLU of it. */
int run_linear(llama_gpu* gpu, const gpu_linear& l, const __half* X, __half* Y, int m, int swiglu, char* error,
               size_t error_bytes) {
    if (l.group_size) {
        marlin_status s = (swiglu ? marlin_matmul_swiglu : marlin_matmul)(
            X, l.packed_b, l.packed_scales, Y, m, l.n, l.k, l.group_size, gpu->workspace, gpu->workspace_bytes,
            gpu->stream);
        if (s != MARLIN_STATUS_SUCCESS) {
            set_error(error, error_bytes, "%s (m %d, n %d, k %d, group %d): %s",
                      swiglu ? "marlin_matmul_swiglu" : "marlin_matmul", m, l.n, l.k, l.group_size,
                      marlin_status_string(s));
            return -1;
        }
        return 0;
    }
    const float alpha = 1.0f, beta = 0.0f;
    /* column-major view: Y^T (n x m) = W (n x k, stored as k x n column-major, so op T) . X^T (k x m) */
    cublasStatus_t s = cublasGemmEx(gpu->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l.n, m, l.k, &alpha, l.weight, CUDA_R_16F,
                                    l.k, X, CUDA_R_16F, l.k, &beta, Y, CUDA_R_16F, l.n, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        set_error(error, error_bytes, "cublasGemmEx (m %d, n %d, k %d) failed: status %d", m, l.n, l.k, (int)s);
        return -1;
    }
    return 0;
}

/* The multiplies of the folded RMSNorms (see enqueue_forward), int4 only:
 * Y = (X . dequant(W)) / rms per row (its sums of squares in sumsq), with
 * the SwiGLU where swiglu; and x += X . dequant(W), xn = fp16(x .
 * norm_weight), sumsq = its sums of squares. */
int run_rms_linear(llama_gpu* gpu, const gpu_linear& l, const __half* X, __half* Y, int m, int swiglu,
                   const float* sumsq, char* error, size_t error_bytes) {
    marlin_status s = (swiglu ? marlin_matmul_rms_scaled_swiglu : marlin_matmul_rms_scaled)(
        X, l.packed_b, l.packed_scales, sumsq, gpu->config.norm_eps, Y, m, l.n, l.k, l.group_size, gpu->workspace,
        gpu->workspace_bytes, gpu->stream);
    if (s == MARLIN_STATUS_SUCCESS) return 0;
    set_error(error, error_bytes, "%s (m %d, n %d, k %d, group %d): %s",
              swiglu ? "marlin_matmul_rms_scaled_swiglu" : "marlin_matmul_rms_scaled", m, l.n, l.k, l.group_size,
              marlin_status_string(s));
    return -1;
}
int run_residual_linear(llama_gpu* gpu, const gpu_linear& l, const __half* X, const float* norm_weight, float* sumsq,
                        int m, char* error, size_t error_bytes) {
    marlin_status s = marlin_matmul_residual(X, l.packed_b, l.packed_scales, gpu->x, norm_weight, gpu->xn, sumsq, m,
                                             l.n, l.k, l.group_size, gpu->workspace, gpu->workspace_bytes, gpu->stream);
    if (s == MARLIN_STATUS_SUCCESS) return 0;
    set_error(error, error_bytes, "marlin_matmul_residual (m %d, n %d, k %d, group %d): %s", m, l.n, l.k,
              l.group_size, marlin_status_string(s));
    return -1;
}

/* Buffers, caches, workspace, handles: everything but the weights. */
int allocate_runtime(llama_gpu* gpu, char* error, size_t error_bytes) {
    const llama_config& c = gpu->config;
    size_t rows = (size_t)gpu->max_rows;
    size_t q_dim = (size_t)c.n_heads * c.head_dim, kv_dim = (size_t)c.n_kv_heads * c.head_dim;
    CUDA_TRY(cudaStreamCreateWithFlags(&gpu->stream, cudaStreamNonBlocking));
    int device = 0, major = 0;
    CUDA_TRY(cudaGetDevice(&device));
    CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    gpu->dependent_launch = major >= 9;
    if (cublasCreate(&gpu->cublas) != CUBLAS_STATUS_SUCCESS) {
        set_error(error, error_bytes, "cublasCreate failed");
        return -1;
    }
    cublasSetStream(gpu->cublas, gpu->stream);
    gpu->all_int4 = c.dim % 64 == 0;
    for (int l = 0; l < c.n_layers; l++) {
        const gpu_layer& L = gpu->layers[l];
        if (!L.qkv.group_size || !L.out.group_size || !L.gate_up.group_size || !L.down.group_size) gpu->all_int4 = 0;
    }
    const size_t cublas_workspace_bytes = 32u << 20;
    CUDA_TRY(cudaMalloc(&gpu->cublas_workspace, cublas_workspace_bytes));
    if (cublasSetWorkspace(gpu->cublas, gpu->cublas_workspace, cublas_workspace_bytes) != CUBLAS_STATUS_SUCCESS) {
        set_error(error, error_bytes, "cublasSetWorkspace failed");
        return -1;
    }
    size_t cache = (size_t)c.n_layers * gpu->max_seqs * gpu->max_ctx * kv_dim;
    if (device_alloc(&gpu->key_cache, cache, error, error_bytes) ||
        device_alloc(&gpu->value_cache, cache, error, error_bytes) ||
        device_alloc(&gpu->x, rows * c.dim, error, error_bytes) ||
        device_alloc(&gpu->sumsq[0], rows * (c.dim / 64), error, error_bytes) ||
        device_alloc(&gpu->sumsq[1], rows * (c.dim / 64), error, error_bytes) ||
        device_alloc(&gpu->xn, rows * c.dim, error, error_bytes) ||
        device_alloc(&gpu->qkv, rows * (q_dim + 2 * kv_dim), error, error_bytes) ||
        device_alloc(&gpu->attn, rows * q_dim, error, error_bytes) ||
        device_alloc(&gpu->proj, rows * c.dim, error, error_bytes) ||
        device_alloc(&gpu->gate_up, rows * 2 * c.ffn_dim, error, error_bytes) ||
        device_alloc(&gpu->hidden, rows * c.ffn_dim, error, error_bytes) ||
        device_alloc(&gpu->logits, rows * c.vocab_size, error, error_bytes) ||
        device_alloc(&gpu->row_ids, 3 * rows, error, error_bytes) ||
        device_alloc(&gpu->rope_table, (size_t)gpu->max_ctx * (c.rope_dim / 2), error, error_bytes))
        return -1;
    gpu->tokens = gpu->row_ids;
    gpu->seq_ids = gpu->row_ids + rows;
    gpu->positions = gpu->row_ids + 2 * rows;
    CUDA_TRY(cudaMallocHost((void**)&gpu->host_row_ids, 3 * rows * sizeof(int)));
    memset(gpu->host_row_ids, 0, 3 * rows * sizeof(int));
    if (c.rope_dim / 2 > 0)
        rope_table_kernel<<<grid_for((size_t)gpu->max_ctx * (c.rope_dim / 2)), kThreads>>>(
            gpu->rope_table, gpu->max_ctx, c.rope_dim, c.rope_base);
    CUDA_TRY(cudaGetLastError());
    /* one workspace, large enough for every int4 layer (calls are sequential on one stream) */
    size_t need = 0;
    for (int l = 0; l < c.n_layers; l++) {
        const gpu_linear* ls[4] = {&gpu->layers[l].qkv, &gpu->layers[l].out, &gpu->layers[l].gate_up,
                                   &gpu->layers[l].down};
        for (int j = 0; j < 4; j++) {
            if (!ls[j]->group_size) continue;
            size_t bytes = 0;
            marlin_status s = marlin_workspace_size(gpu->max_rows, ls[j]->n, ls[j]->k, ls[j]->group_size, &bytes);
            if (s != MARLIN_STATUS_SUCCESS) {
                set_error(error, error_bytes, "marlin_workspace_size: %s", marlin_status_string(s));
                return -1;
            }
            if (bytes > need) need = bytes;
        }
    }
    gpu->workspace_bytes = need;
    if (need) {
        CUDA_TRY(cudaMalloc(&gpu->workspace, need));
        CUDA_TRY(cudaMemset(gpu->workspace, 0, need));
    }
    /* the kernels handle head vectors as half2 pairs, up to kMaxHeadDim values */
    if (c.head_dim > kMaxHeadDim || c.head_dim % 2 || c.rope_dim % 2 || c.rope_dim > c.head_dim) {
        set_error(error, error_bytes, "head dimension %d / RoPE dimension %d not supported on the GPU (even, <= %d)",
                  c.head_dim, c.rope_dim, kMaxHeadDim);
        return -1;
    }
    /* residual_rmsnorm_kernel holds a row in registers, in pairs at least */
    if (c.dim > kNormMaxDim || c.dim % 2) {
        set_error(error, error_bytes, "dim %d not supported on the GPU (even, <= %d)", c.dim, kNormMaxDim);
        return -1;
    }
    /* the memsets above ran on the legacy stream; the forward pass uses `stream` */
    CUDA_TRY(cudaDeviceSynchronize());
    gpu->weight_bytes = (size_t)c.vocab_size * c.dim * 2;
    for (int l = 0; l < c.n_layers; l++)
        gpu->weight_bytes += linear_bytes(gpu->layers[l].qkv) + linear_bytes(gpu->layers[l].out) +
                             linear_bytes(gpu->layers[l].gate_up) + linear_bytes(gpu->layers[l].down);
    return 0;
}

llama_gpu* new_gpu(const llama_config* config, int max_rows, int max_seqs, int max_ctx, char* error,
                   size_t error_bytes) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        set_error(error, error_bytes, "no CUDA device");
        return nullptr;
    }
    if (max_rows < 1 || max_seqs < 1 || max_ctx < 1) {
        set_error(error, error_bytes, "invalid sizes (rows %d, sequences %d, context %d)", max_rows, max_seqs, max_ctx);
        return nullptr;
    }
    llama_gpu* gpu = new llama_gpu();
    gpu->config = *config;
    gpu->max_rows = max_rows;
    gpu->max_seqs = max_seqs;
    gpu->max_ctx = max_ctx;
    gpu->layers = new gpu_layer[config->n_layers];
    return gpu;
}

}  // namespace

/* ------------------------------------------------------------ public API -- */

extern "C" int llama_gpu_device_count(void) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) return 0;
    return devices;
}

extern "C" void llama_gpu_device_name(char* name, size_t name_bytes) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) snprintf(name, name_bytes, "%s", prop.name);
    else snprintf(name, name_bytes, "unknown device");
}

static void destroy_graphs(llama_gpu* gpu) {
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 65; i++) {
            if (gpu->graphs[d][i]) cudaGraphExecDestroy(gpu->graphs[d][i]);
            gpu->graphs[d][i] = nullptr;
        }
}

extern "C" void llama_gpu_free(llama_gpu* gpu) {
    if (!gpu) return;
    for (int l = 0; gpu->layers && l < gpu->config.n_layers; l++) {
        gpu_layer& L = gpu->layers[l];
        cudaFree(L.attn_norm);
        cudaFree(L.ffn_norm);
        free_linear(&L.qkv);
        free_linear(&L.out);
        free_linear(&L.gate_up);
        free_linear(&L.down);
    }
    delete[] gpu->layers;
    if (gpu->output != gpu->embedding) cudaFree(gpu->output);
    cudaFree(gpu->embedding);
    cudaFree(gpu->output_norm);
    cudaFree(gpu->key_cache);
    cudaFree(gpu->value_cache);
    cudaFree(gpu->x);
    cudaFree(gpu->sumsq[0]);
    cudaFree(gpu->sumsq[1]);
    cudaFree(gpu->xn);
    cudaFree(gpu->qkv);
    cudaFree(gpu->attn);
    cudaFree(gpu->proj);
    cudaFree(gpu->gate_up);
    cudaFree(gpu->hidden);
    cudaFree(gpu->logits);
    cudaFree(gpu->row_ids);
    if (gpu->host_row_ids) cudaFreeHost(gpu->host_row_ids);
    cudaFree(gpu->rope_table);
    cudaFree(gpu->workspace);
    destroy_graphs(gpu);
    if (gpu->cublas) cublasDestroy(gpu->cublas);
    cudaFree(gpu->cublas_workspace);
    if (gpu->stream) cudaStreamDestroy(gpu->stream);
    delete gpu;
}

static int upload_model(llama_gpu* gpu, const llama_model* model, char* error, size_t error_bytes) {
    const llama_config& c = model->config;
    size_t embedding = (size_t)c.vocab_size * c.dim;
    if (upload_half(&gpu->embedding, model->embedding, embedding, error, error_bytes)) return -1;
    if (c.tied_embeddings) gpu->output = gpu->embedding;
    else if (upload_half(&gpu->output, model->output, embedding, error, error_bytes)) return -1;
    if (upload_float(&gpu->output_norm, model->output_norm, c.dim, error, error_bytes)) return -1;
    for (int l = 0; l < c.n_layers; l++) {
        const llama_layer& L = model->layers[l];
        gpu_layer& G = gpu->layers[l];
        if (upload_float(&G.attn_norm, L.attn_norm, c.dim, error, error_bytes) ||
            upload_float(&G.ffn_norm, L.ffn_norm, c.dim, error, error_bytes) ||
            upload_linear(&G.qkv, &L.qkv, error, error_bytes) || upload_linear(&G.out, &L.out, error, error_bytes) ||
            upload_gate_up(&G.gate_up, &L.gate_up, error, error_bytes) ||
            upload_linear(&G.down, &L.down, error, error_bytes))
            return -1;
    }
    return allocate_runtime(gpu, error, error_bytes);
}

extern "C" llama_gpu* llama_gpu_create(const llama_model* model, int max_rows, int max_seqs, int max_ctx, char* error,
                                       size_t error_bytes) {
    llama_gpu* gpu = new_gpu(&model->config, max_rows, max_seqs, max_ctx, error, error_bytes);
    if (!gpu) return nullptr;
    if (upload_model(gpu, model, error, error_bytes) != 0) {
        llama_gpu_free(gpu);
        return nullptr;
    }
    return gpu;
}

static int synthesize(llama_gpu* gpu, int use_int4, int group_size, char* error, size_t error_bytes) {
    const llama_config& c = gpu->config;
    int q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    uint64_t seed = 1;
    size_t embedding = (size_t)c.vocab_size * c.dim;
    if (device_alloc(&gpu->embedding, embedding, error, error_bytes)) return -1;
    fill_half_kernel<<<grid_for(embedding), kThreads>>>(gpu->embedding, embedding, 0.05f, seed++);
    if (c.tied_embeddings) {
        gpu->output = gpu->embedding;
    } else {
        if (device_alloc(&gpu->output, embedding, error, error_bytes)) return -1;
        fill_half_kernel<<<grid_for(embedding), kThreads>>>(gpu->output, embedding, 0.05f, seed++);
    }
    if (device_alloc(&gpu->output_norm, c.dim, error, error_bytes)) return -1;
    fill_float_kernel<<<grid_for(c.dim), kThreads>>>(gpu->output_norm, c.dim, 1.0f);
    for (int l = 0; l < c.n_layers; l++) {
        gpu_layer& G = gpu->layers[l];
        if (device_alloc(&G.attn_norm, c.dim, error, error_bytes) || device_alloc(&G.ffn_norm, c.dim, error, error_bytes))
            return -1;
        fill_float_kernel<<<grid_for(c.dim), kThreads>>>(G.attn_norm, c.dim, 1.0f);
        fill_float_kernel<<<grid_for(c.dim), kThreads>>>(G.ffn_norm, c.dim, 1.0f);
        gpu_linear* ls[4] = {&G.qkv, &G.out, &G.gate_up, &G.down};
        int ns[4] = {q_dim + 2 * kv_dim, c.dim, 2 * c.ffn_dim, c.dim};
        int ks[4] = {c.dim, q_dim, c.dim, c.ffn_dim};
        for (int j = 0; j < 4; j++) {
            gpu_linear* g = ls[j];
            g->n = ns[j];
            g->k = ks[j];
            /* amplitude ~ 1/sqrt(k) keeps activations of order one through the layers */
            float amplitude = 1.7f / sqrtf((float)g->k);
            if (!use_int4) {
                if (device_alloc(&g->weight, (size_t)g->n * g->k, error, error_bytes)) return -1;
                fill_half_kernel<<<grid_for((size_t)g->n * g->k), kThreads>>>(g->weight, (size_t)g->n * g->k,
                                                                              amplitude, seed++);
                continue;
            }
            int group = group_size > 0 ? group_size : g->k;
            marlin_status s = marlin_check_weight_shape(g->k, g->n, group);
            if (s != MARLIN_STATUS_SUCCESS) {
                set_error(error, error_bytes, "int4 layer %d x %d, group %d: %s", g->n, g->k, group,
                          marlin_status_string(s));
                return -1;
            }
            g->group_size = group;
            size_t words = marlin_packed_weight_bytes(g->k, g->n) / 4;
            size_t scales = marlin_scale_bytes(g->k, g->n, group) / 2;
            CUDA_TRY(cudaMalloc(&g->packed_b, words * 4));
            CUDA_TRY(cudaMalloc(&g->packed_scales, scales * 2));
            fill_words_kernel<<<grid_for(words), kThreads>>>((uint32_t*)g->packed_b, words, seed++);
            /* scales in (-a/8, a/8): |(q - 8) * s| <= a; their sign does not matter to the kernel */
            fill_half_kernel<<<grid_for(scales), kThreads>>>((__half*)g->packed_scales, scales, amplitude / 8.0f,
                                                             seed++);
        }
    }
    CUDA_TRY(cudaGetLastError());
    if (allocate_runtime(gpu, error, error_bytes)) return -1;
    size_t cache = (size_t)c.n_layers * gpu->max_seqs * gpu->max_ctx * kv_dim;
    fill_half_kernel<<<grid_for(cache), kThreads>>>(gpu->key_cache, cache, 1.0f, seed++);
    fill_half_kernel<<<grid_for(cache), kThreads>>>(gpu->value_cache, cache, 1.0f, seed++);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaDeviceSynchronize());
    return 0;
}

extern "C" llama_gpu* llama_gpu_create_synthetic(const llama_config* config, int use_int4, int group_size, int max_rows,
                                                 int max_seqs, int max_ctx, char* error, size_t error_bytes) {
    llama_gpu* gpu = new_gpu(config, max_rows, max_seqs, max_ctx, error, error_bytes);
    if (!gpu) return nullptr;
    if (synthesize(gpu, use_int4, group_size, error, error_bytes) != 0) {
        llama_gpu_free(gpu);
        return nullptr;
    }
    return gpu;
}

extern "C" size_t llama_gpu_weight_bytes(const llama_gpu* gpu) { return gpu->weight_bytes; }

/* Whether a call of n_rows rows folds the RMSNorms into the multiplies (see
 * enqueue_forward). */
static bool folds_norms(const llama_gpu* gpu, int n_rows) {
    return gpu->fused_norms && gpu->all_int4 && gpu->config.n_layers > 0 && n_rows <= kFusedNormMaxRows;
}

/* Enqueues the whole forward pass on gpu->stream for n_rows rows whose
 * tokens, sequences and positions are already on the device; the logits
 * land in gpu->logits. distinct: every row has its own sequence (see
 * attention_kernel). Only stream work: it can be captured in a graph. */
static int enqueue_forward(llama_gpu* gpu, int n_rows, int distinct, char* error, size_t error_bytes) {
    const llama_config& c = gpu->config;
    const bool full = !gpu->linear_only;  // else the GEMMs alone (llama_gpu_set_linear_only)
    /* Decode calls of up to kFusedNormMaxRows rows of an all-int4 model fold
     * the RMSNorms into the multiplies (marlin_matmul_residual /
     * _rms_scaled): the out and down projections add into x and write xn =
     * fp16(x . next norm's weight) with the sums of squares, the qkv and
     * gate/up projections scale their rows by 1/rms; no norm kernels inside
     * the stack (the embedding makes the first xn, the output norm stays a
     * kernel). */
    const bool fused = folds_norms(gpu, n_rows);
    float* const attn_sumsq = gpu->sumsq[0];
    float* const ffn_sumsq = gpu->sumsq[1];
    if (full) {
        if (launch(gpu, "embed_kernel", embed_kernel, n_rows, kThreads, 0, error, error_bytes, gpu->embedding,
                   gpu->tokens, gpu->x, c.dim, fused ? (const float*)gpu->layers[0].attn_norm : nullptr, gpu->xn,
                   attn_sumsq))
            return -1;
        const float* first_norm = c.n_layers > 0 ? gpu->layers[0].attn_norm : gpu->output_norm;
        if (!fused && launch_norm(gpu, nullptr, first_norm, n_rows, error, error_bytes)) return -1;
    }
    for (int l = 0; l < c.n_layers; l++) {
        const gpu_layer& L = gpu->layers[l];
        const bool last = l + 1 == c.n_layers;
        if (fused) {
            /* xn holds fp16(x . attn_norm), attn_sumsq its sums of squares */
            if (run_rms_linear(gpu, L.qkv, gpu->xn, gpu->qkv, n_rows, 0, attn_sumsq, error, error_bytes)) return -1;
            if (full && launch_attention(gpu, l, distinct, n_rows, error, error_bytes)) return -1;
            if (run_residual_linear(gpu, L.out, gpu->attn, L.ffn_norm, ffn_sumsq, n_rows, error, error_bytes))
                return -1;
            if (run_rms_linear(gpu, L.gate_up, gpu->xn, gpu->hidden, n_rows, 1, ffn_sumsq, error, error_bytes))
                return -1;
            if (!last) {
                if (run_residual_linear(gpu, L.down, gpu->hidden, gpu->layers[l + 1].attn_norm, attn_sumsq, n_rows,
                                        error, error_bytes))
                    return -1;
                continue;
            }
            /* the last: a plain multiply, then the output norm as a kernel */
            if (run_linear(gpu, L.down, gpu->hidden, gpu->proj, n_rows, 0, error, error_bytes)) return -1;
            if (full && launch_norm(gpu, gpu->proj, gpu->output_norm, n_rows, error, error_bytes)) return -1;
            continue;
        }
        /* xn holds attn_norm(x) here */
        if (run_linear(gpu, L.qkv, gpu->xn, gpu->qkv, n_rows, 0, error, error_bytes)) return -1;
        if (full && launch_attention(gpu, l, distinct, n_rows, error, error_bytes)) return -1;
        if (run_linear(gpu, L.out, gpu->attn, gpu->proj, n_rows, 0, error, error_bytes)) return -1;
        if (full && launch_norm(gpu, gpu->proj, L.ffn_norm, n_rows, error, error_bytes)) return -1;
        if (L.gate_up.group_size) { /* int4: the SwiGLU fused into the multiply */
            if (run_linear(gpu, L.gate_up, gpu->xn, gpu->hidden, n_rows, 1, error, error_bytes)) return -1;
        } else {
            if (run_linear(gpu, L.gate_up, gpu->xn, gpu->gate_up, n_rows, 0, error, error_bytes)) return -1;
            if (full && launch_swiglu(gpu, n_rows, error, error_bytes)) return -1;
        }
        if (run_linear(gpu, L.down, gpu->hidden, gpu->proj, n_rows, 0, error, error_bytes)) return -1;
        /* the residual add, then the next layer's attention norm (or the output norm) */
        const float* next_norm = l + 1 < c.n_layers ? gpu->layers[l + 1].attn_norm : gpu->output_norm;
        if (full && launch_norm(gpu, gpu->proj, next_norm, n_rows, error, error_bytes)) return -1;
    }
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t cs = cublasGemmEx(gpu->cublas, CUBLAS_OP_T, CUBLAS_OP_N, c.vocab_size, n_rows, c.dim, &alpha,
                                     gpu->output, CUDA_R_16F, c.dim, gpu->xn, CUDA_R_16F, c.dim, &beta, gpu->logits,
                                     CUDA_R_32F, c.vocab_size, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        set_error(error, error_bytes, "cublasGemmEx (output head) failed: status %d", (int)cs);
        return -1;
    }
    return 0;
}

/* Captures the forward pass for n_rows into gpu->graphs[distinct][n_rows].
 * On any failure graphs are switched off for this instance (the eager path
 * is always correct) and no graph is stored. */
static void capture_graph(llama_gpu* gpu, int n_rows, int distinct) {
    char ignored[256];
    cudaGraph_t graph = nullptr;
    if (cudaStreamBeginCapture(gpu->stream, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
        gpu->use_graphs = 0;
        cudaGetLastError();
        return;
    }
    int rc = enqueue_forward(gpu, n_rows, distinct, ignored, sizeof(ignored));
    cudaError_t end = cudaStreamEndCapture(gpu->stream, &graph);
    cudaGraphExec_t* exec = &gpu->graphs[distinct][n_rows];
    if (rc == 0 && end == cudaSuccess && graph && cudaGraphInstantiate(exec, graph, 0) == cudaSuccess) {
        cudaGraphDestroy(graph);
        return;
    }
    if (graph) cudaGraphDestroy(graph);
    *exec = nullptr;
    gpu->use_graphs = 0;
    cudaGetLastError(); /* clear the capture's error: the eager path follows */
}

/* Whether every row belongs to a different sequence (a decode step). The
 * scan is quadratic but stops at the first repeat, which a prompt has at
 * its second row; only batches of distinct sequences run it to the end. */
static int distinct_sequences(const int* seq_ids, int n_rows) {
    for (int r = 1; r < n_rows; r++)
        for (int q = 0; q < r; q++)
            if (seq_ids[q] == seq_ids[r]) return 0;
    return 1;
}

extern "C" void llama_gpu_set_graphs(llama_gpu* gpu, int enabled) { gpu->use_graphs = enabled != 0; }

extern "C" void llama_gpu_set_linear_only(llama_gpu* gpu, int enabled) {
    if (gpu->linear_only == (enabled != 0)) return;
    gpu->linear_only = enabled != 0;
    destroy_graphs(gpu); /* captured for the other mode */
}
extern "C" int llama_gpu_fused_norms_enabled(const llama_gpu* gpu) { return gpu->fused_norms; }
extern "C" void llama_gpu_set_fused_norms(llama_gpu* gpu, int enabled) {
    if (gpu->fused_norms == (enabled != 0)) return;
    gpu->fused_norms = enabled != 0;
    destroy_graphs(gpu); /* captured for the other mode */
}
extern "C" int llama_gpu_attention_warps_supported(int warps) {
    return warps == 0 || attention_size_index(warps) >= 0;
}

extern "C" int llama_gpu_set_attention_warps(llama_gpu* gpu, int warps) {
    if (!llama_gpu_attention_warps_supported(warps)) return -1;
    if (gpu->attention_warps == warps) return 0;
    gpu->attention_warps = warps;
    destroy_graphs(gpu); /* captured with the other block size */
    return 0;
}

extern "C" int llama_gpu_graphs_enabled(const llama_gpu* gpu) { return gpu->use_graphs; }

/* The forward pass of rows already on the device (a captured graph where
 * there is one), the logits copied to `logits` (if not NULL), and the
 * stream synchronized. */
static int run_forward(llama_gpu* gpu, int n_rows, int distinct, float* logits, char* error, size_t error_bytes) {
    cudaStream_t s = gpu->stream;
    /* decode-sized calls replay a captured graph: one launch instead of ~8 per layer */
    cudaGraphExec_t* graph = n_rows <= 64 ? &gpu->graphs[distinct][n_rows] : nullptr;
    if (gpu->use_graphs && graph && !*graph) capture_graph(gpu, n_rows, distinct);
    if (gpu->use_graphs && graph && *graph) {
        CUDA_TRY(cudaGraphLaunch(*graph, s));
    } else if (enqueue_forward(gpu, n_rows, distinct, error, error_bytes) != 0) {
        return -1;
    }
    if (logits)
        CUDA_TRY(cudaMemcpyAsync(logits, gpu->logits, (size_t)n_rows * gpu->config.vocab_size * sizeof(float),
                                 cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

extern "C" int llama_gpu_forward(llama_gpu* gpu, const int* tokens, const int* seq_ids, const int* positions,
                                 int n_rows, float* logits, char* error, size_t error_bytes) {
    const llama_config& c = gpu->config;
    if (n_rows < 1 || n_rows > gpu->max_rows) {
        set_error(error, error_bytes, "%d rows (1..%d allowed)", n_rows, gpu->max_rows);
        return -1;
    }
    for (int r = 0; r < n_rows; r++)
        if (tokens[r] < 0 || tokens[r] >= c.vocab_size || seq_ids[r] < 0 || seq_ids[r] >= gpu->max_seqs ||
            positions[r] < 0 || positions[r] >= gpu->max_ctx) {
            set_error(error, error_bytes, "row %d: token %d, sequence %d or position %d out of range", r, tokens[r],
                      seq_ids[r], positions[r]);
            return -1;
        }
    /* one asynchronous copy from pinned memory instead of three staged ones;
     * the previous call synchronized, so the mirror is free to overwrite */
    int* ids = gpu->host_row_ids;
    memcpy(ids, tokens, n_rows * sizeof(int));
    memcpy(ids + gpu->max_rows, seq_ids, n_rows * sizeof(int));
    memcpy(ids + 2 * gpu->max_rows, positions, n_rows * sizeof(int));
    CUDA_TRY(cudaMemcpyAsync(gpu->row_ids, ids, 3 * (size_t)gpu->max_rows * sizeof(int), cudaMemcpyHostToDevice,
                             gpu->stream));
    int distinct = distinct_sequences(seq_ids, n_rows);
    if (run_forward(gpu, n_rows, distinct, logits, error, error_bytes) != 0) return -1;
    /* A step with the norms folded into the multiplies carries x . w in
     * fp16 (see enqueue_forward), which overflows where a model's residual
     * stream exceeds 65504 / |w|, and the logits come out non-finite: then
     * the step runs again with norm kernels (the same rows, cache slots and
     * buffers), which this instance keeps from then on. Checked where the
     * logits come back. */
    if (logits && folds_norms(gpu, n_rows)) {
        const size_t count = (size_t)n_rows * c.vocab_size;
        size_t i = 0;
        while (i < count && isfinite(logits[i])) i++;
        if (i < count) {
            llama_gpu_set_fused_norms(gpu, 0);
            return run_forward(gpu, n_rows, distinct, logits, error, error_bytes);
        }
    }
    return 0;
}
