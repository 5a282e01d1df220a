/*
 * test_gpu_matmul.c: marlin_matmul on the GPU against the C reference.
 *
 * For every case: fresh random A, codes and scales; C poisoned (NaN) and
 * fenced by guard regions; one workspace for the whole run, zeroed once, so
 * every call also checks that the previous one left it ready. Checks: status,
 * every element written, guards untouched, relative error < 2e-3 against
 * marlin_reference_matmul (all rows up to 64, else a sample of rows), and a
 * second run bitwise identical. marlin_matmul_swiglu likewise, its weights
 * drawn as a [gate | up] pair and reordered by marlin_interleave_gate_up, its
 * output checked against silu(gate) * up of the reference of the plain pair
 * (in double). The RMSNorm epilogues (m <= 16): marlin_matmul_residual
 * against x + the reference product, fp16(x . w) and the sums of squares
 * per 64 columns (in double), every output poisoned and guarded;
 * marlin_matmul_rms_scaled(_swiglu) against the reference scaled by 1/rms
 * of random sums; m = 17 refused with nothing written.
 * `--quick` runs a few small cases (for compute-sanitizer).
 * Prints "SKIPPED: no CUDA device" without a GPU.
 */
#include <cuda_runtime_api.h>

#include "marlin.h"
#include "test_util.h"

#define GUARD_BYTES 4096
#define GUARD_BYTE 0xA5
#define POISON_BYTE 0xFF /* 0xFFFF is an fp16 NaN */
#define MAX_SAMPLED_ROWS 24

#define CUDA_OK(call) cuda_ok((call), #call, __LINE__)
static int cuda_ok(cudaError_t err, const char* what, int line) {
    if (err == cudaSuccess) return 1;
    printf("CUDA error %s at line %d: %s\n", cudaGetErrorString(err), line, what);
    return 0;
}

typedef struct {
    int k, n, group;
    int swiglu;               /* the device copy is the interleaved [gate | up] pair, for marlin_matmul_swiglu */
    uint32_t* packed;         /* host, k*n/8: the reference's weights (plain [gate | up] order) */
    uint16_t* packed_scales;  /* host, ceil(k/g) x n */
    void* d_packed;           /* device: the kernel's (interleaved where swiglu) */
    void* d_scales;
} weight_set;

static void* d_workspace;
static size_t workspace_bytes;

static int make_weights(weight_set* w, int k, int n, int group, int swiglu) {
    size_t count = (size_t)k * n, scale_bytes = marlin_scale_bytes(k, n, group);
    int scale_rows = marlin_scale_rows(k, group);
    uint8_t* codes = malloc(count);
    uint16_t* scales = malloc(scale_bytes);
    /* swiglu: the interleaved pair the kernel reads */
    uint8_t* kernel_codes = swiglu ? malloc(count) : NULL;
    uint16_t* kernel_scales = swiglu ? malloc(scale_bytes) : NULL;
    uint32_t* kernel_packed = swiglu ? malloc(count / 2) : NULL;
    uint16_t* kernel_packed_scales = swiglu ? malloc(scale_bytes) : NULL;
    w->k = k, w->n = n, w->group = group, w->swiglu = swiglu;
    w->packed = malloc(count / 2);
    w->packed_scales = malloc(scale_bytes);
    for (size_t i = 0; i < count; i++) codes[i] = (uint8_t)(test_rand_u64() & 15);
    for (size_t i = 0; i < (size_t)scale_rows * n; i++)
        scales[i] = marlin_fp16_from_float(0.002f + 0.01f * (test_rand_uniform() + 1.0f));
    int ok = marlin_pack(codes, scales, k, n, group, w->packed, w->packed_scales) == MARLIN_STATUS_SUCCESS;
    if (ok && swiglu)
        ok = marlin_interleave_gate_up(codes, scales, k, n, group, kernel_codes, kernel_scales) == MARLIN_STATUS_SUCCESS &&
             marlin_pack(kernel_codes, kernel_scales, k, n, group, kernel_packed, kernel_packed_scales) ==
                 MARLIN_STATUS_SUCCESS;
    ok = ok && CUDA_OK(cudaMalloc(&w->d_packed, count / 2)) && CUDA_OK(cudaMalloc(&w->d_scales, scale_bytes)) &&
         CUDA_OK(cudaMemcpy(w->d_packed, swiglu ? kernel_packed : w->packed, count / 2, cudaMemcpyHostToDevice)) &&
         CUDA_OK(cudaMemcpy(w->d_scales, swiglu ? kernel_packed_scales : w->packed_scales, scale_bytes,
                            cudaMemcpyHostToDevice));
    free(kernel_codes), free(kernel_scales), free(kernel_packed), free(kernel_packed_scales);
    free(codes), free(scales);
    return ok;
}

