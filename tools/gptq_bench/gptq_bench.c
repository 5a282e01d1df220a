/*
 * gptq_bench: how long GPTQ takes on the GPU (marlin_gptq_gpu_quantize).
 *
 *   1. single layers (default: 8192 x 28672 in both orientations, i.e. n x k
 *      = 28672 x 8192 like a 70B gate/up projection and 8192 x 28672 like its
 *      down projection), each timed once after a warm-up;
 *   2. every linear layer of a Llama-2-7B-shaped model (32 blocks of q, k, v,
 *      o: 4096 x 4096, gate, up: 11008 x 4096, down: 4096 x 11008), timed
 *      end to end.
 * Synthetic data, generated on the GPU with cuRAND: weights N(0, 0.02^2);
 * Hessians H = (2/R) X^T X from R calibration rows X = Z M with Z, M
 * Gaussian, so H has a wide spread of eigenvalues (and, for R < k, needs the
 * damping, as real ones often do). One weight matrix and one Hessian per
 * shape serve every block: the time of GPTQ does not depend on the values.
 * The timed part is the quantization call alone (it is synchronous); the
 * Hessian accumulation is timed separately, once per shape.
 * Uses only the public headers.
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "marlin_gptq.h"

static void die(const char* what, const char* why) {
    fprintf(stderr, "gptq_bench: %s: %s\n", what, why);
    exit(1);
}
static void check_marlin(marlin_status s, const char* what) {
    if (s != MARLIN_STATUS_SUCCESS) die(what, marlin_status_string(s));
}
static void check_cuda(cudaError_t e, const char* what) {
    if (e != cudaSuccess) die(what, cudaGetErrorString(e));
}
static void check_curand(curandStatus_t s, const char* what) {
    if (s != CURAND_STATUS_SUCCESS) die(what, "cuRAND call failed");
}
static void check_blas(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) die(what, "cuBLAS call failed");
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
    marlin_gptq_gpu* gpu;
    curandGenerator_t rng;
    cublasHandle_t blas;
    int group_size; /* 0: per column (k) */
    int calib_rows;
    marlin_gptq_options options;
} bench;

/* One layer shape on the device: W, H, and room for the outputs. */
typedef struct {
    int n, k;
    float* W;       /* device n x k */
    float* H;       /* device k x k */
    uint8_t* codes; /* device k x n */
    uint16_t* scales;
    double hessian_seconds;
} layer;

static float* device_normal(bench* b, size_t count, float stddev) {
    float* p = NULL;
    check_cuda(cudaMalloc((void**)&p, (count + 1) / 2 * 2 * sizeof(float)), "cudaMalloc");
    check_curand(curandGenerateNormal(b->rng, p, (count + 1) / 2 * 2, 0.0f, stddev), "curandGenerateNormal");
    return p;
}

static layer make_layer(bench* b, int n, int k) {
    layer l = {n, k, NULL, NULL, NULL, NULL, 0};
    int g = b->group_size ? b->group_size : k;
    l.W = device_normal(b, (size_t)n * k, 0.02f);
    check_cuda(cudaMalloc((void**)&l.H, (size_t)k * k * sizeof(float)), "cudaMalloc H");
    check_cuda(cudaMalloc((void**)&l.codes, (size_t)k * n), "cudaMalloc codes");
    check_cuda(cudaMalloc((void**)&l.scales, marlin_scale_bytes(k, n, g)), "cudaMalloc scales");
    /* X = Z M: row-major R x k = column-major k x R, so X_c = M^T Z_c with the column-major views. */
    int R = b->calib_rows;
    float* Z = device_normal(b, (size_t)R * k, 1.0f);
    float* M = device_normal(b, (size_t)k * k, 1.0f / sqrtf((float)k));
    float* X = NULL;
    check_cuda(cudaMalloc((void**)&X, (size_t)R * k * sizeof(float)), "cudaMalloc X");
    const float one = 1.0f, zero = 0.0f;
    check_blas(cublasSgemm(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, k, R, k, &one, M, k, Z, k, &zero, X, k), "X = Z M");
    check_cuda(cudaMemset(l.H, 0, (size_t)k * k * sizeof(float)), "cudaMemset H");
    check_cuda(cudaDeviceSynchronize(), "synthetic X");
    double t0 = now_seconds();
    int64_t seen = 0;
    check_marlin(marlin_gptq_gpu_hessian_accumulate(b->gpu, l.H, &seen, X, R, k, 0), "Hessian");
    check_cuda(cudaDeviceSynchronize(), "Hessian");
    l.hessian_seconds = now_seconds() - t0;
    cudaFree(Z);
    cudaFree(M);
    cudaFree(X);
    return l;
}

