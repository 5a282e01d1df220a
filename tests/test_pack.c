/*
 * test_pack.c: the host-side format code: fp16 conversion, the packed layout
 * (checked against an independent decoder written from docs/layout.md),
 * pack/unpack round trips, codes from fake-quantized weights, round-to-nearest,
 * and refusal of bad inputs without touching the outputs.
 */
#include "marlin.h"
#include "test_util.h"

static const int kGroupChoices[] = {32, 64, 128, -1 /* per column: g = k */};

static void test_fp16(void) {
    int round_trip_bad = 0;
    for (uint32_t bits = 0; bits < 65536; bits++) {
        float f = marlin_fp16_to_float((uint16_t)bits);
        if (isnan(f)) continue;
        if (marlin_fp16_from_float(f) != bits) round_trip_bad++;
    }
    test_check(round_trip_bad == 0, "fp16: all 63488 non-NaN halves round-trip (%d bad)", round_trip_bad);

    /* Random floats land on the nearest half (ties aside, which have probability ~0). */
    int not_nearest = 0;
    for (int i = 0; i < 200000; i++) {
        float f = test_rand_normal() * powf(2.0f, (float)(test_rand_int(36) - 22)); /* |f| < 65504 */
        uint16_t h = marlin_fp16_from_float(f);
        double err = fabs((double)marlin_fp16_to_float(h) - f);
        for (int d = -1; d <= 1; d += 2) {
            uint16_t other = (uint16_t)(h + d);
            float o = marlin_fp16_to_float(other);
            if (!isnan(o) && !isinf(o) && ((h ^ other) & 0x8000) == 0 && fabs((double)o - f) < err) not_nearest++;
        }
    }
    test_check(not_nearest == 0, "fp16: random floats round to the nearest half (%d not)", not_nearest);
    test_check(marlin_fp16_from_float(65520.0f) == 0x7C00 && marlin_fp16_from_float(65519.0f) == 0x7BFF &&
                   marlin_fp16_from_float(-1.0f) == 0xBC00 && marlin_fp16_from_float(5.9604645e-8f) == 0x0001,
               "fp16: overflow, sign and subnormal edge cases");
}

/* Decoder written independently from the prose in docs/layout.md. */
static void decode_word_position(size_t word, int n, int nibble, int* row, int* col) {
    size_t tile = word / 128;
    int lane = (int)(word % 128) / 4, s = (int)(word % 4);
    int tile_k = (int)(tile / (size_t)(n / 64)), tile_n = (int)(tile % (size_t)(n / 64));
    int g = lane / 4, t = lane % 4, pair = nibble % 4, hi = nibble / 4;
    *col = tile_n * 64 + 16 * s + 8 * (pair / 2) + g;
    *row = tile_k * 16 + 2 * t + 8 * (pair % 2) + hi;
}

static void random_codes_and_scales(uint8_t* codes, uint16_t* scales, int k, int n, int group) {
    for (size_t i = 0; i < (size_t)k * n; i++) codes[i] = (uint8_t)test_rand_int(16);
    for (size_t i = 0; i < (size_t)marlin_scale_rows(k, group) * n; i++)
        scales[i] = marlin_fp16_from_float(0.001f + 0.02f * (test_rand_uniform() + 1.0f));
}

