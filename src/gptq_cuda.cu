/*
 * gptq_cuda.cu: GPTQ on the GPU, the same algorithm and data layout as
 * gptq.c (read its design note first), for layers too large for the CPU.
 *
 * Where the time goes, and what does it:
 *   Hessian         one cuBLAS product X^T X (fp32 accumulate);
 *   factorisation   cuSOLVER potrf + trtri in double on the reversed,
 *                   permuted, damped H (k^3/3 flops);
 *   lazy updates    one fp32 cuBLAS product per block:
 *                   Wt[i2:, :] -= U[i1:i2, i2:]^T E  (n k^2 flops in all);
 *   the block       gptq_block_kernel: one thread per output row r, the
 *                   block's weights of 64 outputs in shared memory
 *                   (128 x 64 floats), the column-by-column quantization and
 *                   in-block error feedback done in registers/shared memory,
 *                   with the arithmetic written exactly as the CPU does it
 *                   (no fused multiply-adds), so codes differ from the CPU's
 *                   only where the cuBLAS product's summation order moves a
 *                   weight across a rounding boundary;
 *   scales          group_scale(): the same grid search as the CPU, per
 *                   thread, summing squared errors in double in the same order.
 * Decisions that must match the CPU exactly (column order, damping schedule,
 * shrink grid, block cuts) are made on the host by gptq_internal.h.
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdlib.h>
#include <string.h>

#include "gptq_internal.h"

/* Threads (= output rows) per block-kernel CTA, and the most columns per block. */
constexpr int kRowsPerCta = 64;
constexpr int kMaxBlockColumns = 128;
constexpr int kThreads = 256;

/* Error flags the kernels raise (bit-or into one device int). */
constexpr int kFlagNonFinite = 1;
constexpr int kFlagScaleOverflow = 2;

struct marlin_gptq_gpu {
    int device;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    void* scratch;        /* device */
    size_t scratch_bytes;
    void* host_scratch;   /* host, for cuSOLVER's trtri */
    size_t host_scratch_bytes;
    int* host_flags;      /* pinned host: [0] flags, [1] cuSOLVER info */
};

#define CUDA_TRY(call)                                                              \
    do {                                                                            \
        cudaError_t cuda_error_ = (call);                                           \
        if (cuda_error_ != cudaSuccess)                                             \
            return cuda_error_ == cudaErrorMemoryAllocation ? MARLIN_STATUS_OUT_OF_MEMORY \
                                                            : MARLIN_STATUS_CUDA_ERROR; \
    } while (0)
#define LAUNCH_TRY() CUDA_TRY(cudaGetLastError())
#define BLAS_TRY(call)                                                              \
    do {                                                                            \
        if ((call) != CUBLAS_STATUS_SUCCESS) return MARLIN_STATUS_CUDA_ERROR;       \
    } while (0)
#define SOLVER_TRY(call)                                                            \
    do {                                                                            \
        if ((call) != CUSOLVER_STATUS_SUCCESS) return MARLIN_STATUS_CUDA_ERROR;     \
    } while (0)

static unsigned blocks_for(size_t count, int threads) { return (unsigned)((count + threads - 1) / threads); }

/* ------------------------------------------------------------- context -- */

extern "C" marlin_status marlin_gptq_gpu_create(marlin_gptq_gpu** context) {
    if (!context) return MARLIN_STATUS_NULL_POINTER;
    *context = nullptr;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return MARLIN_STATUS_NO_DEVICE;
    marlin_gptq_gpu* c = (marlin_gptq_gpu*)calloc(1, sizeof *c);
    if (!c) return MARLIN_STATUS_OUT_OF_MEMORY;
    marlin_status status = MARLIN_STATUS_CUDA_ERROR;
    if (cudaGetDevice(&c->device) != cudaSuccess) goto fail;
    if (cudaMallocHost((void**)&c->host_flags, 2 * sizeof(int)) != cudaSuccess) goto fail;
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) goto fail;
    /* Plain fp32 products: the default math mode never uses TF32 for fp32 (unless
     * NVIDIA_TF32_OVERRIDE=1 is set in the environment, which must not be). */
    if (cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) goto fail;
    if (cusolverDnCreate(&c->solver) != CUSOLVER_STATUS_SUCCESS) goto fail;
    *context = c;
    return MARLIN_STATUS_SUCCESS;
