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
 * (in double). `--quick` runs a few small cases (for compute-sanitizer).
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
    cudaFree(d_workspace);
    return test_finish();
}
