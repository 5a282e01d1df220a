/*
 * pack.c: converting quantized weights to and from the packed Marlin layout
 * (layout.h), and the two simple ways of getting codes: from fake-quantized
 * fp16 weights, and symmetric round-to-nearest.
 */
#include <math.h>
#include <string.h>

#include "layout.h"
#include "marlin.h"

/* Code q for w with scale s: clamp(round-half-even(w / s) + 8, 0, 15), as torch.round does. */
static uint8_t quantize_one(float w, float s) {
    float q = rintf(w / s) + (float)MARLIN_ZERO_CODE;
    if (q < 0.0f) q = 0.0f;
    if (q > 15.0f) q = 15.0f;
    return (uint8_t)q;
}

marlin_status marlin_pack(const uint8_t* codes, const uint16_t* scales, int k, int n,
                          int group_size, uint32_t* packed_b, uint16_t* packed_scales) {
    if (!codes || !scales || !packed_b || !packed_scales) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    size_t count = (size_t)k * (size_t)n;
    for (size_t i = 0; i < count; i++)
        if (codes[i] > MARLIN_CODE_MASK) return MARLIN_STATUS_INVALID_VALUE;

    memset(packed_b, 0, marlin_packed_weight_bytes(k, n));
    for (int row = 0; row < k; row++) {
        for (int col = 0; col < n; col++) {
            size_t word;
            int shift;
            marlin_layout_weight_position(row, col, n, &word, &shift);
            packed_b[word] |= (uint32_t)codes[(size_t)row * n + col] << shift;
        }
    }
    int scale_rows = marlin_scale_rows(k, group_size);
    for (int row = 0; row < scale_rows; row++)
        for (int col = 0; col < n; col++)
            packed_scales[(size_t)row * n + marlin_layout_scale_position(col)] = scales[(size_t)row * n + col];
    return MARLIN_STATUS_SUCCESS;
}

/* Column of the interleaved order holding [gate | up] column `col` of n. */
static int interleaved_column(int col, int n) {
    int half = n / 2, up = col >= half, feature = up ? col - half : col;
    return (feature / 8) * 16 + (up ? 8 : 0) + feature % 8;
}

marlin_status marlin_interleave_gate_up(const uint8_t* codes, const uint16_t* scales, int k, int n,
                                        int group_size, uint8_t* codes_out, uint16_t* scales_out) {
    if (!codes || !scales || !codes_out || !scales_out) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    for (int row = 0; row < k; row++)
        for (int col = 0; col < n; col++)
            codes_out[(size_t)row * n + interleaved_column(col, n)] = codes[(size_t)row * n + col];
    int scale_rows = marlin_scale_rows(k, group_size);
    for (int row = 0; row < scale_rows; row++)
        for (int col = 0; col < n; col++)
            scales_out[(size_t)row * n + interleaved_column(col, n)] = scales[(size_t)row * n + col];
    return MARLIN_STATUS_SUCCESS;
}

marlin_status marlin_unpack(const uint32_t* packed_b, const uint16_t* packed_scales, int k, int n,
                            int group_size, uint8_t* codes, uint16_t* scales) {
    if (!packed_b || !packed_scales || !codes || !scales) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    for (int row = 0; row < k; row++) {
        for (int col = 0; col < n; col++) {
            size_t word;
            int shift;
            marlin_layout_weight_position(row, col, n, &word, &shift);
            codes[(size_t)row * n + col] = (uint8_t)((packed_b[word] >> shift) & MARLIN_CODE_MASK);
        }
    }
    int scale_rows = marlin_scale_rows(k, group_size);
    for (int row = 0; row < scale_rows; row++)
        for (int col = 0; col < n; col++)
            scales[(size_t)row * n + col] = packed_scales[(size_t)row * n + marlin_layout_scale_position(col)];
    return MARLIN_STATUS_SUCCESS;
}

marlin_status marlin_codes_from_fake_quantized(const uint16_t* weight, const uint16_t* scales,
                                               int n, int k, int group_size, uint8_t* codes) {
    if (!weight || !scales || !codes) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    size_t scale_count = (size_t)marlin_scale_rows(k, group_size) * (size_t)n;
    for (size_t i = 0; i < scale_count; i++) {
        float s = marlin_fp16_to_float(scales[i]);
        if (!(s > 0.0f) || isinf(s)) return MARLIN_STATUS_INVALID_VALUE;
    }
    size_t weight_count = (size_t)n * (size_t)k;
    for (size_t i = 0; i < weight_count; i++)
        if (!isfinite(marlin_fp16_to_float(weight[i]))) return MARLIN_STATUS_INVALID_VALUE;

    for (int out = 0; out < n; out++) {
        for (int in = 0; in < k; in++) {
            float w = marlin_fp16_to_float(weight[(size_t)out * k + in]);
            float s = marlin_fp16_to_float(scales[(size_t)(in / group_size) * n + out]);
            codes[(size_t)in * n + out] = quantize_one(w, s);
        }
    }
    return MARLIN_STATUS_SUCCESS;
}

/* fp16 bits of the RTN scale max|w| / 7 of weights w[begin, end). */
static uint16_t rtn_scale_bits(const float* w, int begin, int end) {
    float max_abs = 0.0f;
    for (int in = begin; in < end; in++) max_abs = fmaxf(max_abs, fabsf(w[in]));
    return marlin_fp16_from_float(max_abs / 7.0f);
}

marlin_status marlin_quantize_rtn(const float* weight, int n, int k, int group_size,
                                  uint8_t* codes, uint16_t* scales) {
    if (!weight || !codes || !scales) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    size_t weight_count = (size_t)n * (size_t)k;
    for (size_t i = 0; i < weight_count; i++)
        if (!isfinite(weight[i])) return MARLIN_STATUS_INVALID_VALUE;

    int scale_rows = marlin_scale_rows(k, group_size);
    /* Every scale must fit fp16; check all before writing anything. */
    for (int out = 0; out < n; out++)
        for (int group = 0; group < scale_rows; group++) {
            int begin = group * group_size, end = begin + group_size < k ? begin + group_size : k;
            if (isinf(marlin_fp16_to_float(rtn_scale_bits(weight + (size_t)out * k, begin, end))))
                return MARLIN_STATUS_INVALID_VALUE;
        }
    for (int out = 0; out < n; out++) {
        const float* w = weight + (size_t)out * k;
        for (int group = 0; group < scale_rows; group++) {
            int begin = group * group_size, end = begin + group_size < k ? begin + group_size : k;
            uint16_t scale_bits = rtn_scale_bits(w, begin, end);
            float s = marlin_fp16_to_float(scale_bits);
            if (s == 0.0f) { /* all-zero (or fp16-underflowing) group: any scale gives code 8 */
                scale_bits = marlin_fp16_from_float(1.0f);
                s = 1.0f;
            }
            scales[(size_t)group * n + out] = scale_bits;
            for (int in = begin; in < end; in++) codes[(size_t)in * n + out] = quantize_one(w[in], s);
        }
    }
    return MARLIN_STATUS_SUCCESS;
}