fail:
    marlin_gptq_gpu_destroy(c);
    return status;
}

extern "C" marlin_status marlin_gptq_gpu_destroy(marlin_gptq_gpu* c) {
    if (!c) return MARLIN_STATUS_SUCCESS;
    marlin_status status = MARLIN_STATUS_SUCCESS;
    if (cudaDeviceSynchronize() != cudaSuccess) status = MARLIN_STATUS_CUDA_ERROR;
    if (c->blas) cublasDestroy(c->blas);
    if (c->solver) cusolverDnDestroy(c->solver);
    if (c->scratch) cudaFree(c->scratch);
    if (c->host_flags) cudaFreeHost(c->host_flags);
    free(c->host_scratch);
    free(c);
    return status;
}

/* Makes the device scratch at least `bytes` (contents not kept). */
static marlin_status reserve_scratch(marlin_gptq_gpu* c, size_t bytes, cudaStream_t stream) {
    if (bytes <= c->scratch_bytes) return MARLIN_STATUS_SUCCESS;
    CUDA_TRY(cudaStreamSynchronize(stream));
    if (c->scratch) CUDA_TRY(cudaFree(c->scratch));
    c->scratch = nullptr;
    c->scratch_bytes = 0;
    CUDA_TRY(cudaMalloc(&c->scratch, bytes));
    c->scratch_bytes = bytes;
    return MARLIN_STATUS_SUCCESS;
}

/* Carves aligned pieces out of the scratch buffer, in order. */
struct scratch_carver {
    char* base;
    size_t used;
    template <typename T> T* take(size_t count) {
        used = (used + 255) & ~(size_t)255;
        T* p = base ? (T*)(base + used) : nullptr;
        used += count * sizeof(T);
        return p;
    }
};

/* ------------------------------------------------------------- kernels -- */

template <typename T> __device__ float load_float(const T* p, size_t i);
template <> __device__ float load_float<float>(const float* p, size_t i) { return p[i]; }
template <> __device__ float load_float<__half>(const __half* p, size_t i) { return __half2float(p[i]); }

/* flags |= kFlagNonFinite if any of the count values is NaN or Inf. */
template <typename T>
__global__ void check_finite_kernel(const T* values, size_t count, int* flags) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        if (!isfinite(load_float(values, i))) {
            atomicOr(flags, kFlagNonFinite);
            return;
        }
}

/* The lower triangle of H finite (flag), and its diagonal copied out. */
__global__ void check_hessian_kernel(const float* H, int k, float* diagonal, int* flags) {
    size_t total = (size_t)k * k;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(e / k), col = (int)(e % k);
        if (col > row) continue;
        float h = H[e];
        if (!isfinite(h)) atomicOr(flags, kFlagNonFinite);
        if (row == col) diagonal[row] = h;
    }
}

/* Wt[position[c]][r] = W[r][c], 0 for dead inputs (H_cc = 0); 32 x 32 tiles through shared memory. */
template <typename T>
__global__ void transpose_weights_kernel(const T* W, int n, int k, const int* position, const float* diagonal,
                                         float* Wt) {
    __shared__ float tile[32][33]; /* +1: no bank conflicts on the transposed read */
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        int r = r0 + y, c = c0 + threadIdx.x;
        tile[y][threadIdx.x] = (r < n && c < k) ? load_float(W, (size_t)r * k + c) : 0.0f;
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        int c = c0 + y, r = r0 + threadIdx.x;
        if (c < k && r < n) Wt[(size_t)position[c] * n + r] = diagonal[c] == 0.0f ? 0.0f : tile[threadIdx.x][y];
    }
}

/* D (k x k, symmetric, full) = reversed, permuted, damped H, as upper_inverse_factor in gptq.c. */
__global__ void build_factor_input_kernel(const float* H, int k, const int* order, double damp, double* D) {
    size_t total = (size_t)k * k;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int a = (int)(e / k), b = (int)(e % k);
        int x = order[k - 1 - a], y = order[k - 1 - b];
        bool x_dead = H[(size_t)x * k + x] == 0.0f, y_dead = H[(size_t)y * k + y] == 0.0f;
        double value;
        if (a == b) value = (x_dead ? 1.0 : (double)H[(size_t)x * k + x]) + damp;
        else if (x_dead || y_dead) value = 0.0;
        else value = (double)(x >= y ? H[(size_t)x * k + y] : H[(size_t)y * k + x]);
        D[e] = value;
    }
}

