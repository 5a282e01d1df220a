/*
 * marlin.h: fp16 x int4 matrix multiplication for LLM inference (Marlin).
 *
 *   C[m x n] = A[m x k] . dequant(B[k x n])
 *
 *   A, C     fp16, row-major, on the GPU.
 *   B        4-bit codes q in 0..15, stored in the packed Marlin layout
 *            (docs/layout.md), k*n/8 uint32 words.
 *   scales   fp16, one per group of `group_size` rows and per column:
 *            ceil(k / group_size) x n, permuted within each 64-column block
 *            (docs/layout.md).
 *   dequant(q at row r, col c) = (q - 8) * scales[r / group_size][c],
 *            rounded to fp16, products accumulated in fp32.
 *
 * Shapes: any m >= 1; k and n multiples of 64 up to 2^20; group_size 32, 64, 128, or
 * k (one scale per column). k need not be a multiple of group_size.
 *
 * The usual flow:
 *   1. quantize on the CPU: marlin_quantize_rtn (or GPTQ, marlin_gptq.h)
 *      -> codes (k x n bytes) + scales (ceil(k/g) x n fp16);
 *   2. pack on the CPU: marlin_pack -> packed B + packed scales;
 *   3. copy both to the GPU, ask marlin_workspace_size, allocate and zero the
 *      workspace once;
 *   4. marlin_matmul(..., stream) as often as needed.
 *
 * Every function returns a marlin_status; the library never prints, exits
 * or aborts. fp16 values on the host are passed as their IEEE bit patterns
 * (uint16_t); marlin_fp16_from_float / marlin_fp16_to_float convert.
 */
#ifndef MARLIN_H
#define MARLIN_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MARLIN_VERSION_MAJOR 0
#define MARLIN_VERSION_MINOR 1
#define MARLIN_VERSION_PATCH 0

#if defined(_WIN32)
#define MARLIN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MARLIN_API __attribute__((visibility("default")))
#else
#define MARLIN_API
#endif

/* Tile of the packed layout: 16 rows (k) x 64 columns (n), 512 bytes. */
#define MARLIN_TILE_K 16
#define MARLIN_TILE_N 64
/* k and n must be multiples of this, and at most MARLIN_MAX_DIMENSION. */
#define MARLIN_SHAPE_MULTIPLE 64
#define MARLIN_MAX_DIMENSION 1048576
/* Required alignment of every device pointer, in bytes. */
#define MARLIN_ALIGNMENT 16
/* Code of the zero point: dequant(q) = (q - MARLIN_ZERO_CODE) * scale. */
#define MARLIN_ZERO_CODE 8

typedef enum marlin_status {
    MARLIN_STATUS_SUCCESS = 0,
    MARLIN_STATUS_NULL_POINTER,           /* a required pointer is NULL */
    MARLIN_STATUS_MISALIGNED_POINTER,     /* a device pointer is not 16-byte aligned */
    MARLIN_STATUS_UNSUPPORTED_SHAPE,      /* m < 1, or k / n not multiples of 64 in 64..2^20 */
    MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE, /* group_size not 32, 64, 128 or k */
    MARLIN_STATUS_WORKSPACE_TOO_SMALL,    /* workspace_bytes < marlin_workspace_size() */
    MARLIN_STATUS_INVALID_VALUE,          /* NaN/Inf input, code out of range, bad option */
    MARLIN_STATUS_NO_DEVICE,              /* no CUDA device is available */
    MARLIN_STATUS_UNSUPPORTED_ARCH,       /* the device is older than sm_80 */
    MARLIN_STATUS_CUDA_ERROR,             /* a CUDA call failed; see cudaGetLastError() */
    MARLIN_STATUS_NOT_POSITIVE_DEFINITE,  /* GPTQ: Hessian not positive definite even after extra damping */
    MARLIN_STATUS_OUT_OF_MEMORY,          /* a host or device allocation failed */
} marlin_status;

/* A static English description of a status; never NULL. */
MARLIN_API const char* marlin_status_string(marlin_status status);

/* ---------------------------------------------------------------- sizes -- */

/* Checks k, n (multiples of 64, at most 2^20) and group_size (32, 64, 128 or k). */
MARLIN_API marlin_status marlin_check_weight_shape(int k, int n, int group_size);
/* Number of scale rows: ceil(k / group_size). Assumes a valid shape. */
MARLIN_API int marlin_scale_rows(int k, int group_size);
/* Bytes of packed B: k * n / 2. */
MARLIN_API size_t marlin_packed_weight_bytes(int k, int n);
/* Bytes of the (packed or plain) scales: 2 * ceil(k / group_size) * n. */
MARLIN_API size_t marlin_scale_bytes(int k, int n, int group_size);

