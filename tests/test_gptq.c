/*
 * test_gptq.c: GPTQ on the CPU (marlin_gptq.h) against round-to-nearest and
 * against naive double-precision code.
 *
 * The quality measure is the layer's output error ||X W^T - X Q^T||^2 over
 * the calibration inputs themselves, computed in double as
 * sum_r d_r^T (X^T X) d_r with d_r = W_r - Q_r (Q the fp16-rounded
 * dequantized weights the kernel multiplies by).
 *
 * Cases: the Hessian against a double X^T X; correlated inputs (X = Z M, so
 * H's eigenvalues spread widely) where GPTQ must beat RTN by 25% for g = 128,
 * 32 and per-column, with and without act-order, and clipping must not hurt;
 * white inputs where GPTQ stays within 5% of RTN (and equals it exactly for
 * H = c I); dead inputs; pack + reference multiply; the fp16 entry points;
 * and every bad input giving its error without touching the outputs.
 */
#include "marlin_gptq.h"
#include "test_util.h"

/* ------------------------------------------------------------- helpers -- */

typedef struct {
    int rows, k;
    float* X;     /* rows x k */
    float* H;     /* k x k, from marlin_hessian_accumulate */
    double* XtX;  /* k x k, naive double X^T X */
} calibration;

/* X = Z M (correlated; M random k x k) or X = Z (white). */
static calibration make_calibration(int rows, int k, int correlated) {
    calibration c = {rows, k, malloc(sizeof(float) * rows * k), calloc((size_t)k * k, sizeof(float)),
                     calloc((size_t)k * k, sizeof(double))};
    float* Z = malloc(sizeof(float) * rows * k);
    for (int i = 0; i < rows * k; i++) Z[i] = test_rand_normal();
    if (correlated) {
        float* M = malloc(sizeof(float) * k * k);
        for (int i = 0; i < k * k; i++) M[i] = test_rand_normal() / sqrtf((float)k);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int m = 0; m < k; m++) s += (double)Z[r * k + m] * M[m * k + j];
                c.X[r * k + j] = (float)s;
            }
        free(M);
    } else {
        memcpy(c.X, Z, sizeof(float) * rows * k);
    }
    free(Z);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) c.XtX[i * k + j] += (double)c.X[r * k + i] * c.X[r * k + j];
    int64_t seen = 0;
    marlin_hessian_accumulate(c.H, &seen, c.X, rows, k);
    return c;
}

static void free_calibration(calibration* c) {
    free(c->X);
    free(c->H);
    free(c->XtX);
}

static float* random_weights(int n, int k) {
    float* W = malloc(sizeof(float) * n * k);
    for (int i = 0; i < n * k; i++) W[i] = 0.02f * test_rand_normal();
    return W;
}

/* Dequantized weight of output r, input i. */
static float dequant(const uint8_t* codes, const uint16_t* scales, int n, int g, int r, int i) {
    float s = marlin_fp16_to_float(scales[(size_t)(i / g) * n + r]);
    return marlin_fp16_to_float(marlin_fp16_from_float((float)(codes[(size_t)i * n + r] - 8) * s));
}

/* ||X W^T - X Q^T||^2 through X^T X, in double. */
static double output_error(const calibration* c, const float* W, int n, const uint8_t* codes,
                           const uint16_t* scales, int g) {
    int k = c->k;
    double* d = malloc(sizeof(double) * k);
    double total = 0;
    for (int r = 0; r < n; r++) {
        for (int i = 0; i < k; i++) d[i] = (double)W[(size_t)r * k + i] - dequant(codes, scales, n, g, r, i);
        for (int i = 0; i < k; i++) {
            double s = 0;
            for (int j = 0; j < k; j++) s += c->XtX[(size_t)i * k + j] * d[j];
            total += d[i] * s;
        }
    }
    free(d);
    return total;
}

/* Codes in 0..15 and scales positive and finite. */
static int valid_result(const uint8_t* codes, const uint16_t* scales, int n, int k, int g) {
    for (size_t i = 0; i < (size_t)k * n; i++)
        if (codes[i] > 15) return 0;
    for (size_t i = 0; i < (size_t)marlin_scale_rows(k, g) * n; i++) {
        float s = marlin_fp16_to_float(scales[i]);
        if (!(s > 0) || isinf(s)) return 0;
    }
    return 1;
}