/* Uf[i][j] (row-major float) = U[i][j] = Linv(k-1-i, k-1-j), Linv column-major lower; 0 below the diagonal. */
__global__ void extract_upper_factor_kernel(const double* Linv, int k, float* Uf) {
    size_t total = (size_t)k * k;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e / k), j = (int)(e % k);
        Uf[e] = j < i ? 0.0f : (float)Linv[(size_t)(k - 1 - i) + (size_t)(k - 1 - j) * k];
    }
}

__device__ float round_to_fp16(float x) { return __half2float(__float2half_rn(x)); }

__device__ unsigned char quantize_code(float w, float s) {
    float q = rintf(__fdiv_rn(w, s)) + (float)MARLIN_ZERO_CODE;
    q = fminf(fmaxf(q, 0.0f), 15.0f);
    return (unsigned char)q;
}

__device__ float dequantize_code(unsigned char q, float s) {
    return round_to_fp16(__fmul_rn((float)((int)q - MARLIN_ZERO_CODE), s));
}

/* fp16 of shrink * max_abs / 7; 1.0 where that is 0 (as candidate_scale_bits in gptq.c). */
__device__ float candidate_scale(float shrink, float max_abs) {
    float s = round_to_fp16(__fdiv_rn(__fmul_rn(shrink, max_abs), 7.0f));
    return s == 0.0f ? 1.0f : s;
}

/*
 * The scale of one group for one output: the grid candidate with the least
 * sum of squared errors (ties: the earlier, larger one). value(c) gives the
 * c-th weight of the group. Returns the fp16 bits; raises kFlagScaleOverflow.
 */
template <typename ValueOf>
__device__ unsigned short group_scale(ValueOf value, int count, const float* shrink, int points, int* flags) {
    float max_abs = 0.0f;
    for (int c = 0; c < count; c++) max_abs = fmaxf(max_abs, fabsf(value(c)));
    if (isinf(round_to_fp16(__fdiv_rn(max_abs, 7.0f)))) atomicOr(flags, kFlagScaleOverflow);
    float best_scale = candidate_scale(shrink[0], max_abs);
    if (points > 1) {
        double best_error = 0.0;
        for (int p = 0; p < points; p++) {
            float s = candidate_scale(shrink[p], max_abs);
            double error = 0.0;
            for (int c = 0; c < count; c++) {
                float w = value(c);
                float d = __fsub_rn(w, dequantize_code(quantize_code(w, s), s));
                error = __dadd_rn(error, __dmul_rn((double)d, (double)d));
            }
            if (p == 0 || error < best_error) {
                best_error = error;
                best_scale = s;
            }
        }
    }
    return __half_as_ushort(__float2half_rn(best_scale));
}

/* Static groups (act-order): every scale from the weights in the original
 * column order, i.e. the Wt rows position[c0..c1). One thread per (group, output). */
__global__ void static_scales_kernel(const float* Wt, int n, int k, int group_size, const int* position,
                                     const float* shrink, int points, unsigned short* scales, int* flags) {
    int rows = (k + group_size - 1) / group_size;
    size_t total = (size_t)rows * n;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int group = (int)(e / n), r = (int)(e % n);
        int c0 = group * group_size, count = min(group_size, k - c0);
        scales[e] = group_scale([&](int c) { return Wt[(size_t)position[c0 + c] * n + r]; }, count, shrink, points,
                                flags);
    }
}

/*
 * One block of columns [i1, i2) for kRowsPerCta outputs per CTA, thread =
 * output row r. The block's weights of these outputs live in shared memory;
 * U is read from global memory (every thread reads the same element: a
 * broadcast). Writes the codes (original row order[i]), dynamic group
 * scales (reading back the one of a group begun in an earlier block), and E
 * (the scaled errors the lazy update needs).
 */