/* ------------------------------------------------------- fp16 on the host -- */

/* Round-to-nearest-even float -> fp16 bits (overflow gives +-Inf). */
MARLIN_API uint16_t marlin_fp16_from_float(float value);
MARLIN_API float marlin_fp16_to_float(uint16_t bits);

/* ------------------------------------------------------ packing (CPU) -- */

/*
 * Packs plain codes and scales into the kernel's layout.
 *   codes          k x n bytes, row-major, each 0..15 (row = input feature)
 *   scales         ceil(k/group_size) x n fp16, row-major
 *   packed_b       out: k*n/8 uint32 words
 *   packed_scales  out: ceil(k/group_size) x n fp16
 * A code above 15 gives MARLIN_STATUS_INVALID_VALUE and writes nothing.
 */
MARLIN_API marlin_status marlin_pack(const uint8_t* codes, const uint16_t* scales, int k, int n,
                                     int group_size, uint32_t* packed_b, uint16_t* packed_scales);

/* The exact inverse of marlin_pack. */
MARLIN_API marlin_status marlin_unpack(const uint32_t* packed_b, const uint16_t* packed_scales,
                                       int k, int n, int group_size, uint8_t* codes,
                                       uint16_t* scales);

/*
 * Reorders the columns of a gated MLP's gate and up weights for
 * marlin_matmul_swiglu (before marlin_pack):
 *   codes       k x n bytes: columns 0 .. n/2-1 the gate features, n/2 .. n-1
 *               the up features (the fused [gate | up] weight)
 *   scales      ceil(k/group_size) x n fp16, columns likewise (plain, not packed)
 *   codes_out   out: k x n bytes;  scales_out  out: ceil(k/group_size) x n fp16;
 *               in every 16 columns, 8 gate features then the up features of
 *               the same index: column 16t + s holds gate feature 8t + s and
 *               column 16t + 8 + s up feature 8t + s (s < 8).
 * Shapes as marlin_pack; the outputs must not overlap the inputs.
 */
MARLIN_API marlin_status marlin_interleave_gate_up(const uint8_t* codes, const uint16_t* scales, int k,
                                                   int n, int group_size, uint8_t* codes_out,
                                                   uint16_t* scales_out);

/*
 * Codes of fake-quantized weights, as the original Layer.pack computes them:
 * q = clamp(round(w / s) + 8, 0, 15).
 *   weight  n x k fp16, row-major (torch.nn.Linear's layout: one row per output)
 *   scales  ceil(k/group_size) x n fp16 (plain, not packed); each must be > 0
 *   codes   out: k x n bytes
 */
MARLIN_API marlin_status marlin_codes_from_fake_quantized(const uint16_t* weight,
                                                          const uint16_t* scales, int n, int k,
                                                          int group_size, uint8_t* codes);

/*
 * Symmetric round-to-nearest quantization, per group of group_size rows:
 * s = max|w| / 7 (fp16; 1 where the group is all zero), q = clamp(round(w/s) + 8, 0, 15).
 *   weight  n x k fp32, row-major (torch.nn.Linear's layout); NaN/Inf rejected
 *   codes   out: k x n bytes;  scales  out: ceil(k/group_size) x n fp16
 */
MARLIN_API marlin_status marlin_quantize_rtn(const float* weight, int n, int k, int group_size,
                                             uint8_t* codes, uint16_t* scales);

/* ----------------------------------------------- reference multiply (CPU) -- */

/*
 * C = A . dequant(B) computed on the CPU from the packed layout itself, with
 * weights dequantized exactly as the kernel does (rounded to fp16) and
 * products summed in double. The C reference every GPU test compares with.
 *   A  m x k fp16;  C  out: m x n fp32 (not rounded to fp16)
 */
MARLIN_API marlin_status marlin_reference_matmul(const uint16_t* A, const uint32_t* packed_b,
                                                 const uint16_t* packed_scales, int m, int n,
                                                 int k, int group_size, float* C);

/* ------------------------------------------------------- multiply (GPU) -- */

/*
 * Bytes of workspace that marlin_matmul needs on the current CUDA device for
 * any call of 1..m rows with this n, k and group size (the need is not
 * monotonic in m, so size it once for the largest m). The caller allocates it
 * (device memory, 16-byte aligned) and
 * zeroes it once (cudaMemset) before its first use; every call leaves it
 * zeroed where it matters, so one workspace serves any sequence of calls on
 * one stream whose sizes it covers (of any shapes), and calls can be captured
 * in a CUDA graph and replayed.
 * Two calls running at the same time on different streams need two workspaces.
 */