static void free_layer(layer* l) {
    cudaFree(l->W);
    cudaFree(l->H);
    cudaFree(l->codes);
    cudaFree(l->scales);
}

/* One synchronous quantization; returns seconds. */
static double quantize(bench* b, layer* l) {
    int g = b->group_size ? b->group_size : l->k;
    double t0 = now_seconds();
    check_marlin(marlin_gptq_gpu_quantize(b->gpu, l->W, l->n, l->k, l->H, g, &b->options, l->codes, l->scales, 0),
                 "marlin_gptq_gpu_quantize");
    return now_seconds() - t0;
}

static void usage(void) {
    printf("usage: gptq_bench [options]\n"
           "Times GPTQ on the GPU (marlin_gptq_gpu_quantize) on synthetic weights and Hessians:\n"
           "single large layers, then every linear layer of a Llama-2-7B-shaped model.\n"
           "  --layer NxK        a single layer to time, n x k (outputs x inputs); repeatable;\n"
           "                     default: 28672x8192 and 8192x28672\n"
           "  --no-layers        skip the single layers\n"
           "  --blocks B         transformer blocks of the 7B model (default 32; 0 skips it)\n"
           "  --group-size G     32, 64, 128 or 0 for per-column (default 128)\n"
           "  --act-order        act-order with static groups (default off)\n"
           "  --no-clip          no group-grid clipping (default: 20 shrink factors down to 0.5)\n"
           "  --calib-rows R     calibration rows behind each synthetic Hessian (default 4096)\n"
           "  --seed S           cuRAND seed (default 1234)\n"
           "  --help             this text\n"
           "Output: a table of layer shapes and seconds; the 7B total is compared with the 180 s goal.\n");
}