__global__ void __launch_bounds__(kRowsPerCta) gptq_block_kernel(
    const float* Wt, int n, int k, const float* Uf, int i1, int i2, const int* order, int group_size,
    int static_groups, const float* shrink, int points, unsigned char* codes, unsigned short* scales, float* E,
    int* flags) {
    __shared__ float block_weights[kMaxBlockColumns][kRowsPerCta];
    int t = threadIdx.x, r = blockIdx.x * kRowsPerCta + t;
    bool active = r < n;
    int columns = i2 - i1;
    for (int i = 0; i < columns; i++) block_weights[i][t] = active ? Wt[(size_t)(i1 + i) * n + r] : 0.0f;
    if (!active) return; /* no __syncthreads below: each thread touches only its own column */
    /* A dynamic group wider than a block (e.g. g = k) starts in an earlier
     * block, whose launch chose and stored its scale: read it back, since this
     * launch never passes the group's first column. */
    float scale = 0.0f;
    if (!static_groups && i1 % group_size != 0)
        scale = __half2float(__ushort_as_half(scales[(size_t)(i1 / group_size) * n + r]));
    for (int i = i1; i < i2; i++) {
        if (static_groups) {
            scale = __half2float(__ushort_as_half(scales[(size_t)(order[i] / group_size) * n + r]));
        } else if (i % group_size == 0) {
            int count = min(group_size, k - i);
            /* Inside the block: the shared copy; after it (only when the group
             * starts at i1): global Wt, already up to date. */
            unsigned short bits = group_scale(
                [&](int c) {
                    int column = i + c;
                    return column < i2 ? block_weights[column - i1][t] : Wt[(size_t)column * n + r];
                },
                count, shrink, points, flags);
            scales[(size_t)(i / group_size) * n + r] = bits;
            scale = __half2float(__ushort_as_half(bits));
        }
        const float* u = Uf + (size_t)i * k;
        float w = block_weights[i - i1][t];
        unsigned char q = quantize_code(w, scale);
        codes[(size_t)order[i] * n + r] = q;
        float e = __fdiv_rn(__fsub_rn(w, dequantize_code(q, scale)), u[i]);
        E[(size_t)(i - i1) * n + r] = e;
        for (int j = i + 1; j < i2; j++)
            block_weights[j - i1][t] = __fsub_rn(block_weights[j - i1][t], __fmul_rn(e, u[j]));
    }
}

/* ------------------------------------------------------------- Hessian -- */

static marlin_status gpu_hessian_accumulate(marlin_gptq_gpu* c, float* H, int64_t* rows_seen, const void* X,
                                            int x_is_fp16, int rows, int k, cudaStream_t stream) {
    if (!c || !H || !rows_seen || (!X && rows > 0)) return MARLIN_STATUS_NULL_POINTER;
    if (k < 1 || rows < 0 || *rows_seen < 0) return MARLIN_STATUS_INVALID_VALUE;
    if (rows == 0) return MARLIN_STATUS_SUCCESS;
    marlin_status status = reserve_scratch(c, 256, stream);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    int* flags = (int*)c->scratch;
    CUDA_TRY(cudaMemsetAsync(flags, 0, sizeof(int), stream));
    size_t count = (size_t)rows * k;
    unsigned grid = blocks_for(count, kThreads) < 4096 ? blocks_for(count, kThreads) : 4096;
    if (x_is_fp16) check_finite_kernel<<<grid, kThreads, 0, stream>>>((const __half*)X, count, flags);
    else check_finite_kernel<<<grid, kThreads, 0, stream>>>((const float*)X, count, flags);
    LAUNCH_TRY();
    CUDA_TRY(cudaMemcpyAsync(c->host_flags, flags, sizeof(int), cudaMemcpyDeviceToHost, stream));
    CUDA_TRY(cudaStreamSynchronize(stream));
    if (c->host_flags[0]) return MARLIN_STATUS_INVALID_VALUE;

    /* Row-major X (rows x k) is column-major Xc (k x rows): H = beta H + alpha Xc Xc^T. */
    double total = (double)*rows_seen + rows;
    float alpha = (float)(2.0 / total), beta = (float)((double)*rows_seen / total);
    cudaDataType type = x_is_fp16 ? CUDA_R_16F : CUDA_R_32F;
    BLAS_TRY(cublasSetStream(c->blas, stream));
    BLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, k, k, rows, &alpha, X, type, k, X, type, k, &beta, H,
                          CUDA_R_32F, k, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    *rows_seen += rows;
    return MARLIN_STATUS_SUCCESS;
}

