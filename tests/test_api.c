/*
 * test_api.c: every bad input of marlin_matmul(_swiglu), the RMSNorm epilogues'
 * marlin_matmul_residual / _rms_scaled(_swiglu) and marlin_workspace_size gets
 * its own status, and a refused call writes nothing. Runs on any machine: the
 * checks before the device query need no GPU; with a GPU present, the
 * device-dependent ones (workspace too small) are exercised too.
 */
#include <cuda_runtime_api.h>

#include "marlin.h"
#include "test_util.h"

int main(void) {
    test_seed("test_api");
    int device_count = 0;
    int have_gpu = cudaGetDeviceCount(&device_count) == cudaSuccess && device_count > 0;
    printf("GPU present: %s\n", have_gpu ? "yes" : "no");

    /* Host buffers stand in for device pointers: a refused call must not touch them. */
    enum { M = 4, K = 128, N = 128, POISON = 0x5A };
    static _Alignas(16) unsigned char A[M * K * 2 + 16], B[K * N / 2 + 16], S[K * N * 2 / 32 + 16],
        C[M * N * 2 + 16], W[1 << 16];
    static _Alignas(16) float F[M * N + 16]; /* x, norm weight and sums of the RMSNorm epilogues */
    for (int i = 0; i < (int)sizeof A; i++) A[i] = (unsigned char)test_rand_int(256);
    memset(C, POISON, sizeof C);
    memset(W, POISON, sizeof W);
    size_t ws = sizeof W;

#define C_UNTOUCHED() (C[0] == POISON && C[sizeof C - 1] == POISON && W[0] == POISON && W[sizeof W - 1] == POISON)
    struct {
        const char* what;
        marlin_status got, want;
    } cases[] = {
        {"NULL A", marlin_matmul(NULL, B, S, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"NULL B", marlin_matmul(A, NULL, S, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"NULL scales", marlin_matmul(A, B, NULL, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"NULL C", marlin_matmul(A, B, S, NULL, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"NULL workspace", marlin_matmul(A, B, S, C, M, N, K, 128, NULL, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"m = 0", marlin_matmul(A, B, S, C, 0, N, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"m = -3", marlin_matmul(A, B, S, C, -3, N, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"k = 100", marlin_matmul(A, B, S, C, M, N, 100, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"n = 96", marlin_matmul(A, B, S, C, M, 96, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"n = 0", marlin_matmul(A, B, S, C, M, 0, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"n = 2^20 + 64", marlin_matmul(A, B, S, C, M, MARLIN_MAX_DIMENSION + 64, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"group 16", marlin_matmul(A, B, S, C, M, N, K, 16, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE},
        {"group 256 (> 128, != k)", marlin_matmul(A, B, S, C, M, N, K, 256, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE},
        {"misaligned A", marlin_matmul(A + 2, B, S, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"misaligned B", marlin_matmul(A, B + 4, S, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"misaligned scales", marlin_matmul(A, B, S + 8, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"misaligned C", marlin_matmul(A, B, S, C + 1, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"misaligned workspace", marlin_matmul(A, B, S, C, M, N, K, 128, W + 4, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"workspace 0 bytes", marlin_matmul(A, B, S, C, M, N, K, 128, W, 0, 0),
         have_gpu ? MARLIN_STATUS_WORKSPACE_TOO_SMALL : MARLIN_STATUS_NO_DEVICE},
        {"swiglu: NULL H", marlin_matmul_swiglu(A, B, S, NULL, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"swiglu: NULL B", marlin_matmul_swiglu(A, NULL, S, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"swiglu: n = 96", marlin_matmul_swiglu(A, B, S, C, M, 96, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"swiglu: group 16", marlin_matmul_swiglu(A, B, S, C, M, N, K, 16, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE},
        {"swiglu: misaligned H", marlin_matmul_swiglu(A, B, S, C + 1, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"swiglu: workspace 0 bytes", marlin_matmul_swiglu(A, B, S, C, M, N, K, 128, W, 0, 0),
         have_gpu ? MARLIN_STATUS_WORKSPACE_TOO_SMALL : MARLIN_STATUS_NO_DEVICE},
        {"residual: NULL x", marlin_matmul_residual(A, B, S, NULL, F, C, F, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"residual: NULL norm weight", marlin_matmul_residual(A, B, S, F, NULL, C, F, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"residual: NULL sums", marlin_matmul_residual(A, B, S, F, F, C, NULL, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"residual: misaligned x", marlin_matmul_residual(A, B, S, F + 1, F, C, F, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"residual: 17 rows", marlin_matmul_residual(A, B, S, F, F, C, F, MARLIN_RMS_MAX_ROWS + 1, N, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"residual: n = 96", marlin_matmul_residual(A, B, S, F, F, C, F, M, 96, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"rms_scaled: NULL sums", marlin_matmul_rms_scaled(A, B, S, NULL, 1e-5f, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"rms_scaled: eps -1", marlin_matmul_rms_scaled(A, B, S, F, -1.0f, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_INVALID_VALUE},
        {"rms_scaled: eps NaN", marlin_matmul_rms_scaled(A, B, S, F, NAN, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_INVALID_VALUE},
        {"rms_scaled: 17 rows", marlin_matmul_rms_scaled(A, B, S, F, 1e-5f, C, MARLIN_RMS_MAX_ROWS + 1, N, K, 128, W, ws, 0), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"rms_scaled_swiglu: NULL H", marlin_matmul_rms_scaled_swiglu(A, B, S, F, 1e-5f, NULL, M, N, K, 128, W, ws, 0), MARLIN_STATUS_NULL_POINTER},
        {"rms_scaled_swiglu: misaligned sums", marlin_matmul_rms_scaled_swiglu(A, B, S, F + 2, 1e-5f, C, M, N, K, 128, W, ws, 0), MARLIN_STATUS_MISALIGNED_POINTER},
        {"rms_scaled_swiglu: workspace 0 bytes", marlin_matmul_rms_scaled_swiglu(A, B, S, F, 1e-5f, C, M, N, K, 128, W, 0, 0),
         have_gpu ? MARLIN_STATUS_WORKSPACE_TOO_SMALL : MARLIN_STATUS_NO_DEVICE},
        {"workspace size: NULL out", marlin_workspace_size(M, N, K, 128, NULL), MARLIN_STATUS_NULL_POINTER},
        {"workspace size: k = 65", marlin_workspace_size(M, N, 65, 128, &ws), MARLIN_STATUS_UNSUPPORTED_SHAPE},
        {"workspace size: group 100", marlin_workspace_size(M, N, K, 100, &ws), MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_check(cases[i].got == cases[i].want && C_UNTOUCHED(), "matmul refuses %s: got \"%s\", want \"%s\"",
                   cases[i].what, marlin_status_string(cases[i].got), marlin_status_string(cases[i].want));

    size_t bytes = 0;
    marlin_status st = marlin_workspace_size(M, N, K, 128, &bytes);
    if (have_gpu)
        test_check(st == MARLIN_STATUS_SUCCESS && bytes > 0, "workspace size on the GPU: %zu bytes", bytes);
    else
        test_check(st == MARLIN_STATUS_NO_DEVICE, "workspace size without a GPU -> NO_DEVICE (\"%s\")",
                   marlin_status_string(st));
    if (have_gpu) {
        /* The size for m rows covers every call of fewer rows (llama2-7b's qkv:
         * one row needs more than 16, with its wider tiles). */
        const int shapes[][2] = {{4096, 12288}, {4096, 4096}, {11008, 4096}, {576, 960}};
        for (int s = 0; s < 4; s++) {
            const int k = shapes[s][0], n = shapes[s][1];
            size_t for_m[65] = {0};
            int ok = 1;
            for (int m = 1; m <= 64; m++) ok &= marlin_workspace_size(m, n, k, 128, &for_m[m]) == MARLIN_STATUS_SUCCESS;
            int covered = 1, first_gap = 0;
            for (int m = 1; m <= 64 && covered; m++)
                for (int smaller = 1; smaller < m; smaller++)
                    if (for_m[smaller] > for_m[m]) covered = 0, first_gap = m;
            test_check(ok && covered, "workspace size for m rows covers every smaller m (k %d, n %d; first gap at m = %d)",
                       k, n, first_gap);
        }
    }
#undef C_UNTOUCHED
    return test_finish();
}