static void test_layout_and_round_trip(void) {
    for (int trial = 0; trial < 12; trial++) {
        int k = 64 * (1 + test_rand_int(6)), n = 64 * (1 + test_rand_int(6));
        int group = kGroupChoices[trial % 4] < 0 ? k : kGroupChoices[trial % 4];
        size_t count = (size_t)k * n, scale_count = (size_t)marlin_scale_rows(k, group) * n;
        uint8_t* codes = malloc(count);
        uint8_t* codes_back = malloc(count);
        uint16_t* scales = malloc(scale_count * 2);
        uint16_t* scales_back = malloc(scale_count * 2);
        uint16_t* packed_scales = malloc(scale_count * 2);
        uint32_t* packed = malloc(count / 2);
        random_codes_and_scales(codes, scales, k, n, group);
        marlin_status st = marlin_pack(codes, scales, k, n, group, packed, packed_scales);
        int layout_bad = 0;
        for (size_t w = 0; w < count / 8; w++)
            for (int p = 0; p < 8; p++) {
                int row, col;
                decode_word_position(w, n, p, &row, &col);
                if (((packed[w] >> (4 * p)) & 15u) != codes[(size_t)row * n + col]) layout_bad++;
            }
        /* Scale layout: entry 8g + 2s + j of each 64-column block is column 16s + 8j + g. */
        int scale_bad = 0;
        for (int r = 0; r < marlin_scale_rows(k, group); r++)
            for (int pos = 0; pos < n; pos++) {
                int base = pos / 64 * 64, p = pos % 64, g = p / 8, s = (p % 8) / 2, j = p % 2;
                if (packed_scales[(size_t)r * n + pos] != scales[(size_t)r * n + base + 16 * s + 8 * j + g]) scale_bad++;
            }
        marlin_status st2 = marlin_unpack(packed, packed_scales, k, n, group, codes_back, scales_back);
        test_check(st == MARLIN_STATUS_SUCCESS && st2 == MARLIN_STATUS_SUCCESS && layout_bad == 0 && scale_bad == 0 &&
                       memcmp(codes, codes_back, count) == 0 && memcmp(scales, scales_back, scale_count * 2) == 0,
                   "pack/unpack k=%d n=%d g=%d: layout mismatches %d, scale mismatches %d, round trip exact",
                   k, n, group, layout_bad, scale_bad);
        free(codes), free(codes_back), free(scales), free(scales_back), free(packed_scales), free(packed);
    }
}

static void test_fake_quantized_and_rtn(void) {
    for (int trial = 0; trial < 8; trial++) {
        int k = 64 * (1 + test_rand_int(5)), n = 64 * (1 + test_rand_int(4));
        int group = kGroupChoices[trial % 4] < 0 ? k : kGroupChoices[trial % 4];
        size_t count = (size_t)k * n, scale_count = (size_t)marlin_scale_rows(k, group) * n;
        uint8_t* codes = malloc(count);
        uint8_t* codes_back = malloc(count);
        uint16_t* scales = malloc(scale_count * 2);
        uint16_t* weight_fp16 = malloc(count * 2);
        float* weight = malloc(count * 4);
        random_codes_and_scales(codes, scales, k, n, group);
        /* Fake-quantized weights as a Linear layer holds them: n x k fp16. */
        for (int out = 0; out < n; out++)
            for (int in = 0; in < k; in++) {
                float s = marlin_fp16_to_float(scales[(size_t)(in / group) * n + out]);
                weight_fp16[(size_t)out * k + in] =
                    marlin_fp16_from_float((float)(codes[(size_t)in * n + out] - 8) * s);
            }
        marlin_status st = marlin_codes_from_fake_quantized(weight_fp16, scales, n, k, group, codes_back);
        test_check(st == MARLIN_STATUS_SUCCESS && memcmp(codes, codes_back, count) == 0,
                   "fake-quantized fp16 -> codes exact, k=%d n=%d g=%d", k, n, group);

        /* RTN: codes in range, scale = fp16(max|w|/7), each weight within half a step. */
        for (size_t i = 0; i < count; i++) weight[i] = test_rand_normal() * 0.05f;
        uint16_t* rtn_scales = malloc(scale_count * 2);
        st = marlin_quantize_rtn(weight, n, k, group, codes_back, rtn_scales);
        int bad = 0;
        for (int out = 0; out < n; out++) {
            for (int gi = 0; gi < marlin_scale_rows(k, group); gi++) {
                float max_abs = 0.0f;
                for (int in = gi * group; in < k && in < (gi + 1) * group; in++)
                    max_abs = fmaxf(max_abs, fabsf(weight[(size_t)out * k + in]));
                if (rtn_scales[(size_t)gi * n + out] != marlin_fp16_from_float(max_abs / 7.0f)) bad++;
            }
            for (int in = 0; in < k; in++) {
                uint8_t q = codes_back[(size_t)in * n + out];
                float s = marlin_fp16_to_float(rtn_scales[(size_t)(in / group) * n + out]);
                float w = weight[(size_t)out * k + in];
                if (q > 15 || fabsf((q - 8) * s - w) > 0.5f * s * 1.001f) bad++;
            }
        }
        test_check(st == MARLIN_STATUS_SUCCESS && bad == 0, "RTN k=%d n=%d g=%d: codes, scales, error <= s/2 (%d bad)",
                   k, n, group, bad);
        free(codes), free(codes_back), free(scales), free(weight_fp16), free(weight), free(rtn_scales);
    }
}