typedef struct {
    uint8_t* codes;
    uint16_t* scales;
    marlin_status status;
} quantized;

static quantized run_gptq(const float* W, int n, int k, const float* H, int g, const marlin_gptq_options* o) {
    quantized q = {malloc((size_t)k * n), malloc(marlin_scale_bytes(k, n, g)), MARLIN_STATUS_SUCCESS};
    q.status = marlin_gptq_quantize(W, n, k, H, g, o, q.codes, q.scales);
    return q;
}

static quantized run_rtn(const float* W, int n, int k, int g) {
    quantized q = {malloc((size_t)k * n), malloc(marlin_scale_bytes(k, n, g)), MARLIN_STATUS_SUCCESS};
    q.status = marlin_quantize_rtn(W, n, k, g, q.codes, q.scales);
    return q;
}

static void free_quantized(quantized* q) {
    free(q->codes);
    free(q->scales);
}

/* --------------------------------------------------------------- cases -- */

static void test_hessian(void) {
    int k = 72, sizes[] = {1, 37, 100, 5};
    int total = 0;
    float* H = calloc((size_t)k * k, sizeof(float));
    float* H16 = calloc((size_t)k * k, sizeof(float));
    double* ref = calloc((size_t)k * k, sizeof(double));
    int64_t seen = 0, seen16 = 0;
    int ok = 1, exact16 = 1;
    for (int b = 0; b < 4; b++) {
        int rows = sizes[b];
        float* X = malloc(sizeof(float) * rows * k);
        uint16_t* X16 = malloc(sizeof(uint16_t) * rows * k);
        for (int i = 0; i < rows * k; i++) {
            X16[i] = marlin_fp16_from_float(3.0f * test_rand_normal());
            X[i] = marlin_fp16_to_float(X16[i]);
        }
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) ref[i * k + j] += (double)X[r * k + i] * X[r * k + j];
        total += rows;
        ok &= marlin_hessian_accumulate(H, &seen, X, rows, k) == MARLIN_STATUS_SUCCESS;
        ok &= marlin_hessian_accumulate_fp16(H16, &seen16, X16, rows, k) == MARLIN_STATUS_SUCCESS;
        free(X);
        free(X16);
    }
    double worst = 0;
    int symmetric = 1;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double expect = 2.0 * ref[i * k + j] / total;
            double scale = 2.0 * sqrt(ref[i * k + i] * ref[j * k + j]) / total;
            double e = fabs(H[i * k + j] - expect) / scale;
            if (e > worst) worst = e;
            symmetric &= H[i * k + j] == H[j * k + i];
            exact16 &= H[i * k + j] == H16[i * k + j];
        }
    test_check(ok && seen == total && worst < 1e-5 && symmetric,
               "hessian: 4 batches (%d rows) vs double (2/N) X^T X: max error %.2e of sqrt(H_ii H_jj), symmetric %d",
               total, worst, symmetric);
    test_check(exact16 && seen16 == total, "hessian: fp16 input gives exactly the fp32 result on the same values");
    free(H);
    free(H16);
    free(ref);
}

/* GPTQ vs RTN on correlated inputs, for one group size, with and without act-order. */
static void test_correlated(const calibration* c, int n, int g, const char* label) {
    int k = c->k;
    float* W = random_weights(n, k);
    quantized rtn = run_rtn(W, n, k, g);
    double rtn_error = output_error(c, W, n, rtn.codes, rtn.scales, g);
    for (int act_order = 0; act_order <= 1; act_order++) {
        marlin_gptq_options o;
        marlin_gptq_default_options(&o);
        o.act_order = act_order;
        quantized clipped = run_gptq(W, n, k, c->H, g, &o);
        o.clip_grid_points = 1;
        quantized plain = run_gptq(W, n, k, c->H, g, &o);
        double e_clip = output_error(c, W, n, clipped.codes, clipped.scales, g);
        double e_plain = output_error(c, W, n, plain.codes, plain.scales, g);
        int ok = clipped.status == MARLIN_STATUS_SUCCESS && plain.status == MARLIN_STATUS_SUCCESS &&
                 valid_result(clipped.codes, clipped.scales, n, k, g) && valid_result(plain.codes, plain.scales, n, k, g);
        test_check(ok && e_plain <= 0.75 * rtn_error,
                   "correlated %s act_order=%d: GPTQ (no clipping) error / RTN = %.3f (need <= 0.75)", label,
                   act_order, e_plain / rtn_error);
        test_check(ok && e_clip <= 0.75 * rtn_error && e_clip <= e_plain,
                   "correlated %s act_order=%d: GPTQ with clipping / RTN = %.3f, / without clipping = %.3f (need <= 1)",
                   label, act_order, e_clip / rtn_error, e_clip / e_plain);
        free_quantized(&clipped);
        free_quantized(&plain);
    }
    free_quantized(&rtn);
    free(W);
}

