/*
 * reference.c: the C reference multiply. It reads the packed layout itself
 * (through layout.h), dequantizes each weight exactly as the kernel does
 * (fp16((q - 8) * s)), and sums products in double, so it is the yardstick
 * every GPU result is held against.
 */
#include <stdlib.h>

#include "layout.h"
#include "marlin.h"

marlin_status marlin_reference_matmul(const uint16_t* A, const uint32_t* packed_b,
                                      const uint16_t* packed_scales, int m, int n, int k,
                                      int group_size, float* C) {
    if (!A || !packed_b || !packed_scales || !C) return MARLIN_STATUS_NULL_POINTER;
    if (m < 1) return MARLIN_STATUS_UNSUPPORTED_SHAPE;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;

    /* Dequantize B (k x n) once, straight from the packed words. */
    float* weights = malloc((size_t)k * (size_t)n * sizeof(float));
    double* row_sum = malloc((size_t)n * sizeof(double));
    double* a_row = malloc((size_t)k * sizeof(double));
    if (!weights || !row_sum || !a_row) {
        free(weights), free(row_sum), free(a_row);
        return MARLIN_STATUS_OUT_OF_MEMORY;
    }
    for (int row = 0; row < k; row++) {
        const uint16_t* scale_row = packed_scales + (size_t)(row / group_size) * n;
        for (int col = 0; col < n; col++) {
            size_t word;
            int shift;
            marlin_layout_weight_position(row, col, n, &word, &shift);
            int q = (int)((packed_b[word] >> shift) & MARLIN_CODE_MASK);
            float s = marlin_fp16_to_float(scale_row[marlin_layout_scale_position(col)]);
            weights[(size_t)row * n + col] =
                marlin_fp16_to_float(marlin_fp16_from_float((float)(q - MARLIN_ZERO_CODE) * s));
        }
    }
    for (int i = 0; i < m; i++) {
        for (int col = 0; col < n; col++) row_sum[col] = 0.0;
        for (int row = 0; row < k; row++) a_row[row] = marlin_fp16_to_float(A[(size_t)i * k + row]);
        for (int row = 0; row < k; row++) {
            const float* w = weights + (size_t)row * n;
            double a = a_row[row];
            for (int col = 0; col < n; col++) row_sum[col] += a * (double)w[col];
        }
        for (int col = 0; col < n; col++) C[(size_t)i * n + col] = (float)row_sum[col];
    }
    free(weights), free(row_sum), free(a_row);
    return MARLIN_STATUS_SUCCESS;
}