static void free_weights(weight_set* w) {
    free(w->packed), free(w->packed_scales);
    cudaFree(w->d_packed), cudaFree(w->d_scales);
}

static int ensure_workspace(int m, int n, int k, int group) {
    size_t need = 0;
    if (marlin_workspace_size(m, n, k, group, &need) != MARLIN_STATUS_SUCCESS) return 0;
    if (need <= workspace_bytes) return 1;
    /* Grow: a fresh workspace must be zeroed once. */
    cudaFree(d_workspace);
    workspace_bytes = need;
    return CUDA_OK(cudaMalloc(&d_workspace, need)) && CUDA_OK(cudaMemset(d_workspace, 0, need));
}

/* One call of marlin_matmul (or marlin_matmul_swiglu) into a poisoned, guarded C; copies C back. */
static marlin_status run_once(const weight_set* w, const void* d_A, unsigned char* d_C_alloc, int m,
                              unsigned char* host_C_alloc, size_t c_bytes) {
    if (!CUDA_OK(cudaMemset(d_C_alloc, GUARD_BYTE, c_bytes + 2 * GUARD_BYTES)) ||
        !CUDA_OK(cudaMemset(d_C_alloc + GUARD_BYTES, POISON_BYTE, c_bytes)))
        return MARLIN_STATUS_CUDA_ERROR;
    marlin_status st = (w->swiglu ? marlin_matmul_swiglu : marlin_matmul)(
        d_A, w->d_packed, w->d_scales, d_C_alloc + GUARD_BYTES, m, w->n, w->k, w->group, d_workspace, workspace_bytes, 0);
    if (!CUDA_OK(cudaDeviceSynchronize()) ||
        !CUDA_OK(cudaMemcpy(host_C_alloc, d_C_alloc, c_bytes + 2 * GUARD_BYTES, cudaMemcpyDeviceToHost)))
        return MARLIN_STATUS_CUDA_ERROR;
    return st;
}

/* silu(gate) * up in double, as marlin_matmul_swiglu defines it */
static double swiglu_reference(double gate, double up) { return gate / (1.0 + exp(-gate)) * up; }