static void test_white(int n, int k) {
    /* 64 k rows: the sample H is within about 25% of 2 I in every direction. */
    calibration c = make_calibration(64 * k, k, 0);
    float* W = random_weights(n, k);
    int g = 128;
    quantized rtn = run_rtn(W, n, k, g);
    double rtn_error = output_error(&c, W, n, rtn.codes, rtn.scales, g);
    marlin_gptq_options o;
    marlin_gptq_default_options(&o);
    o.clip_grid_points = 1;
    quantized plain = run_gptq(W, n, k, c.H, g, &o);
    double ratio = output_error(&c, W, n, plain.codes, plain.scales, g) / rtn_error;
    test_check(plain.status == MARLIN_STATUS_SUCCESS && fabs(ratio - 1) <= 0.05,
               "white inputs (%d rows), no clipping: GPTQ / RTN error = %.4f (need within 5%%)", c.rows, ratio);
    marlin_gptq_default_options(&o);
    quantized clipped = run_gptq(W, n, k, c.H, g, &o);
    double clip_ratio = output_error(&c, W, n, clipped.codes, clipped.scales, g) / rtn_error;
    test_check(clipped.status == MARLIN_STATUS_SUCCESS && clip_ratio <= 1.0,
               "white inputs, clipping: GPTQ / RTN error = %.4f (need <= 1)", clip_ratio);

    /* H exactly proportional to I: no feedback at all, so exactly RTN. */
    float* H = calloc((size_t)k * k, sizeof(float));
    for (int i = 0; i < k; i++) H[i * k + i] = 2.0f;
    o.clip_grid_points = 1;
    int same = 1;
    for (int act_order = 0; act_order <= 1; act_order++) {
        o.act_order = act_order;
        quantized exact = run_gptq(W, n, k, H, g, &o);
        same &= exact.status == MARLIN_STATUS_SUCCESS && !memcmp(exact.codes, rtn.codes, (size_t)k * n) &&
                !memcmp(exact.scales, rtn.scales, marlin_scale_bytes(k, n, g));
        free_quantized(&exact);
    }
    test_check(same, "H = 2 I, no clipping: codes and scales identical to marlin_quantize_rtn (both orders)");
    free(H);
    free_quantized(&rtn);
    free_quantized(&plain);
    free_quantized(&clipped);
    free(W);
    free_calibration(&c);
}

/* The result packs and multiplies (marlin_reference_matmul) to X Q^T, checked
 * against naive double code on the same fp16 inputs. */
static void test_pack_and_multiply(const calibration* c, int n, int g) {
    int k = c->k, m = 16;
    float* W = random_weights(n, k);
    quantized q = run_gptq(W, n, k, c->H, g, NULL);
    uint32_t* packed = malloc(marlin_packed_weight_bytes(k, n));
    uint16_t* packed_scales = malloc(marlin_scale_bytes(k, n, g));
    uint16_t* A = malloc(sizeof(uint16_t) * m * k);
    float* C = malloc(sizeof(float) * m * n);
    for (int i = 0; i < m * k; i++) A[i] = marlin_fp16_from_float(c->X[i]);
    int ok = q.status == MARLIN_STATUS_SUCCESS && valid_result(q.codes, q.scales, n, k, g) &&
             marlin_pack(q.codes, q.scales, k, n, g, packed, packed_scales) == MARLIN_STATUS_SUCCESS &&
             marlin_reference_matmul(A, packed, packed_scales, m, n, k, g, C) == MARLIN_STATUS_SUCCESS;
    double worst = 0;
    for (int i = 0; ok && i < m; i++)
        for (int r = 0; r < n; r++) {
            double s = 0, magnitude = 0;
            for (int j = 0; j < k; j++) {
                double term = (double)marlin_fp16_to_float(A[i * k + j]) * dequant(q.codes, q.scales, n, g, r, j);
                s += term;
                magnitude += fabs(term);
            }
            double e = fabs(C[i * n + r] - s) / (magnitude + 1e-30);
            if (e > worst) worst = e;
        }
    test_check(ok && worst < 1e-6,
               "g=%d: codes in 0..15, scales > 0 finite; packs and multiplies to X Q^T (max error %.1e of sum |terms|)", g,
               worst);
    free(W);
    free_quantized(&q);
    free(packed);
    free(packed_scales);
    free(A);
    free(C);
}