MARLIN_API marlin_status marlin_workspace_size(int m, int n, int k, int group_size,
                                               size_t* workspace_bytes);

/*
 * C = A . dequant(B) on the GPU, asynchronous on `stream`.
 *   A              device, m x k fp16, row-major
 *   packed_b       device, marlin_pack's output (k*n/8 uint32)
 *   packed_scales  device, marlin_pack's output (ceil(k/g) x n fp16)
 *   C              device, out: m x n fp16, row-major (must not overlap the inputs)
 *   workspace      device, see marlin_workspace_size
 * All device pointers 16-byte aligned. Every argument is checked before any
 * launch; a refused call writes nothing. The result is bitwise identical from
 * run to run on the same device.
 */
MARLIN_API marlin_status marlin_matmul(const void* A, const void* packed_b,
                                       const void* packed_scales, void* C, int m, int n, int k,
                                       int group_size, void* workspace, size_t workspace_bytes,
                                       cudaStream_t stream);

/*
 * The SwiGLU of a gated MLP fused into the multiply (no activation pass of
 * its own): with B's n columns holding n/2 gate/up pairs in the order
 * marlin_interleave_gate_up writes, H[m x n/2] = silu(gate) * up per feature,
 * silu(x) = x / (1 + e^-x), computed from the fp32 sums of A . dequant(B) and
 * rounded once to fp16.
 *   H  device, out: m x n/2 fp16, row-major (must not overlap the inputs)
 * Everything else as marlin_matmul (the same workspace serves both).
 */
MARLIN_API marlin_status marlin_matmul_swiglu(const void* A, const void* packed_b,
                                              const void* packed_scales, void* H, int m, int n,
                                              int k, int group_size, void* workspace,
                                              size_t workspace_bytes, cudaStream_t stream);

/*
 * RMSNorm folded into the multiplies of a transformer block, for decode
 * steps: no norm kernel between them. A block's residual stream x (fp32)
 * reaches a multiply as A = fp16(x . w), w the norm's weight, with the sums
 * of x^2 of each row over each 64 columns; the multiply scales each row of
 * its product by 1/rms, which gives RMSNorm(x) . w . dequant(B) (up to
 * rounding, and as long as x . w fits fp16). Up to MARLIN_RMS_MAX_ROWS rows
 * (more: MARLIN_STATUS_UNSUPPORTED_SHAPE); everything not named here as
 * marlin_matmul (the same workspace serves all).
 *
 * marlin_matmul_residual: x += A . dequant(B), then C = fp16(x . norm_weight)
 * and the new x's sums of squares.
 *   x            device, in/out: m x n fp32, row-major
 *   norm_weight  device, n fp32 (the next norm's weight)
 *   C            device, out: m x n fp16 (must not overlap the inputs)
 *   sumsq_out    device, out: m x n/64 fp32, [r][g] = sum of x[r][c]^2 over
 *                columns c = 64 g .. 64 g + 63
 *
 * marlin_matmul_rms_scaled: C = (A . dequant(B)) / sqrt(s_r / k + eps) for
 * each row r, s_r the sum of row r of sumsq_in (m x k/64 fp32, as
 * marlin_matmul_residual writes it for a k-column x); eps >= 0.
 * marlin_matmul_rms_scaled_swiglu: the same, then the SwiGLU of
 * marlin_matmul_swiglu (H m x n/2).
 */
#define MARLIN_RMS_MAX_ROWS 16
MARLIN_API marlin_status marlin_matmul_residual(const void* A, const void* packed_b,
                                                const void* packed_scales, float* x,
                                                const float* norm_weight, void* C, float* sumsq_out,
                                                int m, int n, int k, int group_size, void* workspace,
                                                size_t workspace_bytes, cudaStream_t stream);
MARLIN_API marlin_status marlin_matmul_rms_scaled(const void* A, const void* packed_b,
                                                  const void* packed_scales, const float* sumsq_in,
                                                  float eps, void* C, int m, int n, int k,
                                                  int group_size, void* workspace,
                                                  size_t workspace_bytes, cudaStream_t stream);
MARLIN_API marlin_status marlin_matmul_rms_scaled_swiglu(const void* A, const void* packed_b,
                                                         const void* packed_scales,
                                                         const float* sumsq_in, float eps, void* H,
                                                         int m, int n, int k, int group_size,
                                                         void* workspace, size_t workspace_bytes,
                                                         cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* MARLIN_H */