static void run_case(const weight_set* w, int m) {
    const int k = w->k, n = w->n, c_cols = w->swiglu ? n / 2 : n;
    size_t a_bytes = (size_t)m * k * 2, c_bytes = (size_t)m * c_cols * 2;
    uint16_t* A = malloc(a_bytes);
    unsigned char* C1 = malloc(c_bytes + 2 * GUARD_BYTES);
    unsigned char* C2 = malloc(c_bytes + 2 * GUARD_BYTES);
    void* d_A = NULL;
    unsigned char* d_C = NULL;
    for (size_t i = 0; i < (size_t)m * k; i++) A[i] = marlin_fp16_from_float(test_rand_uniform());
    if (!ensure_workspace(m, n, k, w->group) || !CUDA_OK(cudaMalloc(&d_A, a_bytes)) ||
        !CUDA_OK(cudaMalloc((void**)&d_C, c_bytes + 2 * GUARD_BYTES)) ||
        !CUDA_OK(cudaMemcpy(d_A, A, a_bytes, cudaMemcpyHostToDevice))) {
        test_check(0, "m=%d k=%d n=%d g=%d: setup failed", m, k, n, w->group);
        goto done;
    }
    marlin_status st1 = run_once(w, d_A, d_C, m, C1, c_bytes);
    marlin_status st2 = run_once(w, d_A, d_C, m, C2, c_bytes);

    int guards_ok = 1;
    for (size_t i = 0; i < GUARD_BYTES; i++)
        if (C1[i] != GUARD_BYTE || C1[GUARD_BYTES + c_bytes + i] != GUARD_BYTE) guards_ok = 0;
    const uint16_t* out = (const uint16_t*)(C1 + GUARD_BYTES);
    size_t unwritten = 0;
    for (size_t i = 0; i < (size_t)m * c_cols; i++)
        if (out[i] == 0xFFFF) unwritten++;
    int identical = memcmp(C1, C2, c_bytes + 2 * GUARD_BYTES) == 0;

    /* Reference on all rows (m <= 64) or a sample that includes chunk edges. */
    int rows[MAX_SAMPLED_ROWS], row_count = 0;
    if (m <= MAX_SAMPLED_ROWS) {
        for (int r = 0; r < m; r++) rows[row_count++] = r;
    } else {
        int edges[] = {0, 15, 16, 63, 64, 65, 127, 128, 129, m - 1};
        for (int e = 0; e < (int)(sizeof edges / sizeof edges[0]); e++)
            if (edges[e] < m) rows[row_count++] = edges[e];
        while (row_count < MAX_SAMPLED_ROWS) rows[row_count++] = test_rand_int(m);
    }
    uint16_t* A_rows = malloc((size_t)row_count * k * 2);
    float* C_ref = malloc((size_t)row_count * n * 4);
    for (int r = 0; r < row_count; r++) memcpy(A_rows + (size_t)r * k, A + (size_t)rows[r] * k, (size_t)k * 2);
    marlin_status st_ref =
        marlin_reference_matmul(A_rows, w->packed, w->packed_scales, row_count, n, k, w->group, C_ref);
    double diff2 = 0.0, ref2 = 0.0;
    for (int r = 0; r < row_count; r++)
        for (int col = 0; col < c_cols; col++) {
            const float* ref_row = C_ref + (size_t)r * n;
            double ref = w->swiglu ? swiglu_reference(ref_row[col], ref_row[n / 2 + col]) : ref_row[col];
            double got = marlin_fp16_to_float(out[(size_t)rows[r] * c_cols + col]);
            diff2 += (got - ref) * (got - ref);
            ref2 += ref * ref;
        }
    double rel = sqrt(diff2 / ref2);
    int ok = st1 == MARLIN_STATUS_SUCCESS && st2 == MARLIN_STATUS_SUCCESS && st_ref == MARLIN_STATUS_SUCCESS &&
             guards_ok && unwritten == 0 && identical && rel < 2e-3;
    test_check(ok, "%sm=%d k=%d n=%d g=%d: status \"%s\", rel err %.2e over %d rows, unwritten %zu, guards %s, %s",
               w->swiglu ? "swiglu " : "", m, k, n, w->group, marlin_status_string(st1), rel, row_count, unwritten, guards_ok ? "ok" : "HIT",
               identical ? "bitwise identical" : "RUNS DIFFER");
    free(A_rows), free(C_ref);
done:
    free(A), free(C1), free(C2);
    cudaFree(d_A), cudaFree(d_C);
}

/* The RMSNorm epilogues: RESIDUAL (marlin_matmul_residual, plain weights)
 * or ROW_SCALED (marlin_matmul_rms_scaled, or _swiglu where w->swiglu). */
enum { RESIDUAL, ROW_SCALED };

/* A device buffer of `bytes` poisoned (NaN) between two guard regions;
 * returns the inside. */
