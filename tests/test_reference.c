/*
 * test_reference.c: pins the C reference multiply (which reads the packed
 * layout) against naive double-precision dequantize-then-multiply computed
 * from the plain codes and scales.
 */
#include "marlin.h"
#include "test_util.h"

int main(void) {
    test_seed("test_reference");
    const int groups[] = {32, 64, 128, -1};
    const int ms[] = {1, 5, 17};
    for (int trial = 0; trial < 12; trial++) {
        int k = 64 * (1 + test_rand_int(5)), n = 64 * (1 + test_rand_int(4)), m = ms[trial % 3];
        int group = groups[trial % 4] < 0 ? k : groups[trial % 4];
        int scale_rows = marlin_scale_rows(k, group);
        size_t count = (size_t)k * n;
        uint8_t* codes = malloc(count);
        uint16_t* scales = malloc((size_t)scale_rows * n * 2);
        uint16_t* packed_scales = malloc((size_t)scale_rows * n * 2);
        uint32_t* packed = malloc(count / 2);
        uint16_t* A = malloc((size_t)m * k * 2);
        float* C = malloc((size_t)m * n * 4);
        for (size_t i = 0; i < count; i++) codes[i] = (uint8_t)test_rand_int(16);
        for (size_t i = 0; i < (size_t)scale_rows * n; i++)
            scales[i] = marlin_fp16_from_float(0.002f + 0.01f * (test_rand_uniform() + 1.0f));
        for (size_t i = 0; i < (size_t)m * k; i++) A[i] = marlin_fp16_from_float(test_rand_uniform());
        marlin_status st = marlin_pack(codes, scales, k, n, group, packed, packed_scales);
        if (st == MARLIN_STATUS_SUCCESS) st = marlin_reference_matmul(A, packed, packed_scales, m, n, k, group, C);

        /* Naive: exact (q - 8) * s in double, no fp16 rounding of the weights. */
        double diff2 = 0.0, ref2 = 0.0;
        for (int i = 0; i < m; i++)
            for (int col = 0; col < n; col++) {
                double sum = 0.0;
                for (int row = 0; row < k; row++)
                    sum += (double)marlin_fp16_to_float(A[(size_t)i * k + row]) *
                           ((double)codes[(size_t)row * n + col] - 8.0) *
                           (double)marlin_fp16_to_float(scales[(size_t)(row / group) * n + col]);
                double d = (double)C[(size_t)i * n + col] - sum;
                diff2 += d * d;
                ref2 += sum * sum;
            }
        double rel = sqrt(diff2 / ref2);
        /* The reference rounds each weight to fp16 (as the kernel does): ~2^-12 relative noise. */
        test_check(st == MARLIN_STATUS_SUCCESS && rel < 1e-3 && ref2 > 0.0,
                   "reference vs naive double, m=%d k=%d n=%d g=%d: rel err %.2e", m, k, n, group, rel);
        free(codes), free(scales), free(packed_scales), free(packed), free(A), free(C);
    }
    {
        uint16_t A[64];
        uint32_t B[64 * 64 / 8];
        uint16_t S[128];
        float C[64];
        test_check(marlin_reference_matmul(A, B, S, 0, 64, 64, 64, C) == MARLIN_STATUS_UNSUPPORTED_SHAPE,
                   "reference: m=0 -> UNSUPPORTED_SHAPE");
        test_check(marlin_reference_matmul(A, NULL, S, 1, 64, 64, 64, C) == MARLIN_STATUS_NULL_POINTER,
                   "reference: NULL B -> NULL_POINTER");
    }
    return test_finish();
}