extern "C" marlin_status marlin_gptq_gpu_hessian_accumulate(marlin_gptq_gpu* c, float* H, int64_t* rows_seen,
                                                            const float* X, int rows, int k, cudaStream_t stream) {
    return gpu_hessian_accumulate(c, H, rows_seen, X, 0, rows, k, stream);
}

extern "C" marlin_status marlin_gptq_gpu_hessian_accumulate_fp16(marlin_gptq_gpu* c, float* H, int64_t* rows_seen,
                                                                 const void* X, int rows, int k,
                                                                 cudaStream_t stream) {
    return gpu_hessian_accumulate(c, H, rows_seen, X, 1, rows, k, stream);
}

/* ---------------------------------------------------------------- GPTQ -- */

/* The scratch pieces of one quantization; carve(nullptr) only measures. */
struct gptq_scratch {
    double* D;             /* k x k */
    float* Uf;             /* k x k */
    float* Wt;             /* k x n */
    float* E;              /* block x n */
    unsigned char* codes;  /* k x n */
    unsigned short* scales;/* ceil(k/g) x n */
    int* order;            /* k */
    int* position;         /* k */
    float* diagonal;       /* k */
    float* shrink;         /* points */
    int* flags;            /* 2: flags, cuSOLVER info */
    double* solver_work;   /* solver_bytes */
    size_t total;
};

static gptq_scratch carve(void* base, int n, int k, int group_size, int block, int points, size_t solver_bytes) {
    scratch_carver carver = {(char*)base, 0};
    gptq_scratch s;
    s.D = carver.take<double>((size_t)k * k);
    s.Uf = carver.take<float>((size_t)k * k);
    s.Wt = carver.take<float>((size_t)k * n);
    s.E = carver.take<float>((size_t)block * n);
    s.codes = carver.take<unsigned char>((size_t)k * n);
    s.scales = carver.take<unsigned short>((size_t)marlin_scale_rows(k, group_size) * n);
    s.order = carver.take<int>(k);
    s.position = carver.take<int>(k);
    s.diagonal = carver.take<float>(k);
    s.shrink = carver.take<float>(points);
    s.flags = carver.take<int>(2);
    s.solver_work = carver.take<double>(solver_bytes / sizeof(double) + 1);
    s.total = carver.used;
    return s;
}

/* Reads the flags (and cuSOLVER info) back: waits for the stream. */
static marlin_status read_flags(marlin_gptq_gpu* c, const int* flags, cudaStream_t stream) {
    CUDA_TRY(cudaMemcpyAsync(c->host_flags, flags, 2 * sizeof(int), cudaMemcpyDeviceToHost, stream));
    CUDA_TRY(cudaStreamSynchronize(stream));
    return MARLIN_STATUS_SUCCESS;
}