static unsigned char* guarded_alloc(size_t bytes) {
    unsigned char* p = NULL;
    if (!CUDA_OK(cudaMalloc((void**)&p, bytes + 2 * GUARD_BYTES)) ||
        !CUDA_OK(cudaMemset(p, GUARD_BYTE, bytes + 2 * GUARD_BYTES)) ||
        !CUDA_OK(cudaMemset(p + GUARD_BYTES, POISON_BYTE, bytes))) {
        cudaFree(p);
        return NULL;
    }
    return p + GUARD_BYTES;
}

/* Copies a guarded buffer back (inside to `out`); whether its guards hold. */
static int guarded_read(const unsigned char* inside, size_t bytes, void* out) {
    unsigned char* all = malloc(bytes + 2 * GUARD_BYTES);
    int ok = CUDA_OK(cudaMemcpy(all, inside - GUARD_BYTES, bytes + 2 * GUARD_BYTES, cudaMemcpyDeviceToHost));
    for (size_t i = 0; ok && i < GUARD_BYTES; i++)
        if (all[i] != GUARD_BYTE || all[GUARD_BYTES + bytes + i] != GUARD_BYTE) ok = 0;
    if (ok) memcpy(out, all + GUARD_BYTES, bytes);
    free(all);
    return ok;
}

/* One RMSNorm-epilogue case of m rows: two runs (x restored in between),
 * every output checked against the reference product in double. */