static void test_dead_inputs(int n, int k) {
    calibration c = make_calibration(2 * k, k, 1);
    int dead[] = {0, 5, k - 1};
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < k; i++) c.H[dead[d] * k + i] = c.H[i * k + dead[d]] = 0.0f;
    float* W = random_weights(n, k);
    int ok = 1;
    for (int act_order = 0; act_order <= 1; act_order++) {
        marlin_gptq_options o;
        marlin_gptq_default_options(&o);
        o.act_order = act_order;
        quantized q = run_gptq(W, n, k, c.H, 64, &o);
        ok &= q.status == MARLIN_STATUS_SUCCESS && valid_result(q.codes, q.scales, n, k, 64);
        for (int d = 0; ok && d < 3; d++)
            for (int r = 0; r < n; r++) ok &= q.codes[(size_t)dead[d] * n + r] == 8;
        free_quantized(&q);
    }
    test_check(ok, "dead inputs (H_ii = 0 for 3 columns): success, their weights quantized to 0 (code 8)");
    free(W);
    free_calibration(&c);
}

/* Block size changes only when errors are applied, not the order of the
 * operations on any one weight, so the result must be bitwise the same; the
 * odd sizes exercise the cut of blocks at group starts (96 with g = 128). */
static void test_block_sizes(const calibration* c, int n) {
    int k = c->k, g = 128, blocks[] = {1, 7, 96, 128, 100000};
    float* W = random_weights(n, k);
    marlin_gptq_options o;
    marlin_gptq_default_options(&o);
    quantized first = run_gptq(W, n, k, c->H, g, &o);
    int ok = first.status == MARLIN_STATUS_SUCCESS;
    for (int b = 0; b < 5; b++) {
        o.block_size = blocks[b];
        quantized q = run_gptq(W, n, k, c->H, g, &o);
        ok &= q.status == MARLIN_STATUS_SUCCESS && !memcmp(q.codes, first.codes, (size_t)k * n) &&
              !memcmp(q.scales, first.scales, marlin_scale_bytes(k, n, g));
        free_quantized(&q);
    }
    test_check(ok, "block sizes 1, 7, 96, 128, 100000 (g=128): bitwise identical codes and scales");
    free_quantized(&first);
    free(W);
}

static void test_fp16_weights(const calibration* c, int n) {
    int k = c->k, g = 64;
    uint16_t* W16 = malloc(sizeof(uint16_t) * n * k);
    float* W = malloc(sizeof(float) * n * k);
    for (int i = 0; i < n * k; i++) {
        W16[i] = marlin_fp16_from_float(0.02f * test_rand_normal());
        W[i] = marlin_fp16_to_float(W16[i]);
    }
    quantized a = run_gptq(W, n, k, c->H, g, NULL);
    quantized b = {malloc((size_t)k * n), malloc(marlin_scale_bytes(k, n, g)), MARLIN_STATUS_SUCCESS};
    b.status = marlin_gptq_quantize_fp16(W16, n, k, c->H, g, NULL, b.codes, b.scales);
    test_check(a.status == MARLIN_STATUS_SUCCESS && b.status == MARLIN_STATUS_SUCCESS &&
                   !memcmp(a.codes, b.codes, (size_t)k * n) && !memcmp(a.scales, b.scales, marlin_scale_bytes(k, n, g)),
               "fp16 weights: identical codes and scales to the fp32 entry point on the same values");
    free_quantized(&a);
    free_quantized(&b);
    free(W16);
    free(W);
}

