/*
 * test_gptq_gpu.c: the GPU GPTQ path (marlin_gptq_gpu_*) against the CPU one.
 *
 * Tolerance, stated: the two paths make every decision the same way and do
 * the per-column arithmetic in the same order, but the lazy update is a
 * cuBLAS product whose summation order differs from the CPU loop, so a weight
 * that lands within an ulp of a rounding boundary can get the neighbouring
 * code, and the error fed forward then differs slightly. We require at most
 * 1% of codes and 1% of scales to differ, and the layer's output error to be
 * within 1% of the CPU's. With H = 2 I there is no feedback at all and the
 * codes must be identical (and equal to marlin_quantize_rtn's).
 *
 * Prints "SKIPPED: no CUDA device" and passes without a GPU.
 */
#include <cuda_runtime_api.h>

#include "marlin_gptq.h"
#include "test_util.h"

static void* device_copy(const void* host, size_t bytes) {
    void* p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
    if (host) cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
    return p;
}

/* ||X (W - Q)^T||^2 = sum_r d_r^T (N/2) H d_r, through the CPU Hessian (double sums). */
static double output_error(const float* H, int k, const float* W, int n, const uint8_t* codes, const uint16_t* scales,
                           int g) {
    double* d = malloc(sizeof(double) * k);
    double total = 0;
    for (int r = 0; r < n; r++) {
        for (int i = 0; i < k; i++) {
            float s = marlin_fp16_to_float(scales[(size_t)(i / g) * n + r]);
            float q = marlin_fp16_to_float(marlin_fp16_from_float((float)(codes[(size_t)i * n + r] - 8) * s));
            d[i] = (double)W[(size_t)r * k + i] - q;
        }
        for (int i = 0; i < k; i++) {
            double s = 0;
            for (int j = 0; j < k; j++) s += (double)H[(size_t)i * k + j] * d[j];
            total += d[i] * s;
        }
    }
    free(d);
    return total;
}

typedef struct {
    marlin_gptq_gpu* gpu;
    int n, k;
    float *W, *H;           /* host */
    float *W_dev, *H_dev;   /* device */
    uint8_t* codes_dev;
    uint16_t* scales_dev;
} fixture;