static void run_rms_case(const weight_set* w, int m, int kind) {
    const int k = w->k, n = w->n, c_cols = w->swiglu ? n / 2 : n;
    const size_t a_count = (size_t)m * k, c_count = (size_t)m * c_cols, x_count = (size_t)m * n;
    const size_t sumsq_out_count = (size_t)m * n / 64, sumsq_in_count = (size_t)m * k / 64;
    const float eps = 1e-5f;
    uint16_t* A = malloc(a_count * 2);
    float *x0 = malloc(x_count * 4), *weight = malloc((size_t)n * 4), *sumsq_in = malloc(sumsq_in_count * 4);
    float* C_ref = malloc(x_count * 4);
    uint16_t *C[2] = {malloc(c_count * 2), malloc(c_count * 2)};
    float *x[2] = {malloc(x_count * 4), malloc(x_count * 4)};
    float *sumsq[2] = {malloc(sumsq_out_count * 4), malloc(sumsq_out_count * 4)};
    for (size_t i = 0; i < a_count; i++) A[i] = marlin_fp16_from_float(test_rand_uniform());
    for (size_t i = 0; i < x_count; i++) x0[i] = 4.0f * test_rand_uniform();
    for (int i = 0; i < n; i++) weight[i] = 1.0f + 0.5f * test_rand_uniform();
    for (size_t i = 0; i < sumsq_in_count; i++) sumsq_in[i] = 64.0f * (1.0f + test_rand_uniform());
    void *d_A = NULL, *d_weight = NULL, *d_sumsq_in = NULL;
    unsigned char *d_C = NULL, *d_x = NULL, *d_sumsq = NULL;
    int ok = ensure_workspace(m, n, k, w->group) && CUDA_OK(cudaMalloc(&d_A, a_count * 2)) &&
             CUDA_OK(cudaMalloc(&d_weight, (size_t)n * 4)) && CUDA_OK(cudaMalloc(&d_sumsq_in, sumsq_in_count * 4)) &&
             CUDA_OK(cudaMemcpy(d_A, A, a_count * 2, cudaMemcpyHostToDevice)) &&
             CUDA_OK(cudaMemcpy(d_weight, weight, (size_t)n * 4, cudaMemcpyHostToDevice)) &&
             CUDA_OK(cudaMemcpy(d_sumsq_in, sumsq_in, sumsq_in_count * 4, cudaMemcpyHostToDevice)) &&
             (d_C = guarded_alloc(c_count * 2)) && (d_x = guarded_alloc(x_count * 4)) &&
             (d_sumsq = guarded_alloc(sumsq_out_count * 4));
    marlin_status st[2] = {MARLIN_STATUS_CUDA_ERROR, MARLIN_STATUS_CUDA_ERROR};
    int guards_ok = 1;
    for (int run = 0; ok && run < 2; run++) {
        ok = CUDA_OK(cudaMemset(d_C, POISON_BYTE, c_count * 2)) && CUDA_OK(cudaMemset(d_sumsq, POISON_BYTE, sumsq_out_count * 4)) &&
             CUDA_OK(cudaMemcpy(d_x, x0, x_count * 4, cudaMemcpyHostToDevice));
        if (!ok) break;
        if (kind == RESIDUAL)
            st[run] = marlin_matmul_residual(d_A, w->d_packed, w->d_scales, (float*)d_x, d_weight, d_C, (float*)d_sumsq, m,
                                             n, k, w->group, d_workspace, workspace_bytes, 0);
        else
            st[run] = (w->swiglu ? marlin_matmul_rms_scaled_swiglu : marlin_matmul_rms_scaled)(
                d_A, w->d_packed, w->d_scales, d_sumsq_in, eps, d_C, m, n, k, w->group, d_workspace, workspace_bytes, 0);
        ok = CUDA_OK(cudaDeviceSynchronize());
        guards_ok = guards_ok && guarded_read(d_C, c_count * 2, C[run]) && guarded_read(d_x, x_count * 4, x[run]) &&
                    guarded_read(d_sumsq, sumsq_out_count * 4, sumsq[run]);
    }
    ok = ok && marlin_reference_matmul(A, w->packed, w->packed_scales, m, n, k, w->group, C_ref) == MARLIN_STATUS_SUCCESS;
    /* errors relative to the reference's norm: C; and for RESIDUAL x and the sums */
    double c_diff = 0, c_ref = 0, x_diff = 0, x_ref = 0, s_diff = 0, s_ref = 0;
    size_t bad = 0; /* NaN where a value belongs, or a value where x must stay unwritten */
    for (int r = 0; ok && r < m; r++) {
        double inv = 1.0;
        if (kind == ROW_SCALED) {
            double total = 0;
            for (int g = 0; g < k / 64; g++) total += sumsq_in[(size_t)r * (k / 64) + g];
            inv = 1.0 / sqrt(total / k + eps);
        }
        const float* ref_row = C_ref + (size_t)r * n;
        double group_sum = 0;
        for (int col = 0; col < c_cols; col++) {
            double ref;
            if (kind == RESIDUAL) {
                const double x_new = (double)x0[(size_t)r * n + col] + ref_row[col];
                const double got_x = x[0][(size_t)r * n + col];
                x_diff += (got_x - x_new) * (got_x - x_new), x_ref += (double)ref_row[col] * ref_row[col];
                ref = x_new * weight[col];
                group_sum += x_new * x_new;
                if (col % 64 == 63) {
                    const double got_s = sumsq[0][(size_t)r * (n / 64) + col / 64];
                    bad += got_s != got_s;
                    s_diff += (got_s - group_sum) * (got_s - group_sum), s_ref += group_sum * group_sum;
                    group_sum = 0;
                }
            } else {
                ref = w->swiglu ? swiglu_reference(inv * ref_row[col], inv * ref_row[n / 2 + col]) : inv * ref_row[col];
            }
            const double got = marlin_fp16_to_float(C[0][(size_t)r * c_cols + col]);
            bad += got != got;
            c_diff += (got - ref) * (got - ref), c_ref += ref * ref;
        }
    }
    const double c_rel = sqrt(c_diff / c_ref);
    const double x_rel = kind == RESIDUAL ? sqrt(x_diff / x_ref) : 0, s_rel = kind == RESIDUAL ? sqrt(s_diff / s_ref) : 0;
    const int identical = memcmp(C[0], C[1], c_count * 2) == 0 && memcmp(x[0], x[1], x_count * 4) == 0 &&
                          memcmp(sumsq[0], sumsq[1], sumsq_out_count * 4) == 0;
    const char* what = kind == RESIDUAL ? "residual" : w->swiglu ? "rms_scaled_swiglu" : "rms_scaled";
    test_check(ok && st[0] == MARLIN_STATUS_SUCCESS && st[1] == MARLIN_STATUS_SUCCESS && guards_ok && bad == 0 &&
                   identical && c_rel < 2e-3 && x_rel < 1e-4 && s_rel < 1e-4,
               "%s m=%d k=%d n=%d g=%d: status \"%s\", rel err C %.2e x %.2e sums %.2e, unwritten %zu, guards %s, %s", what,
               m, k, n, w->group, marlin_status_string(st[0]), c_rel, x_rel, s_rel, bad, guards_ok ? "ok" : "HIT",
               identical ? "bitwise identical" : "RUNS DIFFER");
    free(A), free(x0), free(weight), free(sumsq_in), free(C_ref);
    for (int i = 0; i < 2; i++) free(C[i]), free(x[i]), free(sumsq[i]);
    cudaFree(d_A), cudaFree(d_weight), cudaFree(d_sumsq_in);
    if (d_C) cudaFree(d_C - GUARD_BYTES);
    if (d_x) cudaFree(d_x - GUARD_BYTES);
    if (d_sumsq) cudaFree(d_sumsq - GUARD_BYTES);
}