/* marlin_interleave_gate_up against its definition, written out naively:
 * column 16t + s holds gate feature 8t + s (s < 8), column 16t + 8 + s up
 * feature 8t + s; every output element written once (poisoned before). */
static void test_interleave_gate_up(void) {
    for (int trial = 0; trial < 6; trial++) {
        int k = 64 * (1 + test_rand_int(4)), n = 64 * (1 + test_rand_int(5));
        int group = kGroupChoices[trial % 4] < 0 ? k : kGroupChoices[trial % 4];
        int scale_rows = marlin_scale_rows(k, group);
        uint8_t* codes = malloc((size_t)k * n);
        uint8_t* codes_out = malloc((size_t)k * n);
        uint16_t* scales = malloc((size_t)scale_rows * n * 2);
        uint16_t* scales_out = malloc((size_t)scale_rows * n * 2);
        random_codes_and_scales(codes, scales, k, n, group);
        memset(codes_out, 0xEE, (size_t)k * n);
        memset(scales_out, 0xEE, (size_t)scale_rows * n * 2);
        marlin_status st = marlin_interleave_gate_up(codes, scales, k, n, group, codes_out, scales_out);
        size_t wrong = 0;
        for (int col = 0; col < n; col++) {
            int t = col / 16, s = col % 16;
            int source = s < 8 ? 8 * t + s : n / 2 + 8 * t + (s - 8);
            for (int row = 0; row < k; row++) wrong += codes_out[(size_t)row * n + col] != codes[(size_t)row * n + source];
            for (int row = 0; row < scale_rows; row++)
                wrong += scales_out[(size_t)row * n + col] != scales[(size_t)row * n + source];
        }
        test_check(st == MARLIN_STATUS_SUCCESS && wrong == 0, "interleave gate/up k=%d n=%d g=%d: %zu elements wrong",
                   k, n, group, wrong);
        free(codes), free(codes_out), free(scales), free(scales_out);
    }
}