static void compare(fixture* f, int g, int act_order, int clip) {
    int n = f->n, k = f->k;
    marlin_gptq_options o;
    marlin_gptq_default_options(&o);
    o.act_order = act_order;
    if (!clip) o.clip_grid_points = 1;
    size_t code_bytes = (size_t)k * n, scale_bytes = marlin_scale_bytes(k, n, g);
    uint8_t *cpu_codes = malloc(code_bytes), *gpu_codes = malloc(code_bytes);
    uint16_t *cpu_scales = malloc(scale_bytes), *gpu_scales = malloc(scale_bytes);
    marlin_status cpu = marlin_gptq_quantize(f->W, n, k, f->H, g, &o, cpu_codes, cpu_scales);
    marlin_status gpu = marlin_gptq_gpu_quantize(f->gpu, f->W_dev, n, k, f->H_dev, g, &o, f->codes_dev, f->scales_dev, 0);
    cudaMemcpy(gpu_codes, f->codes_dev, code_bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(gpu_scales, f->scales_dev, scale_bytes, cudaMemcpyDeviceToHost);
    size_t code_diff = 0, scale_diff = 0;
    for (size_t i = 0; i < code_bytes; i++) code_diff += cpu_codes[i] != gpu_codes[i];
    for (size_t i = 0; i < scale_bytes / 2; i++) scale_diff += cpu_scales[i] != gpu_scales[i];
    double e_cpu = output_error(f->H, k, f->W, n, cpu_codes, cpu_scales, g);
    double e_gpu = output_error(f->H, k, f->W, n, gpu_codes, gpu_scales, g);
    double code_fraction = (double)code_diff / code_bytes, scale_fraction = (double)scale_diff / (scale_bytes / 2);
    test_check(cpu == MARLIN_STATUS_SUCCESS && gpu == MARLIN_STATUS_SUCCESS && code_fraction <= 0.01 &&
                   scale_fraction <= 0.01 && fabs(e_gpu / e_cpu - 1) <= 0.01,
               "%dx%d g=%d act_order=%d clip=%d: GPU (%s) vs CPU: %.4f%% codes and %.4f%% scales differ (<= 1%%), "
               "error ratio %.5f (within 1%%)",
               n, k, g, act_order, clip, marlin_status_string(gpu), 100 * code_fraction, 100 * scale_fraction,
               e_gpu / e_cpu);
    free(cpu_codes);
    free(gpu_codes);
    free(cpu_scales);
    free(gpu_scales);
}

int main(void) {
    int device_count = 0;
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
    test_seed("test_gptq_gpu");
    fixture f = {0};
    f.n = 256;
    f.k = 512;
    int n = f.n, k = f.k, rows = 2 * k;
    test_check(marlin_gptq_gpu_create(&f.gpu) == MARLIN_STATUS_SUCCESS, "context created");

    /* Correlated calibration inputs X = Z M, fp16-representable so the fp16 path sees the same values. */
    float* X = malloc(sizeof(float) * rows * k);
    uint16_t* X16 = malloc(sizeof(uint16_t) * rows * k);
    float* M = malloc(sizeof(float) * k * k);
    float* Z = malloc(sizeof(float) * k);
    for (int i = 0; i < k * k; i++) M[i] = test_rand_normal() / sqrtf((float)k);
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < k; i++) Z[i] = test_rand_normal();
        for (int j = 0; j < k; j++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += (double)Z[i] * M[(size_t)i * k + j];
            X16[(size_t)r * k + j] = marlin_fp16_from_float((float)s);
            X[(size_t)r * k + j] = marlin_fp16_to_float(X16[(size_t)r * k + j]);
        }
    }
    f.H = calloc((size_t)k * k, sizeof(float));
    int64_t seen = 0;
    marlin_hessian_accumulate(f.H, &seen, X, rows, k);

    /* Hessian: GPU (two batches, fp32 and fp16 inputs) vs CPU. */
    float* X_dev = device_copy(X, sizeof(float) * rows * k);
    void* X16_dev = device_copy(X16, sizeof(uint16_t) * rows * k);
    float* H32_dev = device_copy(NULL, sizeof(float) * k * k);
    float* H16_dev = device_copy(NULL, sizeof(float) * k * k);
    cudaMemset(H32_dev, 0, sizeof(float) * k * k);
    cudaMemset(H16_dev, 0, sizeof(float) * k * k);
    int64_t seen32 = 0, seen16 = 0;
    int ok = marlin_gptq_gpu_hessian_accumulate(f.gpu, H32_dev, &seen32, X_dev, 100, k, 0) == MARLIN_STATUS_SUCCESS &&
             marlin_gptq_gpu_hessian_accumulate(f.gpu, H32_dev, &seen32, X_dev + (size_t)100 * k, rows - 100, k, 0) ==
                 MARLIN_STATUS_SUCCESS &&
             marlin_gptq_gpu_hessian_accumulate_fp16(f.gpu, H16_dev, &seen16, X16_dev, rows, k, 0) ==
                 MARLIN_STATUS_SUCCESS;
    float* H32 = malloc(sizeof(float) * k * k);
    float* H16 = malloc(sizeof(float) * k * k);
    cudaMemcpy(H32, H32_dev, sizeof(float) * k * k, cudaMemcpyDeviceToHost);
    cudaMemcpy(H16, H16_dev, sizeof(float) * k * k, cudaMemcpyDeviceToHost);
    double worst32 = 0, worst16 = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double scale = sqrt((double)f.H[i * k + i] * f.H[j * k + j]);
            worst32 = fmax(worst32, fabs(H32[i * k + j] - f.H[i * k + j]) / scale);
            worst16 = fmax(worst16, fabs(H16[i * k + j] - f.H[i * k + j]) / scale);
        }
    test_check(ok && seen32 == rows && seen16 == rows && worst32 < 1e-5 && worst16 < 1e-5,
               "hessian on the GPU (fp32 in 2 batches, fp16) vs CPU: max error %.1e, %.1e of sqrt(H_ii H_jj)", worst32,
               worst16);
    X[5] = NAN;
    cudaMemcpy(X_dev, X, sizeof(float) * k, cudaMemcpyHostToDevice);
    int64_t before = seen32;
    test_check(marlin_gptq_gpu_hessian_accumulate(f.gpu, H32_dev, &seen32, X_dev, 1, k, 0) ==
                       MARLIN_STATUS_INVALID_VALUE &&
                   seen32 == before,
               "hessian on the GPU: NaN in X -> invalid value, N unchanged");

    /* Quantization: GPU vs CPU on the same H. */
    f.W = malloc(sizeof(float) * n * k);
    for (int i = 0; i < n * k; i++) f.W[i] = 0.02f * test_rand_normal();
    f.W_dev = device_copy(f.W, sizeof(float) * n * k);
    f.H_dev = device_copy(f.H, sizeof(float) * k * k);
    f.codes_dev = device_copy(NULL, (size_t)k * n);
    f.scales_dev = device_copy(NULL, marlin_scale_bytes(k, n, 32));
    int groups[] = {128, 32, k};
    for (int gi = 0; gi < 3; gi++)
        for (int act_order = 0; act_order <= 1; act_order++) compare(&f, groups[gi], act_order, 1);
    compare(&f, 128, 0, 0);

    /* H = 2 I: no feedback; identical to RTN. */
    float* I2 = calloc((size_t)k * k, sizeof(float));
    for (int i = 0; i < k; i++) I2[i * k + i] = 2.0f;
    float* I2_dev = device_copy(I2, sizeof(float) * k * k);
    marlin_gptq_options o;
    marlin_gptq_default_options(&o);
    o.clip_grid_points = 1;
    uint8_t *rtn_codes = malloc((size_t)k * n), *gpu_codes = malloc((size_t)k * n);
    uint16_t *rtn_scales = malloc(marlin_scale_bytes(k, n, 128)), *gpu_scales = malloc(marlin_scale_bytes(k, n, 128));
    marlin_quantize_rtn(f.W, n, k, 128, rtn_codes, rtn_scales);
    marlin_status s = marlin_gptq_gpu_quantize(f.gpu, f.W_dev, n, k, I2_dev, 128, &o, f.codes_dev, f.scales_dev, 0);
    cudaMemcpy(gpu_codes, f.codes_dev, (size_t)k * n, cudaMemcpyDeviceToHost);
    cudaMemcpy(gpu_scales, f.scales_dev, marlin_scale_bytes(k, n, 128), cudaMemcpyDeviceToHost);
    test_check(s == MARLIN_STATUS_SUCCESS && !memcmp(gpu_codes, rtn_codes, (size_t)k * n) &&
                   !memcmp(gpu_scales, rtn_scales, marlin_scale_bytes(k, n, 128)),
               "H = 2 I, no clipping: GPU codes and scales identical to marlin_quantize_rtn");

    /* fp16 weights: same as the fp32 entry point on the same values. */
    uint16_t* W16 = malloc(sizeof(uint16_t) * n * k);
    for (int i = 0; i < n * k; i++) {
        W16[i] = marlin_fp16_from_float(f.W[i]);
        f.W[i] = marlin_fp16_to_float(W16[i]);
    }
    void* W16_dev = device_copy(W16, sizeof(uint16_t) * n * k);
    cudaMemcpy(f.W_dev, f.W, sizeof(float) * n * k, cudaMemcpyHostToDevice);
    uint8_t* codes16 = malloc((size_t)k * n);
    marlin_status s32 = marlin_gptq_gpu_quantize(f.gpu, f.W_dev, n, k, f.H_dev, 64, NULL, f.codes_dev, f.scales_dev, 0);
    cudaMemcpy(gpu_codes, f.codes_dev, (size_t)k * n, cudaMemcpyDeviceToHost);
    marlin_status s16 = marlin_gptq_gpu_quantize_fp16(f.gpu, W16_dev, n, k, f.H_dev, 64, NULL, f.codes_dev, f.scales_dev, 0);
    cudaMemcpy(codes16, f.codes_dev, (size_t)k * n, cudaMemcpyDeviceToHost);
    test_check(s32 == MARLIN_STATUS_SUCCESS && s16 == MARLIN_STATUS_SUCCESS && !memcmp(codes16, gpu_codes, (size_t)k * n),
               "GPU fp16 weights: identical codes to the fp32 entry point on the same values");

    /* Bad inputs: clear errors, outputs untouched. */
    cudaMemset(f.codes_dev, 0xAB, (size_t)k * n);
    float saved = f.W[7];
    f.W[7] = INFINITY;
    cudaMemcpy(f.W_dev, f.W, sizeof(float) * n * k, cudaMemcpyHostToDevice);
    marlin_status bad_w = marlin_gptq_gpu_quantize(f.gpu, f.W_dev, n, k, f.H_dev, 128, NULL, f.codes_dev, f.scales_dev, 0);
    f.W[7] = saved;
    cudaMemcpy(f.W_dev, f.W, sizeof(float) * n * k, cudaMemcpyHostToDevice);
    for (int i = 0; i < k * k; i++) I2[i] = (i % (k + 1) == 0) ? -1.0f : 0.0f; /* H = -I */
    cudaMemcpy(I2_dev, I2, sizeof(float) * k * k, cudaMemcpyHostToDevice);
    marlin_status bad_h = marlin_gptq_gpu_quantize(f.gpu, f.W_dev, n, k, I2_dev, 128, NULL, f.codes_dev, f.scales_dev, 0);
    marlin_status bad_shape = marlin_gptq_gpu_quantize(f.gpu, f.W_dev, n, 96, f.H_dev, 32, NULL, f.codes_dev, f.scales_dev, 0);
    marlin_status bad_null = marlin_gptq_gpu_quantize(f.gpu, NULL, n, k, f.H_dev, 128, NULL, f.codes_dev, f.scales_dev, 0);
    cudaMemcpy(gpu_codes, f.codes_dev, (size_t)k * n, cudaMemcpyDeviceToHost);
    int untouched = 1;
    for (size_t i = 0; i < (size_t)k * n; i++) untouched &= gpu_codes[i] == 0xAB;
    test_check(bad_w == MARLIN_STATUS_INVALID_VALUE && bad_h == MARLIN_STATUS_NOT_POSITIVE_DEFINITE &&
                   bad_shape == MARLIN_STATUS_UNSUPPORTED_SHAPE && bad_null == MARLIN_STATUS_NULL_POINTER && untouched,
               "GPU bad inputs: Inf in W (%s), H = -I (%s), k = 96 (%s), W NULL (%s); codes untouched %d",
               marlin_status_string(bad_w), marlin_status_string(bad_h), marlin_status_string(bad_shape),
               marlin_status_string(bad_null), untouched);

    test_check(marlin_gptq_gpu_destroy(f.gpu) == MARLIN_STATUS_SUCCESS && cudaGetLastError() == cudaSuccess,
               "context destroyed, no CUDA error pending");
    cudaFree(X_dev); cudaFree(X16_dev); cudaFree(H32_dev); cudaFree(H16_dev); cudaFree(f.W_dev); cudaFree(f.H_dev);
    cudaFree(f.codes_dev); cudaFree(f.scales_dev); cudaFree(I2_dev); cudaFree(W16_dev);
    free(X); free(X16); free(M); free(Z); free(H32); free(H16); free(f.W); free(f.H); free(I2); free(rtn_codes);
    free(gpu_codes); free(rtn_scales); free(gpu_scales); free(W16); free(codes16);
    return test_finish();
}