/* More than MARLIN_RMS_MAX_ROWS rows, null operands and a negative eps are
 * refused before any launch. */
static void test_rms_refusals(const weight_set* w) {
    const int m = MARLIN_RMS_MAX_ROWS + 1;
    void *d_A = NULL, *d_C = NULL, *d_f = NULL;
    unsigned char* C = malloc((size_t)m * w->n * 2);
    int ok = ensure_workspace(m, w->n, w->k, w->group) && CUDA_OK(cudaMalloc(&d_A, (size_t)m * w->k * 2)) &&
             CUDA_OK(cudaMalloc(&d_C, (size_t)m * w->n * 2)) && CUDA_OK(cudaMalloc(&d_f, (size_t)m * w->n * 4)) &&
             CUDA_OK(cudaMemset(d_C, POISON_BYTE, (size_t)m * w->n * 2));
    float* f = (float*)d_f;
    marlin_status rows = marlin_matmul_residual(d_A, w->d_packed, w->d_scales, f, f, d_C, f, m, w->n, w->k, w->group,
                                                d_workspace, workspace_bytes, 0);
    marlin_status scaled_rows = marlin_matmul_rms_scaled(d_A, w->d_packed, w->d_scales, f, 1e-5f, d_C, m, w->n, w->k,
                                                         w->group, d_workspace, workspace_bytes, 0);
    marlin_status null_x = marlin_matmul_residual(d_A, w->d_packed, w->d_scales, NULL, f, d_C, f, 1, w->n, w->k,
                                                  w->group, d_workspace, workspace_bytes, 0);
    marlin_status null_sums = marlin_matmul_rms_scaled(d_A, w->d_packed, w->d_scales, NULL, 1e-5f, d_C, 1, w->n, w->k,
                                                       w->group, d_workspace, workspace_bytes, 0);
    marlin_status bad_eps = marlin_matmul_rms_scaled(d_A, w->d_packed, w->d_scales, f, -1.0f, d_C, 1, w->n, w->k,
                                                     w->group, d_workspace, workspace_bytes, 0);
    marlin_status misaligned = marlin_matmul_residual(d_A, w->d_packed, w->d_scales, f + 1, f, d_C, f, 1, w->n, w->k,
                                                      w->group, d_workspace, workspace_bytes, 0);
    ok = ok && CUDA_OK(cudaDeviceSynchronize()) && CUDA_OK(cudaMemcpy(C, d_C, (size_t)m * w->n * 2, cudaMemcpyDeviceToHost));
    size_t touched = 0;
    for (size_t i = 0; ok && i < (size_t)m * w->n * 2; i++) touched += C[i] != POISON_BYTE;
    test_check(ok && rows == MARLIN_STATUS_UNSUPPORTED_SHAPE && scaled_rows == MARLIN_STATUS_UNSUPPORTED_SHAPE &&
                   null_x == MARLIN_STATUS_NULL_POINTER && null_sums == MARLIN_STATUS_NULL_POINTER &&
                   bad_eps == MARLIN_STATUS_INVALID_VALUE && misaligned == MARLIN_STATUS_MISALIGNED_POINTER && touched == 0,
               "RMSNorm epilogues refuse %d rows (\"%s\", \"%s\"), null x / sums, eps -1, a misaligned x (\"%s\"); "
               "C untouched (%zu bytes changed)",
               m, marlin_status_string(rows), marlin_status_string(scaled_rows), marlin_status_string(misaligned), touched);
    free(C);
    cudaFree(d_A), cudaFree(d_C), cudaFree(d_f);
}