static void test_bad_inputs(void) {
    enum { K = 128, N = 64 };
    static uint8_t codes[K * N];
    static uint16_t scales[(K / 32) * N], out_scales[(K / 32) * N];
    static uint32_t packed[K * N / 8];
    static float weight[K * N];
    random_codes_and_scales(codes, scales, K, N, 32);
    for (int i = 0; i < K * N; i++) weight[i] = test_rand_normal();
    memset(packed, 0xA5, sizeof packed);
    memset(out_scales, 0xA5, sizeof out_scales);

#define UNTOUCHED() (packed[0] == 0xA5A5A5A5u && packed[K * N / 8 - 1] == 0xA5A5A5A5u && out_scales[0] == 0xA5A5)
    test_check(marlin_pack(NULL, scales, K, N, 32, packed, out_scales) == MARLIN_STATUS_NULL_POINTER && UNTOUCHED(),
               "pack: NULL codes -> NULL_POINTER, outputs untouched");
    test_check(marlin_pack(codes, scales, K, 96, 32, packed, out_scales) == MARLIN_STATUS_UNSUPPORTED_SHAPE && UNTOUCHED(),
               "pack: n=96 -> UNSUPPORTED_SHAPE");
    test_check(marlin_pack(codes, scales, 0, N, 32, packed, out_scales) == MARLIN_STATUS_UNSUPPORTED_SHAPE && UNTOUCHED(),
               "pack: k=0 -> UNSUPPORTED_SHAPE");
    test_check(marlin_pack(codes, scales, K, N, 48, packed, out_scales) == MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE && UNTOUCHED(),
               "pack: g=48 -> UNSUPPORTED_GROUP_SIZE");
    codes[K * N - 1] = 16;
    test_check(marlin_pack(codes, scales, K, N, 32, packed, out_scales) == MARLIN_STATUS_INVALID_VALUE && UNTOUCHED(),
               "pack: code 16 -> INVALID_VALUE, outputs untouched");
    codes[K * N - 1] = 3;
    weight[17] = NAN;
    test_check(marlin_quantize_rtn(weight, N, K, 32, codes, out_scales) == MARLIN_STATUS_INVALID_VALUE &&
                   out_scales[0] == 0xA5A5 && codes[K * N - 1] == 3,
               "rtn: NaN weight -> INVALID_VALUE, outputs untouched");
    weight[17] = INFINITY;
    test_check(marlin_quantize_rtn(weight, N, K, 32, codes, out_scales) == MARLIN_STATUS_INVALID_VALUE,
               "rtn: Inf weight -> INVALID_VALUE");
    weight[17] = 1e6f; /* scale 1e6/7 does not fit fp16 */
    test_check(marlin_quantize_rtn(weight, N, K, 32, codes, out_scales) == MARLIN_STATUS_INVALID_VALUE && out_scales[0] == 0xA5A5,
               "rtn: weight too large for an fp16 scale -> INVALID_VALUE");
    scales[5] = 0; /* zero scale */
    uint16_t fake[K * N];
    for (int i = 0; i < K * N; i++) fake[i] = marlin_fp16_from_float(0.01f);
    test_check(marlin_codes_from_fake_quantized(fake, scales, N, K, 32, codes) == MARLIN_STATUS_INVALID_VALUE && codes[K * N - 1] == 3,
               "fake-quantized: zero scale -> INVALID_VALUE, codes untouched");
    static uint8_t codes_out[K * N];
    memset(codes_out, 0xA5, sizeof codes_out);
    test_check(marlin_interleave_gate_up(codes, NULL, K, N, 32, codes_out, out_scales) == MARLIN_STATUS_NULL_POINTER &&
                   codes_out[0] == 0xA5 && UNTOUCHED(),
               "interleave: NULL scales -> NULL_POINTER, outputs untouched");
    test_check(marlin_interleave_gate_up(codes, scales, K, 96, 32, codes_out, out_scales) == MARLIN_STATUS_UNSUPPORTED_SHAPE &&
                   codes_out[0] == 0xA5 && UNTOUCHED(),
               "interleave: n=96 -> UNSUPPORTED_SHAPE, outputs untouched");
    test_check(marlin_interleave_gate_up(codes, scales, K, N, 48, codes_out, out_scales) ==
                       MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE && codes_out[0] == 0xA5 && UNTOUCHED(),
               "interleave: g=48 -> UNSUPPORTED_GROUP_SIZE, outputs untouched");
    test_check(marlin_unpack(packed, NULL, K, N, 32, codes, out_scales) == MARLIN_STATUS_NULL_POINTER,
               "unpack: NULL scales -> NULL_POINTER");
    test_check(marlin_scale_rows(576, 128) == 5 && marlin_scale_bytes(576, 64, 128) == 640 &&
                   marlin_packed_weight_bytes(576, 64) == 576 * 32,
               "sizes: 576 rows in groups of 128 -> 5 scale rows");
    int strings_ok = 1;
    for (int s = MARLIN_STATUS_SUCCESS; s <= MARLIN_STATUS_OUT_OF_MEMORY; s++)
        if (!marlin_status_string((marlin_status)s) || strcmp(marlin_status_string((marlin_status)s), "unknown status") == 0)
            strings_ok = 0;
    test_check(strings_ok, "every status has its own string");
#undef UNTOUCHED
}

int main(void) {
    test_seed("test_pack");
    test_fp16();
    test_layout_and_round_trip();
    test_fake_quantized_and_rtn();
    test_interleave_gate_up();
    test_bad_inputs();
    return test_finish();
}