/* A refused call must return `expect` and leave the outputs untouched. */
static void check_refused(const char* what, marlin_status expect, const float* W, int n, int k, const float* H,
                          int g, const marlin_gptq_options* o) {
    size_t code_bytes = (size_t)(k > 0 ? k : 64) * (n > 0 ? n : 64);
    uint8_t* codes = malloc(code_bytes);
    uint16_t* scales = malloc(code_bytes * 2);
    memset(codes, 0xAB, code_bytes);
    memset(scales, 0xCD, code_bytes * 2);
    marlin_status s = marlin_gptq_quantize(W, n, k, H, g, o, codes, scales);
    int untouched = 1;
    for (size_t i = 0; i < code_bytes; i++) untouched &= codes[i] == 0xAB;
    for (size_t i = 0; i < code_bytes; i++) untouched &= scales[i] == 0xCDCD;
    test_check(s == expect && untouched, "bad input: %s -> \"%s\" (expected \"%s\"), outputs untouched %d", what,
               marlin_status_string(s), marlin_status_string(expect), untouched);
    free(codes);
    free(scales);
}

static void test_bad_inputs(const calibration* c, int n) {
    int k = c->k;
    float* W = random_weights(n, k);
    float* H = malloc(sizeof(float) * k * k);
    marlin_gptq_options o;
    uint8_t codes[64];
    uint16_t scales[64];

    check_refused("W NULL", MARLIN_STATUS_NULL_POINTER, NULL, n, k, c->H, 64, NULL);
    check_refused("H NULL", MARLIN_STATUS_NULL_POINTER, W, n, k, NULL, 64, NULL);
    test_check(marlin_gptq_quantize(W, n, k, c->H, 64, NULL, NULL, scales) == MARLIN_STATUS_NULL_POINTER &&
                   marlin_gptq_quantize(W, n, k, c->H, 64, NULL, codes, NULL) == MARLIN_STATUS_NULL_POINTER,
               "bad input: codes or scales NULL -> null pointer");
    check_refused("k = 96 (not a multiple of 64, the packer needs it)", MARLIN_STATUS_UNSUPPORTED_SHAPE, W, n, 96,
                  c->H, 32, NULL);
    check_refused("n = 100", MARLIN_STATUS_UNSUPPORTED_SHAPE, W, 100, k, c->H, 64, NULL);
    check_refused("k = 0", MARLIN_STATUS_UNSUPPORTED_SHAPE, W, n, 0, c->H, 64, NULL);
    check_refused("group size 48", MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE, W, n, k, c->H, 48, NULL);

    int at = test_rand_int(n * k);
    float saved = W[at];
    W[at] = NAN;
    check_refused("NaN in W", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, NULL);
    W[at] = -INFINITY;
    check_refused("-Inf in W", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, NULL);
    W[at] = saved;
    W[at] = 1e6f; /* max|w| / 7 overflows the fp16 scale */
    check_refused("weight 1e6 (scale overflows fp16)", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, NULL);
    W[at] = saved;

    memcpy(H, c->H, sizeof(float) * k * k);
    int i = 1 + test_rand_int(k - 1), j = test_rand_int(i);
    H[i * k + j] = NAN;
    check_refused("NaN in H", MARLIN_STATUS_INVALID_VALUE, W, n, k, H, 64, NULL);
    H[i * k + j] = INFINITY;
    check_refused("Inf in H", MARLIN_STATUS_INVALID_VALUE, W, n, k, H, 64, NULL);

    /* H = I - 3 v v^T has eigenvalue -2: no damping of the schedule rescues it. */
    float* v = malloc(sizeof(float) * k);
    double norm = 0;
    for (int a = 0; a < k; a++) {
        v[a] = test_rand_normal();
        norm += (double)v[a] * v[a];
    }
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) H[a * k + b] = (a == b) - 3.0f * (float)(v[a] * v[b] / norm);
    check_refused("indefinite H (eigenvalue -2)", MARLIN_STATUS_NOT_POSITIVE_DEFINITE, W, n, k, H, 64, NULL);
    /* Slightly indefinite: the first damping fails, a raised one succeeds. */
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) H[a * k + b] = (a == b) - 1.05f * (float)(v[a] * v[b] / norm);
    marlin_gptq_default_options(&o);
    quantized q = run_gptq(W, n, k, H, 64, &o);
    test_check(q.status == MARLIN_STATUS_SUCCESS && valid_result(q.codes, q.scales, n, k, 64),
               "H with eigenvalue -0.05: retried with more damping, succeeds (%s)", marlin_status_string(q.status));
    free_quantized(&q);
    free(v);

    marlin_gptq_default_options(&o);
    o.block_size = 0;
    check_refused("block_size 0", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.damp_fraction = -0.1f;
    check_refused("damp_fraction -0.1", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.damp_fraction = NAN;
    check_refused("damp_fraction NaN", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.clip_grid_points = 0;
    check_refused("clip_grid_points 0", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.clip_min_shrink = 0.0f;
    check_refused("clip_min_shrink 0", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.clip_min_shrink = 1.5f;
    check_refused("clip_min_shrink 1.5", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);
    marlin_gptq_default_options(&o);
    o.act_order = 2;
    check_refused("act_order 2", MARLIN_STATUS_INVALID_VALUE, W, n, k, c->H, 64, &o);

    /* The Hessian: NaN/Inf in X, bad sizes, NULL; H unchanged on error. */
    float* X = malloc(sizeof(float) * 8 * k);
    for (int a = 0; a < 8 * k; a++) X[a] = test_rand_normal();
    memcpy(H, c->H, sizeof(float) * k * k);
    int64_t seen = 5;
    X[test_rand_int(8 * k)] = NAN;
    marlin_status s1 = marlin_hessian_accumulate(H, &seen, X, 8, k);
    X[0] = INFINITY;
    uint16_t X16[64];
    for (int a = 0; a < 64; a++) X16[a] = marlin_fp16_from_float(test_rand_normal());
    X16[test_rand_int(64)] = 0x7C00; /* fp16 +Inf */
    float H16[64] = {0};
    int64_t seen16 = 0;
    marlin_status s2 = marlin_hessian_accumulate_fp16(H16, &seen16, X16, 8, 8);
    test_check(s1 == MARLIN_STATUS_INVALID_VALUE && s2 == MARLIN_STATUS_INVALID_VALUE && seen == 5 && seen16 == 0 &&
                   !memcmp(H, c->H, sizeof(float) * k * k),
               "hessian: NaN in X (fp32) and Inf in X (fp16) -> invalid value, H and N unchanged");
    test_check(marlin_hessian_accumulate(NULL, &seen, X, 8, k) == MARLIN_STATUS_NULL_POINTER &&
                   marlin_hessian_accumulate(H, NULL, X, 8, k) == MARLIN_STATUS_NULL_POINTER &&
                   marlin_hessian_accumulate(H, &seen, NULL, 8, k) == MARLIN_STATUS_NULL_POINTER &&
                   marlin_hessian_accumulate(H, &seen, X, -1, k) == MARLIN_STATUS_INVALID_VALUE &&
                   marlin_hessian_accumulate(H, &seen, X, 8, 0) == MARLIN_STATUS_INVALID_VALUE,
               "hessian: NULL pointers, rows < 0, k < 1 -> clear errors");
    free(X);
    free(H);
    free(W);
}

int main(void) {
    test_seed("test_gptq");
    test_hessian();
    int n = 128, k = 256;
    calibration correlated = make_calibration(4 * k, k, 1);
    test_correlated(&correlated, n, 128, "g=128");
    test_correlated(&correlated, n, 32, "g=32");
    test_correlated(&correlated, n, k, "per-column");
    calibration odd = make_calibration(4 * 320, 320, 1); /* k = 320: a partial last group of 128 */
    test_correlated(&odd, 64, 128, "k=320 g=128");
    free_calibration(&odd);
    test_white(n, 128);
    test_pack_and_multiply(&correlated, n, 128);
    test_pack_and_multiply(&correlated, n, 32);
    test_dead_inputs(64, 128);
    test_block_sizes(&correlated, n);
    test_fp16_weights(&correlated, n);
    test_bad_inputs(&correlated, n);
    free_calibration(&correlated);
    return test_finish();
}