static void run_rms_shape(int k, int n, int group, int kind, int swiglu, int max_m) {
    weight_set w;
    if (!make_weights(&w, k, n, group, swiglu)) {
        test_check(0, "rms k=%d n=%d g=%d: weight setup failed", k, n, group);
        return;
    }
    for (int m = 1; m <= max_m; m++) run_rms_case(&w, m, kind);
    free_weights(&w);
}

/* A refused call on real device buffers leaves C untouched. */
static void test_refused_call_writes_nothing(const weight_set* w) {
    const int m = 5;
    size_t c_bytes = (size_t)m * w->n * 2;
    void *d_A = NULL, *d_C = NULL;
    unsigned char* C = malloc(c_bytes);
    int ok = CUDA_OK(cudaMalloc(&d_A, (size_t)m * w->k * 2)) && CUDA_OK(cudaMalloc(&d_C, c_bytes)) &&
             CUDA_OK(cudaMemset(d_A, 0x3C, (size_t)m * w->k * 2)) && CUDA_OK(cudaMemset(d_C, POISON_BYTE, c_bytes));
    marlin_status st = marlin_matmul(d_A, w->d_packed, w->d_scales, d_C, m, w->n, w->k, w->group, d_workspace, 16, 0);
    ok = ok && CUDA_OK(cudaDeviceSynchronize()) && CUDA_OK(cudaMemcpy(C, d_C, c_bytes, cudaMemcpyDeviceToHost));
    size_t touched = 0;
    for (size_t i = 0; i < c_bytes; i++) touched += C[i] != POISON_BYTE;
    test_check(ok && st == MARLIN_STATUS_WORKSPACE_TOO_SMALL && touched == 0,
               "16-byte workspace refused (\"%s\"), C untouched (%zu bytes changed)", marlin_status_string(st), touched);
    free(C);
    cudaFree(d_A), cudaFree(d_C);
}

static void run_shape(int k, int n, int group, const int* ms, int m_count, int swiglu) {
    weight_set w;
    if (!make_weights(&w, k, n, group, swiglu)) {
        test_check(0, "%sk=%d n=%d g=%d: weight setup failed", swiglu ? "swiglu " : "", k, n, group);
        return;
    }
    for (int i = 0; i < m_count; i++) run_case(&w, ms[i]);
    free_weights(&w);
}