static marlin_status gpu_gptq_quantize(marlin_gptq_gpu* c, const void* W, int w_is_fp16, int n, int k, const float* H,
                                       int group_size, const marlin_gptq_options* options, uint8_t* codes,
                                       uint16_t* scales, cudaStream_t stream) {
    if (!c || !W || !H || !codes || !scales) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    marlin_gptq_options o;
    status = gptq_resolve_options(options, &o);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    int block = o.block_size < kMaxBlockColumns ? o.block_size : kMaxBlockColumns;
    int points = o.clip_grid_points;

    BLAS_TRY(cublasSetStream(c->blas, stream));
    SOLVER_TRY(cusolverDnSetStream(c->solver, stream));
    /* cuSOLVER's workspace sizes do not depend on the matrix values. */
    int potrf_elems = 0;
    SOLVER_TRY(cusolverDnDpotrf_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, k, nullptr, k, &potrf_elems));
    size_t trtri_device = 0, trtri_host = 0;
    SOLVER_TRY(cusolverDnXtrtri_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k, CUDA_R_64F,
                                           nullptr, k, &trtri_device, &trtri_host));
    size_t solver_bytes = (size_t)potrf_elems * sizeof(double);
    if (trtri_device > solver_bytes) solver_bytes = trtri_device;
    status = reserve_scratch(c, carve(nullptr, n, k, group_size, block, points, solver_bytes).total, stream);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    if (trtri_host > c->host_scratch_bytes) {
        void* grown = realloc(c->host_scratch, trtri_host);
        if (!grown) return MARLIN_STATUS_OUT_OF_MEMORY;
        c->host_scratch = grown;
        c->host_scratch_bytes = trtri_host;
    }
    gptq_scratch s = carve(c->scratch, n, k, group_size, block, points, solver_bytes);

    /* 1. Checks: W and H finite; H's diagonal to the host. */
    CUDA_TRY(cudaMemsetAsync(s.flags, 0, 2 * sizeof(int), stream));
    size_t weight_count = (size_t)n * k;
    unsigned grid = blocks_for(weight_count, kThreads) < 4096 ? blocks_for(weight_count, kThreads) : 4096;
    if (w_is_fp16) check_finite_kernel<<<grid, kThreads, 0, stream>>>((const __half*)W, weight_count, s.flags);
    else check_finite_kernel<<<grid, kThreads, 0, stream>>>((const float*)W, weight_count, s.flags);
    LAUNCH_TRY();
    size_t hessian_count = (size_t)k * k;
    unsigned hessian_grid = blocks_for(hessian_count, kThreads) < 8192 ? blocks_for(hessian_count, kThreads) : 8192;
    check_hessian_kernel<<<hessian_grid, kThreads, 0, stream>>>(H, k, s.diagonal, s.flags);
    LAUNCH_TRY();
    float* diagonal = (float*)malloc((size_t)k * sizeof(float));
    int* order = (int*)malloc((size_t)k * 2 * sizeof(int));
    float* shrink = (float*)malloc((size_t)points * sizeof(float));
    if (!diagonal || !order || !shrink) {
        free(diagonal); free(order); free(shrink);
        return MARLIN_STATUS_OUT_OF_MEMORY;
    }
    /* From here on, host buffers are freed at `done`. */
    int* position = order + k;
    cudaError_t copy_error = cudaMemcpyAsync(diagonal, s.diagonal, (size_t)k * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream);
    if (copy_error == cudaSuccess) status = read_flags(c, s.flags, stream);
    else status = MARLIN_STATUS_CUDA_ERROR;
    if (status == MARLIN_STATUS_SUCCESS && c->host_flags[0]) status = MARLIN_STATUS_INVALID_VALUE;
    if (status == MARLIN_STATUS_SUCCESS) status = gptq_column_order(diagonal, k, o.act_order, order);
    if (status == MARLIN_STATUS_SUCCESS) {
        for (int i = 0; i < k; i++) position[order[i]] = i;
        gptq_shrink_factors(&o, shrink);
        double mean_diagonal = 0.0; /* as upper_inverse_factor in gptq.c */
        for (int i = 0; i < k; i++) mean_diagonal += diagonal[i] == 0.0f ? 1.0 : (double)diagonal[i];
        mean_diagonal /= k;
        auto run = [&]() -> marlin_status {
            CUDA_TRY(cudaMemcpyAsync(s.order, order, (size_t)k * sizeof(int), cudaMemcpyHostToDevice, stream));
            CUDA_TRY(cudaMemcpyAsync(s.position, position, (size_t)k * sizeof(int), cudaMemcpyHostToDevice, stream));
            CUDA_TRY(cudaMemcpyAsync(s.shrink, shrink, (size_t)points * sizeof(float), cudaMemcpyHostToDevice, stream));

            /* 2. Wt in visiting order; static group scales. */
            dim3 tiles((k + 31) / 32, (n + 31) / 32), tile_threads(32, 8);
            if (w_is_fp16)
                transpose_weights_kernel<<<tiles, tile_threads, 0, stream>>>((const __half*)W, n, k, s.position,
                                                                            s.diagonal, s.Wt);
            else
                transpose_weights_kernel<<<tiles, tile_threads, 0, stream>>>((const float*)W, n, k, s.position,
                                                                            s.diagonal, s.Wt);
            LAUNCH_TRY();
            if (o.act_order) {
                size_t count = (size_t)marlin_scale_rows(k, group_size) * n;
                static_scales_kernel<<<blocks_for(count, kThreads), kThreads, 0, stream>>>(
                    s.Wt, n, k, group_size, s.position, s.shrink, points, s.scales, s.flags);
                LAUNCH_TRY();
            }

            /* 3. U: Cholesky of the reversed, damped H, then its inverse; more damping while it fails. */
            bool factored = false;
            for (int attempt = 0; attempt < GPTQ_DAMPING_ATTEMPTS && !factored; attempt++) {
                double damp = gptq_damping_fraction(&o, attempt) * mean_diagonal;
                build_factor_input_kernel<<<hessian_grid, kThreads, 0, stream>>>(H, k, s.order, damp, s.D);
                LAUNCH_TRY();
                SOLVER_TRY(cusolverDnDpotrf(c->solver, CUBLAS_FILL_MODE_LOWER, k, s.D, k, s.solver_work, potrf_elems,
                                            s.flags + 1));
                marlin_status read = read_flags(c, s.flags, stream);
                if (read != MARLIN_STATUS_SUCCESS) return read;
                if (c->host_flags[1] < 0) return MARLIN_STATUS_CUDA_ERROR;
                factored = c->host_flags[1] == 0;
            }
            if (!factored) return MARLIN_STATUS_NOT_POSITIVE_DEFINITE;
            SOLVER_TRY(cusolverDnXtrtri(c->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, k, CUDA_R_64F, s.D, k,
                                        s.solver_work, solver_bytes, c->host_scratch, trtri_host, s.flags + 1));
            extract_upper_factor_kernel<<<hessian_grid, kThreads, 0, stream>>>(s.D, k, s.Uf);
            LAUNCH_TRY();

            /* 4. The pass: per block, the block kernel, then the lazy update. */
            const float minus_one = -1.0f, one = 1.0f;
            for (int i1 = 0; i1 < k;) {
                int i2 = gptq_block_end(i1, k, block, group_size, o.act_order);
                gptq_block_kernel<<<(n + kRowsPerCta - 1) / kRowsPerCta, kRowsPerCta, 0, stream>>>(
                    s.Wt, n, k, s.Uf, i1, i2, s.order, group_size, o.act_order, s.shrink, points, s.codes, s.scales,
                    s.E, s.flags);
                LAUNCH_TRY();
                if (i2 < k) /* Wt[i2:, :] -= U[i1:i2, i2:]^T E, in column-major terms (see the note above) */
                    BLAS_TRY(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, n, k - i2, i2 - i1, &minus_one, s.E, n,
                                         s.Uf + (size_t)i1 * k + i2, k, &one, s.Wt + (size_t)i2 * n, n));
                i1 = i2;
            }
            marlin_status read = read_flags(c, s.flags, stream);
            if (read != MARLIN_STATUS_SUCCESS) return read;
            if (c->host_flags[1] != 0) return MARLIN_STATUS_CUDA_ERROR; /* trtri: a zero pivot cannot happen after potrf */
            if (c->host_flags[0]) return MARLIN_STATUS_INVALID_VALUE;  /* a scale overflowed fp16 */
            CUDA_TRY(cudaMemcpyAsync(codes, s.codes, (size_t)k * n, cudaMemcpyDeviceToDevice, stream));
            CUDA_TRY(cudaMemcpyAsync(scales, s.scales, marlin_scale_bytes(k, n, group_size), cudaMemcpyDeviceToDevice,
                                     stream));
            CUDA_TRY(cudaStreamSynchronize(stream));
            return MARLIN_STATUS_SUCCESS;
        };
        status = run();
    }
    free(diagonal);
    free(order);
    free(shrink);
    return status;
}

extern "C" marlin_status marlin_gptq_gpu_quantize(marlin_gptq_gpu* c, const float* W, int n, int k, const float* H,
                                                  int group_size, const marlin_gptq_options* options, uint8_t* codes,
                                                  uint16_t* scales, cudaStream_t stream) {
    return gpu_gptq_quantize(c, W, 0, n, k, H, group_size, options, codes, scales, stream);
}

extern "C" marlin_status marlin_gptq_gpu_quantize_fp16(marlin_gptq_gpu* c, const void* W, int n, int k,
                                                       const float* H, int group_size,
                                                       const marlin_gptq_options* options, uint8_t* codes,
                                                       uint16_t* scales, cudaStream_t stream) {
    return gpu_gptq_quantize(c, W, 1, n, k, H, group_size, options, codes, scales, stream);
}