int main(int argc, char** argv) {
    bench b;
    memset(&b, 0, sizeof b);
    b.group_size = 128;
    b.calib_rows = 4096;
    marlin_gptq_default_options(&b.options);
    int blocks = 32, run_layers = 1, layer_count = 0;
    int layer_n[16], layer_k[16];
    unsigned long long seed = 1234;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else if (!strcmp(a, "--layer") && next) {
            if (layer_count == 16 || sscanf(next, "%dx%d", &layer_n[layer_count], &layer_k[layer_count]) != 2)
                die("--layer", "expected NxK (at most 16 of them)");
            layer_count++;
            i++;
        } else if (!strcmp(a, "--no-layers")) {
            run_layers = 0;
        } else if (!strcmp(a, "--blocks") && next) {
            blocks = atoi(next);
            i++;
        } else if (!strcmp(a, "--group-size") && next) {
            b.group_size = atoi(next);
            i++;
        } else if (!strcmp(a, "--act-order")) {
            b.options.act_order = 1;
        } else if (!strcmp(a, "--no-clip")) {
            b.options.clip_grid_points = 1;
        } else if (!strcmp(a, "--calib-rows") && next) {
            b.calib_rows = atoi(next);
            i++;
        } else if (!strcmp(a, "--seed") && next) {
            seed = strtoull(next, NULL, 10);
            i++;
        } else {
            fprintf(stderr, "gptq_bench: unknown or incomplete option '%s' (see --help)\n", a);
            return 1;
        }
    }
    if (blocks < 0) die("--blocks", "must be >= 0");
    if (b.calib_rows < 1) die("--calib-rows", "must be >= 1");
    if (b.group_size != 0 && b.group_size != 32 && b.group_size != 64 && b.group_size != 128)
        die("--group-size", "must be 32, 64, 128 or 0 (per column)");
    if (layer_count == 0) {
        layer_n[0] = 28672, layer_k[0] = 8192;
        layer_n[1] = 8192, layer_k[1] = 28672;
        layer_count = 2;
    }
    for (int i = 0; i < layer_count; i++)
        check_marlin(marlin_check_weight_shape(layer_k[i], layer_n[i], b.group_size ? b.group_size : layer_k[i]),
                     "--layer");

    check_marlin(marlin_gptq_gpu_create(&b.gpu), "marlin_gptq_gpu_create");
    check_curand(curandCreateGenerator(&b.rng, CURAND_RNG_PSEUDO_PHILOX4_32_10), "curandCreateGenerator");
    check_curand(curandSetPseudoRandomGeneratorSeed(b.rng, seed), "curand seed");
    check_blas(cublasCreate(&b.blas), "cublasCreate");
    struct cudaDeviceProp prop;
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    printf("device: %s; group size %s%d, act_order %d, clip grid %d (down to %.2f), damping %.3f, block %d, "
           "Hessians from %d rows\n",
           prop.name, b.group_size ? "" : "per column = k = ", b.group_size, b.options.act_order,
           b.options.clip_grid_points, b.options.clip_min_shrink, b.options.damp_fraction, b.options.block_size,
           b.calib_rows);

    /* Warm-up: a small layer, so handles, kernels and the first allocations are not timed. */
    layer warm = make_layer(&b, 256, 512);
    quantize(&b, &warm);
    free_layer(&warm);

    printf("\n%-28s %8s %8s %14s %14s\n", "layer", "n", "k", "hessian (s)", "gptq (s)");
    if (run_layers) {
        for (int i = 0; i < layer_count; i++) {
            layer l = make_layer(&b, layer_n[i], layer_k[i]);
            double seconds = quantize(&b, &l);
            printf("%-28s %8d %8d %14.3f %14.3f\n", "single layer", l.n, l.k, l.hessian_seconds, seconds);
            fflush(stdout);
            free_layer(&l);
        }
    }
    if (blocks > 0) {
        /* Llama-2-7B block: name, n (outputs), k (inputs). */
        static const struct { const char* name; int n, k; } shapes[] = {
            {"q_proj", 4096, 4096}, {"k_proj", 4096, 4096}, {"v_proj", 4096, 4096}, {"o_proj", 4096, 4096},
            {"gate_proj", 11008, 4096}, {"up_proj", 11008, 4096}, {"down_proj", 4096, 11008},
        };
        layer square = make_layer(&b, 4096, 4096), wide = make_layer(&b, 11008, 4096), down = make_layer(&b, 4096, 11008);
        layer* layer_of[7] = {&square, &square, &square, &square, &wide, &wide, &down};
        double per_layer[7] = {0}, total = 0;
        for (int block = 0; block < blocks; block++) {
            for (int s = 0; s < 7; s++) {
                double seconds = quantize(&b, layer_of[s]);
                per_layer[s] += seconds;
                total += seconds;
            }
            fprintf(stderr, "\r7B model: block %d/%d, %.1f s", block + 1, blocks, total);
        }
        fprintf(stderr, "\n");
        for (int s = 0; s < 7; s++)
            printf("%-28s %8d %8d %14.3f %14.3f\n", shapes[s].name, shapes[s].n, shapes[s].k,
                   layer_of[s]->hessian_seconds, per_layer[s] / blocks);
        printf("%-28s %8s %8s %14s %14.3f\n", "one 7B block (7 layers)", "", "", "", total / blocks);
        printf("%-28s %8s %8s %14s %14.3f  (goal: < 180 s: %s)\n", "7B model", "", "", "", total,
               blocks == 32 ? (total < 180 ? "met" : "NOT met") : "n/a, fewer blocks");
        free_layer(&square);
        free_layer(&wide);
        free_layer(&down);
    }
    cublasDestroy(b.blas);
    curandDestroyGenerator(b.rng);
    check_marlin(marlin_gptq_gpu_destroy(b.gpu), "marlin_gptq_gpu_destroy");
    return 0;
}