int main(int argc, char** argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int device_count = 0;
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    test_seed("test_gpu_matmul");

    static const int all_m[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 32, 33,
                                63, 64, 65, 127, 128, 129, 255, 256, 1000, 1024, 4096};
    static const int some_m[] = {1, 7, 16, 33, 64, 65, 1000};
    static const int big_m[] = {1, 16, 32, 64, 65, 128, 256, 4096};
    static const int few_m[] = {1, 33};
    const int n_all = sizeof all_m / sizeof all_m[0], n_some = sizeof some_m / sizeof some_m[0];
    const int small_shapes[][2] = {{576, 576}, {576, 1536}, {1536, 576}, {576, 192}};
    const int big_shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}, {8192, 28672}};

    if (quick) {
        static const int quick_m[] = {1, 17, 65, 100};
        run_shape(576, 192, 128, quick_m, 4, 0);
        run_shape(128, 320, 32, quick_m, 4, 0);
        run_shape(192, 128, 192, quick_m, 4, 0);
        run_shape(576, 192, 128, quick_m, 4, 1);
        run_shape(128, 320, 32, quick_m, 4, 1);
        run_rms_shape(128, 320, 32, RESIDUAL, 0, 3);
        run_rms_shape(576, 192, 128, RESIDUAL, 0, 3);
        run_rms_shape(576, 192, 128, ROW_SCALED, 0, 3);
        run_rms_shape(128, 320, 128, ROW_SCALED, 1, 3);
        return test_finish();
    }
    weight_set refusal;
    if (make_weights(&refusal, 576, 192, 128, 0)) {
        ensure_workspace(5, 192, 576, 128);
        test_refused_call_writes_nothing(&refusal);
        free_weights(&refusal);
    }
    for (int s = 0; s < 4; s++) {
        int k = small_shapes[s][0], n = small_shapes[s][1];
        run_shape(k, n, 128, all_m, n_all, 0);
        run_shape(k, n, 32, some_m, n_some, 0);
        run_shape(k, n, 64, some_m, n_some, 0);
        run_shape(k, n, k, some_m, n_some, 0);
    }
    /* SwiGLU: every epilogue path (whole slices at k = 128, clusters on tiny
     * layers, slots), partial tiles (n = 192, 320), every group kind */
    const int swiglu_shapes[][2] = {{576, 1536}, {576, 192}, {128, 1024}, {128, 320}, {1536, 1152}};
    for (int s = 0; s < 5; s++) {
        int k = swiglu_shapes[s][0], n = swiglu_shapes[s][1];
        run_shape(k, n, 128, all_m, n_all, 1);
        run_shape(k, n, 32, few_m, 2, 1);
        run_shape(k, n, k, few_m, 2, 1);
    }
    for (int s = 0; s < 4; s++) {
        int k = big_shapes[s][0], n = big_shapes[s][1];
        run_shape(k, n, 128, big_m, sizeof big_m / sizeof big_m[0], 0);
        run_shape(k, n, 32, few_m, 2, 0);
        run_shape(k, n, 64, few_m, 2, 0);
        run_shape(k, n, k, few_m, 2, 0);
    }
    run_shape(4096, 22016, 128, big_m, sizeof big_m / sizeof big_m[0], 1); /* llama2-7b's gate/up */
    /* RMSNorm epilogues at 1..16 rows: whole slices (k = 128), partial tiles
     * (n = 192, 320), tiny layers (clusters for the plain kernels), slots
     * (llama2-7b's o, down, qkv and gate/up), every group kind */
    weight_set refusal_rms;
    if (make_weights(&refusal_rms, 576, 192, 128, 0)) {
        test_rms_refusals(&refusal_rms);
        free_weights(&refusal_rms);
    }
    const int residual_shapes[][2] = {{128, 320}, {576, 192}, {1536, 576}, {4096, 4096}, {11008, 4096}};
    for (int s = 0; s < 5; s++) run_rms_shape(residual_shapes[s][0], residual_shapes[s][1], 128, RESIDUAL, 0, 16);
    run_rms_shape(576, 1536, 32, RESIDUAL, 0, 16);
    run_rms_shape(576, 192, 576, RESIDUAL, 0, 16);
    const int scaled_shapes[][2] = {{128, 1024}, {576, 576}, {4096, 12288}};
    for (int s = 0; s < 3; s++) run_rms_shape(scaled_shapes[s][0], scaled_shapes[s][1], 128, ROW_SCALED, 0, 16);
    const int scaled_swiglu_shapes[][2] = {{128, 320}, {576, 1536}, {4096, 22016}};
    for (int s = 0; s < 3; s++) run_rms_shape(scaled_swiglu_shapes[s][0], scaled_swiglu_shapes[s][1], 128, ROW_SCALED, 1, 16);
    run_rms_shape(576, 1536, 64, ROW_SCALED, 1, 16);
    cudaFree(d_workspace);
    return test_finish();
}
