/*
 * marlin_bench.c: marlin-bench, the benchmark of marlin_matmul against fp16
 * cuBLAS on the linear layers of real models (bench/README.md).
 *
 * Design. A "shape set" is the four linear layers of one transformer block
 * (fused qkv, o, fused gate+up, down), or one matrix sized to the GPU. For
 * every layer of a set and every batch size m, the tool times
 *   - marlin_matmul on 4-bit weights (random codes and scales, packed once
 *     per layer with marlin_pack on the CPU), and
 *   - fp16 cuBLAS on the same layer: cublasGemmEx (fp16 in/out, fp32
 *     compute, tensor cores) and cuBLASLt's best heuristic, keeping the
 *     faster of the two, so marlin is compared with the best fp16 baseline.
 * The fp16 weights are the dequantized 4-bit weights (random, nonzero
 * scales), so --check can compare the two results directly.
 *
 * Timing, the rules of PERF.md: CUDA events around a batch of back-to-back
 * launches, after a warm-up; median of several trials. Each launch reads a
 * different copy of the weights, rotating through enough copies that their
 * total exceeds 4x the L2, so no launch finds its weights in L2 (activations
 * and outputs are small and do stay in L2, as in real inference). A set's
 * time is the sum of its layers' medians. The device's copy bandwidth is
 * measured in the same run, and marlin's weight-byte throughput is reported
 * as a fraction of it.
 *
 * The tool uses only the public header marlin.h (and cuBLAS), so it is also
 * an example of the API; builds configured with -DMARLIN_TRACE=ON add
 * --trace, which reads the library's launch timelines (src/trace.h). It exits
 * on the first failure with a message; exit codes are listed in usage().
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "marlin.h"
#ifdef MARLIN_TRACE
#include "trace.h" /* src/: launch timelines, tracing builds only */
#endif

/* ------------------------------------------------------------ constants -- */

enum {
    EXIT_RUNTIME_FAILURE = 1, /* a CUDA, cuBLAS, marlin or file operation failed */
    EXIT_USAGE = 2,          /* bad command line */
    EXIT_CHECK_FAILED = 3,   /* --check found marlin and cuBLAS disagreeing */
    EXIT_NO_DEVICE = 77,     /* no CUDA device: nothing was measured */
};

#define MAX_LAYERS_PER_SET 4
#define MAX_M_VALUES 32
#define MAX_M 65536
#define DEFAULT_GROUP_SIZE 128
#define DEFAULT_TRIALS 7
#define MIN_TRIALS 5 /* the issue asks for the median of at least 5 */
#define MAX_TRIALS 99

/* Weight copies rotate until their total exceeds this many L2s... */
#define ROTATION_L2_MULTIPLE 4
/* ...but never take more than this, nor more than half the free memory. */
#define ROTATION_MAX_BYTES (20ull << 30)
/* Offsets inside device buffers are multiples of this (cuBLASLt's heuristic
 * assumes 256-byte aligned matrices; marlin needs 16). */
#define DEVICE_ALIGN_BYTES 256

/* One batch of launches between two events lasts about this long, with at
 * least MIN_LAUNCHES and at most MAX_LAUNCHES launches: long enough that the
 * event resolution (~0.5 us) and launch jitter do not matter. */
#define TARGET_TRIAL_US 10000.0
#define MIN_LAUNCHES 20
#define MAX_LAUNCHES 200
#define WARMUP_LAUNCHES 5
#define CALIBRATION_LAUNCHES 10
#define TRACE_CALLS 8 /* --trace: back-to-back calls recorded per layer and m */

#define COPY_BENCH_BYTES (1ull << 30) /* 1 GiB source, 1 GiB destination */
#define CUBLAS_WORKSPACE_BYTES (32u << 20)

/* --check: normwise relative error, and the largest error in units of the
 * reference's RMS. Both results are rounded to fp16 (2^-11 relative), so
 * agreement is ~5e-4; a wrong tile or scale gives errors near 1. */
#define CHECK_MAX_NORM_ERROR 5e-3
#define CHECK_MAX_ELEMENT_ERROR 5e-2

/* ----------------------------------------------------------- shape sets -- */

typedef struct {
    const char* name;
    int k; /* input features (rows of B) */
    int n; /* output features (columns of B) */
} bench_layer;

typedef struct {
    const char* name;
    int sized_to_sms; /* 1: one layer, k = 256 * SMs and n = 128 * SMs, set at run time */
    int layer_count;
    bench_layer layers[MAX_LAYERS_PER_SET];
} shape_set;

/* k x n of each linear layer of one block. qkv: n = (heads + 2 kv_heads) *
 * head_dim; gate_up: n = 2 * intermediate (gate and up fused), from each
 * model's config.json. */
static const shape_set SHAPE_SETS[] = {
    /* One matrix that divides evenly over the SMs: k = 256 * SMs, n = 128 * SMs,
     * filled in at run time (33792 x 16896 on a 132-SM H100). */
    {"ideal", 1, 1, {{"matrix", 0, 0}}},
    {"llama2-7b", 0, 4, {{"qkv", 4096, 12288}, {"o", 4096, 4096}, {"gate_up", 4096, 22016}, {"down", 11008, 4096}}},
    {"llama2-13b", 0, 4, {{"qkv", 5120, 15360}, {"o", 5120, 5120}, {"gate_up", 5120, 27648}, {"down", 13824, 5120}}},
    {"llama2-70b", 0, 4, {{"qkv", 8192, 10240}, {"o", 8192, 8192}, {"gate_up", 8192, 57344}, {"down", 28672, 8192}}},
    {"llama3-8b", 0, 4, {{"qkv", 4096, 6144}, {"o", 4096, 4096}, {"gate_up", 4096, 28672}, {"down", 14336, 4096}}},
    {"llama3-70b", 0, 4, {{"qkv", 8192, 10240}, {"o", 8192, 8192}, {"gate_up", 8192, 57344}, {"down", 28672, 8192}}},
    /* Falcon-180B, from tiiuae/falcon-180B's config.json (as reproduced in
     * TensorRT-LLM's benchmark docs): hidden_size 14848, 232 attention heads
     * of 64, 8 KV heads, new_decoder_architecture, GELU MLP without a gate,
     * ffn = 4 x hidden. So qkv n = 14848 + 2*8*64 = 15872 (the list
     * said 22272, which does not follow from the config), up = 14848 x 59392,
     * down = 59392 x 14848. */
    {"falcon-180b", 0, 4, {{"qkv", 14848, 15872}, {"o", 14848, 14848}, {"up", 14848, 59392}, {"down", 59392, 14848}}},
    /* SmolLM2-135M: hidden 576, 9 heads of 64, 3 KV heads, intermediate 1536. */
    {"smollm2-135m", 0, 4, {{"qkv", 576, 960}, {"o", 576, 576}, {"gate_up", 576, 3072}, {"down", 1536, 576}}},
};
#define SHAPE_SET_COUNT ((int)(sizeof(SHAPE_SETS) / sizeof(SHAPE_SETS[0])))

static const int DEFAULT_M_VALUES[] = {1, 2, 4, 8, 16, 32, 64, 128};
static const int LARGE_M_VALUES[] = {256, 512, 1024, 2048, 4096}; /* added by --all */

/* ----------------------------------------------------- failure handling -- */

static void fatal(int exit_code, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "marlin-bench: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(exit_code);
}

#define CUDA_CHECK(call) check_cuda((call), #call, __LINE__)
static void check_cuda(cudaError_t err, const char* what, int line) {
    if (err != cudaSuccess)
        fatal(EXIT_RUNTIME_FAILURE, "CUDA error \"%s\" at line %d: %s", cudaGetErrorString(err), line, what);
}

#define CUBLAS_CHECK(call) check_cublas((call), #call, __LINE__)
static void check_cublas(cublasStatus_t status, const char* what, int line) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fatal(EXIT_RUNTIME_FAILURE, "cuBLAS error \"%s\" at line %d: %s", cublasGetStatusString(status), line, what);
}

#define MARLIN_CHECK(call) check_marlin((call), #call, __LINE__)
static void check_marlin(marlin_status status, const char* what, int line) {
    if (status == MARLIN_STATUS_CUDA_ERROR)
        fatal(EXIT_RUNTIME_FAILURE, "marlin error \"%s\" (CUDA: %s) at line %d: %s", marlin_status_string(status),
              cudaGetErrorString(cudaGetLastError()), line, what);
    if (status != MARLIN_STATUS_SUCCESS)
        fatal(EXIT_RUNTIME_FAILURE, "marlin error \"%s\" at line %d: %s", marlin_status_string(status), line, what);
}

static void* checked_malloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) fatal(EXIT_RUNTIME_FAILURE, "out of host memory (%zu bytes)", bytes);
    return p;
}

static size_t round_up(size_t value, size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

/* ------------------------------------------------------- command line -- */

typedef struct {
    int set_selected[SHAPE_SET_COUNT]; /* 1 where the set runs */
    int m_values[MAX_M_VALUES];
    int m_count;
    int group_size;       /* 32, 64, 128, or -1 for one scale per column */
    const char* csv_path; /* NULL: no CSV; "-": CSV on stdout */
    int check;
    int trials;
    int per_layer;        /* --layers: print each layer's times too */
    shape_set custom;     /* --shape: layers of the "custom" set (layer_count 0: none) */
    const char* trace_path; /* --trace (MARLIN_TRACE builds): launch timelines to this CSV */
    FILE* trace;
} bench_options;

static void usage(FILE* out) {
    fprintf(out,
            "Usage: marlin-bench [options]\n"
            "Times marlin_matmul (4-bit weights) against fp16 cuBLAS (the faster of\n"
            "cublasGemmEx and cuBLASLt's best heuristic) on the linear layers of one\n"
            "transformer block, for each shape set and batch size m.\n"
            "\n"
            "Options:\n"
            "  --sets a,b,c   shape sets to run (default: all, in the order below)\n"
            "  --m LIST       batch sizes, comma-separated (default 1,2,4,8,16,32,64,128)\n"
            "  --all          also run m = 256,512,1024,2048,4096\n"
            "  --group G      scale group size: 32, 64, 128 (default) or -1 (one scale per column)\n"
            "  --csv FILE     also write the results as CSV to FILE (overwritten); '-' writes the\n"
            "                 CSV to stdout and moves the readable report to stderr. Columns:\n"
            "                 gpu,set,m,group,marlin_us,fp16_us,speedup,weight_gbs,copy_gbs,pct_copy\n"
            "  --check        before timing each layer and m, compare marlin with cuBLAS on the\n"
            "                 dequantized weights and print the relative error\n"
            "  --trials N     trials per measurement, median reported (default %d, at least %d)\n"
            "  --shape LIST   time these k x n layers as a set named \"custom\", e.g. 4096x4096,11008x4096\n"
            "                 (up to %d; runs alone unless --sets is given too)\n"
            "  --layers       also print each layer's marlin and fp16 times\n"
            "  --trace FILE   (builds with -DMARLIN_TRACE=ON) after timing each layer and m, run\n"
            "                 %d back-to-back calls and write each block's timeline to FILE (CSV,\n"
            "                 ns from the first block's start; scripts/trace_summary.py reads it)\n"
            "  -h, --help     this text\n"
            "\n"
            "Shape sets (k x n of qkv, o, gate+up, down):\n",
            DEFAULT_TRIALS, MIN_TRIALS, MAX_LAYERS_PER_SET, TRACE_CALLS);
    for (int s = 0; s < SHAPE_SET_COUNT; s++) {
        const shape_set* set = &SHAPE_SETS[s];
        fprintf(out, "  %-13s", set->name);
        if (set->sized_to_sms) fprintf(out, " one matrix, k = 256 x SMs, n = 128 x SMs");
        for (int l = 0; l < set->layer_count && !set->sized_to_sms; l++)
            fprintf(out, " %dx%d", set->layers[l].k, set->layers[l].n);
        fprintf(out, "\n");
    }
    fprintf(out,
            "\n"
            "Times are sums over a set's layers of the median time per call; weight GB/s is\n"
            "(packed weight + scale bytes) / marlin time; %% copy compares it with the measured\n"
            "device-to-device copy bandwidth (bytes read + written).\n"
            "Exit codes: 0 done, %d CUDA/cuBLAS/marlin failure, %d bad command line,\n"
            "%d --check failed, %d no CUDA device (prints SKIPPED: no CUDA device).\n",
            EXIT_RUNTIME_FAILURE, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_NO_DEVICE);
}

static void usage_error(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "marlin-bench: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n(see marlin-bench --help)\n");
    va_end(args);
    exit(EXIT_USAGE);
}

/* A whole decimal integer in [low, high], or a usage error naming `option`. */
static int parse_int(const char* text, int low, int high, const char* option) {
    char* end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || value < low || value > high)
        usage_error("%s: \"%s\" is not an integer in %d..%d", option, text, low, high);
    return (int)value;
}

static void add_m_value(bench_options* options, int m) {
    for (int i = 0; i < options->m_count; i++)
        if (options->m_values[i] == m) return; /* each m once */
    if (options->m_count == MAX_M_VALUES) usage_error("--m: at most %d batch sizes", MAX_M_VALUES);
    options->m_values[options->m_count++] = m;
}

/* Calls `item` on each entry of a comma-separated list (entries under 64 characters). */
static void for_each_list_item(const char* list, const char* option, void (*item)(bench_options*, const char*),
                               bench_options* options) {
    if (list[0] == '\0') usage_error("%s: empty list", option);
    const char* start = list;
    for (;;) {
        const char* comma = strchr(start, ',');
        size_t length = comma ? (size_t)(comma - start) : strlen(start);
        char entry[64];
        if (length == 0 || length >= sizeof(entry)) usage_error("%s: bad entry in \"%s\"", option, list);
        memcpy(entry, start, length);
        entry[length] = '\0';
        item(options, entry);
        if (!comma) break;
        start = comma + 1;
    }
}

static void select_set(bench_options* options, const char* name) {
    for (int s = 0; s < SHAPE_SET_COUNT; s++) {
        if (strcmp(SHAPE_SETS[s].name, name) == 0) {
            options->set_selected[s] = 1;
            return;
        }
    }
    fprintf(stderr, "marlin-bench: --sets: unknown set \"%s\"; known sets:", name);
    for (int s = 0; s < SHAPE_SET_COUNT; s++) fprintf(stderr, " %s", SHAPE_SETS[s].name);
    fprintf(stderr, "\n");
    exit(EXIT_USAGE);
}

static void select_m(bench_options* options, const char* text) {
    add_m_value(options, parse_int(text, 1, MAX_M, "--m"));
}

/* One "KxN" entry of --shape (the kernel's own checks run later, with the group size). */
static void add_custom_layer(bench_options* options, const char* text) {
    shape_set* set = &options->custom;
    if (set->layer_count == MAX_LAYERS_PER_SET) usage_error("--shape: at most %d layers", MAX_LAYERS_PER_SET);
    char k_text[64], n_text[64];
    const char* x = strchr(text, 'x');
    if (!x || x == text || (size_t)(x - text) >= sizeof(k_text)) usage_error("--shape: \"%s\" is not KxN", text);
    memcpy(k_text, text, (size_t)(x - text));
    k_text[x - text] = '\0';
    snprintf(n_text, sizeof(n_text), "%s", x + 1);
    bench_layer* layer = &set->layers[set->layer_count++];
    layer->name = "layer";
    layer->k = parse_int(k_text, 1, MARLIN_MAX_DIMENSION, "--shape k");
    layer->n = parse_int(n_text, 1, MARLIN_MAX_DIMENSION, "--shape n");
}

static bench_options parse_options(int argc, char** argv) {
    bench_options options;
    memset(&options, 0, sizeof(options));
    options.group_size = DEFAULT_GROUP_SIZE;
    options.trials = DEFAULT_TRIALS;
    int sets_given = 0, m_given = 0, all_m = 0;
    for (int i = 1; i < argc; i++) {
        const char* arg = argv[i];
        const char* value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = strcmp(arg, "--sets") == 0 || strcmp(arg, "--m") == 0 || strcmp(arg, "--group") == 0 ||
                          strcmp(arg, "--csv") == 0 || strcmp(arg, "--trials") == 0 || strcmp(arg, "--shape") == 0 ||
                          strcmp(arg, "--trace") == 0;
        if (takes_value && !value) usage_error("%s needs a value", arg);
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(arg, "--sets") == 0) {
            for_each_list_item(value, "--sets", select_set, &options);
            sets_given = 1;
        } else if (strcmp(arg, "--m") == 0) {
            for_each_list_item(value, "--m", select_m, &options);
            m_given = 1;
        } else if (strcmp(arg, "--all") == 0) {
            all_m = 1;
        } else if (strcmp(arg, "--group") == 0) {
            options.group_size = parse_int(value, -1, 128, "--group");
            if (options.group_size != 32 && options.group_size != 64 && options.group_size != 128 &&
                options.group_size != -1)
                usage_error("--group: %s is not one of 32, 64, 128, -1", value);
        } else if (strcmp(arg, "--csv") == 0) {
            options.csv_path = value;
        } else if (strcmp(arg, "--check") == 0) {
            options.check = 1;
        } else if (strcmp(arg, "--trials") == 0) {
            options.trials = parse_int(value, MIN_TRIALS, MAX_TRIALS, "--trials");
        } else if (strcmp(arg, "--shape") == 0) {
            for_each_list_item(value, "--shape", add_custom_layer, &options);
        } else if (strcmp(arg, "--layers") == 0) {
            options.per_layer = 1;
        } else if (strcmp(arg, "--trace") == 0) {
#ifdef MARLIN_TRACE
            options.trace_path = value;
#else
            usage_error("--trace needs a build configured with -DMARLIN_TRACE=ON");
#endif
        } else {
            usage_error("unknown argument \"%s\"", arg);
        }
        if (takes_value) i++;
    }
    options.custom.name = "custom";
    if (!sets_given && options.custom.layer_count == 0)
        for (int s = 0; s < SHAPE_SET_COUNT; s++) options.set_selected[s] = 1;
    if (!m_given)
        for (size_t i = 0; i < sizeof(DEFAULT_M_VALUES) / sizeof(DEFAULT_M_VALUES[0]); i++)
            add_m_value(&options, DEFAULT_M_VALUES[i]);
    if (all_m)
        for (size_t i = 0; i < sizeof(LARGE_M_VALUES) / sizeof(LARGE_M_VALUES[0]); i++)
            add_m_value(&options, LARGE_M_VALUES[i]);
    return options;
}

/* The group size marlin is given for a layer: -1 means one scale per column. */
static int layer_group_size(const bench_options* options, int k) {
    return options->group_size < 0 ? k : options->group_size;
}

/* ------------------------------------------------------- random data -- */

static uint64_t rng_state = 0x5EED0F0A7B3C4D21ull; /* fixed: runs are repeatable */

/* splitmix64 */
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [low, high). */
static float rng_uniform(float low, float high) {
    return low + (high - low) * (float)((rng_next() >> 40) * (1.0 / 16777216.0));
}

/* Codes 0..15, sixteen from each 64-bit draw. */
static void fill_random_codes(uint8_t* codes, size_t count) {
    for (size_t i = 0; i < count; i += 16) {
        uint64_t bits = rng_next();
        for (size_t j = 0; j < 16 && i + j < count; j++) codes[i + j] = (uint8_t)((bits >> (4 * j)) & 15);
    }
}

/* fp16 values uniform in [low, high). */
static void fill_random_fp16(uint16_t* values, size_t count, float low, float high) {
    for (size_t i = 0; i < count; i++) values[i] = marlin_fp16_from_float(rng_uniform(low, high));
}

/* ------------------------------------------------- host-side weights -- */

/* One layer's weights on the host, in both forms the benchmark multiplies. */
typedef struct {
    int k, n, group_size;        /* group_size: 32, 64, 128 or k */
    uint32_t* packed_b;          /* k*n/8 words, marlin_pack's layout */
    uint16_t* packed_scales;     /* ceil(k/group_size) x n fp16, marlin_pack's layout */
    uint16_t* dequantized_nk;    /* n x k fp16, row-major (torch.nn.Linear's layout) */
} host_weights;

/* Rows and columns of the tiles dequantize_transposed walks. */
#define DEQUANT_TILE_ROWS 128
#define DEQUANT_TILE_COLS 64

/*
 * Dequantizes codes (k x n, row-major) with plain scales (ceil(k/g) x n) into
 * the n x k fp16 weight that cuBLAS multiplies, each weight (q - 8) * s
 * rounded to fp16 as the kernel does. A transpose, so it goes tile by tile:
 * the tile's codes are gathered with one cache line per row, then written out
 * one column at a time as a contiguous run; touching each of many rows (and
 * their pages) once per element instead made this slower than packing. A
 * tile's rows share one scale row (group_size rows, or 128 when one scale
 * serves the whole column), so a 16-entry table per column serves the tile.
 */
static void dequantize_transposed(const uint8_t* codes, const uint16_t* scales, int k, int n, int group_size,
                                  uint16_t* weight_nk) {
    /* group_size is 32, 64, 128 or k: either it divides the tile height or all rows share scale row 0. */
    const int tile_rows = group_size < DEQUANT_TILE_ROWS ? group_size : DEQUANT_TILE_ROWS;
    uint8_t tile[DEQUANT_TILE_ROWS][DEQUANT_TILE_COLS];
    for (int row0 = 0; row0 < k; row0 += tile_rows) {
        const int rows = row0 + tile_rows < k ? tile_rows : k - row0;
        const uint16_t* scale_row = scales + (size_t)(row0 / group_size) * n;
        for (int col0 = 0; col0 < n; col0 += DEQUANT_TILE_COLS) {
            const int cols = col0 + DEQUANT_TILE_COLS < n ? DEQUANT_TILE_COLS : n - col0;
            for (int r = 0; r < rows; r++) memcpy(tile[r], codes + (size_t)(row0 + r) * n + col0, (size_t)cols);
            for (int c = 0; c < cols; c++) {
                uint16_t table[16];
                const float scale = marlin_fp16_to_float(scale_row[col0 + c]);
                for (int q = 0; q < 16; q++) table[q] = marlin_fp16_from_float((float)(q - MARLIN_ZERO_CODE) * scale);
                uint16_t* out = weight_nk + (size_t)(col0 + c) * k + row0;
                for (int r = 0; r < rows; r++) out[r] = table[tile[r][c]];
            }
        }
    }
}

static host_weights make_host_weights(int k, int n, int group_size) {
    host_weights w;
    w.k = k, w.n = n, w.group_size = group_size;
    const size_t count = (size_t)k * n;
    const size_t scale_count = (size_t)marlin_scale_rows(k, group_size) * n;
    uint8_t* codes = checked_malloc(count);
    uint16_t* scales = checked_malloc(scale_count * sizeof(uint16_t));
    fill_random_codes(codes, count);
    /* Positive, never zero; small enough that sums over k = 59392 stay far from fp16's range limit. */
    fill_random_fp16(scales, scale_count, 0.001f, 0.011f);
    w.packed_b = checked_malloc(marlin_packed_weight_bytes(k, n));
    w.packed_scales = checked_malloc(marlin_scale_bytes(k, n, group_size));
    w.dequantized_nk = checked_malloc(count * sizeof(uint16_t));
    MARLIN_CHECK(marlin_pack(codes, scales, k, n, group_size, w.packed_b, w.packed_scales));
    dequantize_transposed(codes, scales, k, n, group_size, w.dequantized_nk);
    free(codes);
    free(scales);
    return w;
}

static void free_host_weights(host_weights* w) {
    free(w->packed_b);
    free(w->packed_scales);
    free(w->dequantized_nk);
}

/* ------------------------------------------------------- the GPU state -- */

typedef struct {
    int device;
    struct cudaDeviceProp prop;
    cudaStream_t stream;
    cudaEvent_t start, stop;
    cublasHandle_t cublas;
    cublasLtHandle_t cublaslt;
    void* cublas_workspace;   /* CUBLAS_WORKSPACE_BYTES, for cublasGemmEx */
    void* cublaslt_workspace; /* CUBLAS_WORKSPACE_BYTES, for cublasLtMatmul */
    void* marlin_workspace;   /* marlin_workspace_bytes, zeroed once */
    size_t marlin_workspace_bytes;
    void* A;       /* max_m x max_k fp16, random activations */
    void* C;       /* max_m x max_n fp16, outputs of the timed calls */
    void* C_check; /* max_m x max_n fp16, cuBLAS's output under --check, else NULL */
} bench_gpu;

/* Stops with EXIT_NO_DEVICE, and the message tests and CI look for, when there is no GPU. */
static void require_device(void) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        fprintf(stderr, "SKIPPED: no CUDA device (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
        exit(EXIT_NO_DEVICE);
    }
}

static void print_device_header(FILE* out, const bench_gpu* gpu) {
    const struct cudaDeviceProp* p = &gpu->prop;
    int sm_clock_khz = 0, memory_clock_khz = 0, bus_bits = 0, driver = 0, runtime = 0, cublas_version = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sm_clock_khz, cudaDevAttrClockRate, gpu->device));
    CUDA_CHECK(cudaDeviceGetAttribute(&memory_clock_khz, cudaDevAttrMemoryClockRate, gpu->device));
    CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, gpu->device));
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    CUBLAS_CHECK(cublasGetVersion(gpu->cublas, &cublas_version));
    /* Double data rate: two transfers per memory clock. */
    const double peak_gbs = 2.0 * memory_clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    fprintf(out, "marlin-bench, marlin %d.%d.%d\n", MARLIN_VERSION_MAJOR, MARLIN_VERSION_MINOR,
            MARLIN_VERSION_PATCH);
    fprintf(out, "GPU %d: %s, sm_%d%d, %d SMs, L2 %.1f MiB, %.1f GiB memory\n", gpu->device, p->name, p->major,
            p->minor, p->multiProcessorCount, p->l2CacheSize / 1048576.0, p->totalGlobalMem / 1073741824.0);
    fprintf(out, "clocks: SM up to %d MHz; memory %d MHz x %d-bit bus (%.0f GB/s theoretical)\n",
            sm_clock_khz / 1000, memory_clock_khz / 1000, bus_bits, peak_gbs);
    fprintf(out, "CUDA driver %d.%d, runtime %d.%d, cuBLAS %d\n", driver / 1000, driver % 1000 / 10,
            runtime / 1000, runtime % 1000 / 10, cublas_version);
}

/* ----------------------------------------------- rotating weight copies -- */

#define MAX_WEIGHT_PARTS 2

/* copy_count copies of one layer's weights on the device, `stride` bytes
 * apart, each made of up to two parts (marlin: packed weights and scales). */
typedef struct {
    unsigned char* base;                  /* device, copy_count * stride bytes */
    size_t part_offset[MAX_WEIGHT_PARTS]; /* bytes from the start of a copy */
    size_t copy_bytes;                    /* bytes of one copy, alignment padding included */
    size_t stride;                        /* multiple of DEVICE_ALIGN_BYTES */
    int copy_count;
    int next_copy; /* the next copy to read: every launcher reading these weights continues the
                      rotation, so no copy is read again before all the others have been */
} rotating_weights;

/* Uploads the parts once and replicates them on the device until the copies
 * together exceed ROTATION_L2_MULTIPLE x L2 (one copy of a huge layer may
 * already), within ROTATION_MAX_BYTES and half the free device memory. */
static rotating_weights make_rotating_weights(const bench_gpu* gpu, const void* const* parts,
                                              const size_t* part_bytes, int part_count) {
    rotating_weights w;
    memset(&w, 0, sizeof(w));
    for (int p = 0; p < part_count; p++) {
        w.part_offset[p] = w.copy_bytes;
        w.copy_bytes += round_up(part_bytes[p], DEVICE_ALIGN_BYTES);
    }
    w.stride = w.copy_bytes;
    const size_t rotation_bytes = (size_t)ROTATION_L2_MULTIPLE * (size_t)gpu->prop.l2CacheSize;
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    size_t budget = free_bytes / 2 < ROTATION_MAX_BYTES ? free_bytes / 2 : ROTATION_MAX_BYTES;
    size_t wanted = rotation_bytes / w.stride + 1; /* strictly more than rotation_bytes */
    size_t affordable = budget / w.stride;
    size_t count = wanted < affordable ? wanted : affordable;
    if (count < 1) count = 1;
    if (count > INT_MAX) count = INT_MAX;
    w.copy_count = (int)count;
    CUDA_CHECK(cudaMalloc((void**)&w.base, (size_t)w.copy_count * w.stride));
    for (int p = 0; p < part_count; p++)
        CUDA_CHECK(cudaMemcpy(w.base + w.part_offset[p], parts[p], part_bytes[p], cudaMemcpyHostToDevice));
    /* Doubling: copies [0, have) are replicated into [have, 2 have) with one call. */
    for (int have = 1; have < w.copy_count;) {
        int add = have < w.copy_count - have ? have : w.copy_count - have;
        CUDA_CHECK(cudaMemcpy(w.base + (size_t)have * w.stride, w.base, (size_t)add * w.stride,
                              cudaMemcpyDeviceToDevice));
        have += add;
    }
    return w;
}

static const void* weight_part(const rotating_weights* w, int copy, int part) {
    return w->base + (size_t)copy * w->stride + w->part_offset[part];
}

static void free_rotating_weights(rotating_weights* w) {
    CUDA_CHECK(cudaFree(w->base));
    w->base = NULL;
}

/* ------------------------------------------------------------- timing -- */

/* Something launched on the benchmark's stream, reading copy `copy` of its
 * weights; it stops the program if the launch is refused. */
typedef void (*launch_fn)(void* context, int copy);

typedef struct {
    launch_fn launch;
    void* context;
    int copy_count;
    int* next_copy; /* shared by everything that reads the same copies (rotating_weights.next_copy) */
} rotating_launcher;

static void launch_batch(rotating_launcher* launcher, int count) {
    for (int i = 0; i < count; i++) {
        launcher->launch(launcher->context, *launcher->next_copy);
        *launcher->next_copy = (*launcher->next_copy + 1) % launcher->copy_count;
    }
}

/* Mean time of one launch, in microseconds, over a batch of `count` back-to-back launches. */
static double time_batch_us(const bench_gpu* gpu, rotating_launcher* launcher, int count) {
    CUDA_CHECK(cudaEventRecord(gpu->start, gpu->stream));
    launch_batch(launcher, count);
    CUDA_CHECK(cudaEventRecord(gpu->stop, gpu->stream));
    CUDA_CHECK(cudaEventSynchronize(gpu->stop)); /* also reports a kernel that faulted */
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, gpu->start, gpu->stop));
    return ms * 1000.0 / count;
}

static int compare_doubles(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* Median over `trials` batches of the time of one launch, in microseconds.
 * A warm-up, then a short calibration batch sets the batch length. */
static double median_launch_us(const bench_gpu* gpu, rotating_launcher* launcher, int trials) {
    launch_batch(launcher, WARMUP_LAUNCHES);
    const double estimate_us = time_batch_us(gpu, launcher, CALIBRATION_LAUNCHES);
    double wanted = estimate_us > 0.0 ? ceil(TARGET_TRIAL_US / estimate_us) : MAX_LAUNCHES;
    const int launches = wanted < MIN_LAUNCHES ? MIN_LAUNCHES : wanted > MAX_LAUNCHES ? MAX_LAUNCHES : (int)wanted;
    double times[MAX_TRIALS];
    for (int t = 0; t < trials; t++) times[t] = time_batch_us(gpu, launcher, launches);
    qsort(times, (size_t)trials, sizeof(double), compare_doubles);
    return trials % 2 ? times[trials / 2] : 0.5 * (times[trials / 2 - 1] + times[trials / 2]);
}

/* ------------------------------------------------------ copy bandwidth -- */

typedef struct {
    const bench_gpu* gpu;
    void* source;      /* device, COPY_BENCH_BYTES */
    void* destination; /* device, COPY_BENCH_BYTES */
} copy_context;

static void launch_copy(void* context, int copy) {
    (void)copy; /* one buffer: a 1 GiB copy is far larger than L2 */
    const copy_context* c = context;
    CUDA_CHECK(cudaMemcpyAsync(c->destination, c->source, COPY_BENCH_BYTES, cudaMemcpyDeviceToDevice, c->gpu->stream));
}

/* Device-to-device copy bandwidth in GB/s, counting bytes read + bytes written. */
static double measure_copy_gbs(const bench_gpu* gpu, int trials) {
    copy_context context = {gpu, NULL, NULL};
    CUDA_CHECK(cudaMalloc(&context.source, COPY_BENCH_BYTES));
    CUDA_CHECK(cudaMalloc(&context.destination, COPY_BENCH_BYTES));
    CUDA_CHECK(cudaMemset(context.source, 0x5A, COPY_BENCH_BYTES));
    int next_copy = 0;
    rotating_launcher launcher = {launch_copy, &context, 1, &next_copy};
    const double us = median_launch_us(gpu, &launcher, trials);
    CUDA_CHECK(cudaFree(context.source));
    CUDA_CHECK(cudaFree(context.destination));
    return 2.0 * COPY_BENCH_BYTES / (us * 1e3);
}

/* ------------------------------------------------------ the multiplies -- */

typedef struct {
    const bench_gpu* gpu;
    const rotating_weights* weights; /* part 0: packed B, part 1: packed scales */
    void* C;                         /* device, m x n fp16 */
    int m, n, k, group_size;
} marlin_call;

static void launch_marlin(void* context, int copy) {
    const marlin_call* c = context;
    MARLIN_CHECK(marlin_matmul(c->gpu->A, weight_part(c->weights, copy, 0), weight_part(c->weights, copy, 1), c->C,
                               c->m, c->n, c->k, c->group_size, c->gpu->marlin_workspace,
                               c->gpu->marlin_workspace_bytes, c->gpu->stream));
}

/*
 * C[m x n] = A[m x k] . W^T with W the n x k fp16 weight (torch.nn.Linear's
 * layout), fp32 accumulation. In cuBLAS's column-major terms that is
 * C^T (n x m) = op_T(W stored as k x n, ld k) . A^T (k x m, ld k), the call
 * PyTorch makes for F.linear.
 */
typedef struct {
    const bench_gpu* gpu;
    const rotating_weights* weights; /* part 0: n x k fp16 */
    void* C;                         /* device, m x n fp16 */
    int m, n, k;
    int lt_found; /* cuBLASLt's heuristic returned an algorithm */
    cublasLtMatmulDesc_t lt_desc;
    cublasLtMatrixLayout_t lt_weight, lt_input, lt_output;
    cublasLtMatmulAlgo_t lt_algo;
} fp16_call;

static const float ALPHA_ONE = 1.0f, BETA_ZERO = 0.0f;

static void launch_gemm_ex(void* context, int copy) {
    const fp16_call* c = context;
    /* CUBLAS_GEMM_DEFAULT uses tensor cores for fp16 inputs with fp32 compute. */
    CUBLAS_CHECK(cublasGemmEx(c->gpu->cublas, CUBLAS_OP_T, CUBLAS_OP_N, c->n, c->m, c->k, &ALPHA_ONE,
                              weight_part(c->weights, copy, 0), CUDA_R_16F, c->k, c->gpu->A, CUDA_R_16F, c->k,
                              &BETA_ZERO, c->C, CUDA_R_16F, c->n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void launch_cublaslt(void* context, int copy) {
    const fp16_call* c = context;
    CUBLAS_CHECK(cublasLtMatmul(c->gpu->cublaslt, c->lt_desc, &ALPHA_ONE, weight_part(c->weights, copy, 0),
                                c->lt_weight, c->gpu->A, c->lt_input, &BETA_ZERO, c->C, c->lt_output, c->C,
                                c->lt_output, &c->lt_algo, c->gpu->cublaslt_workspace, CUBLAS_WORKSPACE_BYTES,
                                c->gpu->stream));
}

static fp16_call make_fp16_call(const bench_gpu* gpu, const rotating_weights* weights, void* C, int m, int n, int k) {
    fp16_call c;
    memset(&c, 0, sizeof(c));
    c.gpu = gpu, c.weights = weights, c.C = C, c.m = m, c.n = n, c.k = k;
    const cublasOperation_t transpose = CUBLAS_OP_T;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&c.lt_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(c.lt_desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c.lt_weight, CUDA_R_16F, (uint64_t)k, (uint64_t)n, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c.lt_input, CUDA_R_16F, (uint64_t)k, (uint64_t)m, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c.lt_output, CUDA_R_16F, (uint64_t)n, (uint64_t)m, n));
    cublasLtMatmulPreference_t preference;
    const uint64_t workspace_bytes = CUBLAS_WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes, sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(gpu->cublaslt, c.lt_desc, c.lt_weight, c.lt_input,
                                                           c.lt_output, c.lt_output, preference, 1, &result, &found);
    /* No algorithm is not an error: cublasGemmEx alone is the fp16 baseline then. */
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(status);
    c.lt_found = status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (c.lt_found) c.lt_algo = result.algo;
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
    return c;
}

static void free_fp16_call(fp16_call* c) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->lt_weight));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->lt_input));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c->lt_output));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(c->lt_desc));
}

/* -------------------------------------------------------------- --check -- */

typedef struct {
    double norm_error;    /* ||marlin - cuBLAS|| / ||cuBLAS|| */
    double element_error; /* max |marlin - cuBLAS| / RMS(cuBLAS) */
    int finite;           /* every output of both is finite */
} check_result;

/* Runs marlin and cublasGemmEx once each on copy 0 and compares the m x n outputs in double. */
static check_result check_against_cublas(marlin_call* marlin, fp16_call* fp16) {
    const bench_gpu* gpu = marlin->gpu;
    const size_t count = (size_t)marlin->m * marlin->n;
    uint16_t* marlin_out = checked_malloc(count * sizeof(uint16_t));
    uint16_t* cublas_out = checked_malloc(count * sizeof(uint16_t));
    void* timed_output = fp16->C;
    fp16->C = gpu->C_check;
    launch_marlin(marlin, 0);
    launch_gemm_ex(fp16, 0);
    fp16->C = timed_output;
    CUDA_CHECK(cudaStreamSynchronize(gpu->stream));
    CUDA_CHECK(cudaMemcpy(marlin_out, marlin->C, count * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(cublas_out, gpu->C_check, count * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    double diff_squares = 0.0, ref_squares = 0.0, max_diff = 0.0;
    check_result r = {0.0, 0.0, 1};
    for (size_t i = 0; i < count; i++) {
        const double got = marlin_fp16_to_float(marlin_out[i]), want = marlin_fp16_to_float(cublas_out[i]);
        if (!isfinite(got) || !isfinite(want)) r.finite = 0;
        const double diff = fabs(got - want);
        diff_squares += diff * diff;
        ref_squares += want * want;
        if (diff > max_diff) max_diff = diff;
    }
    free(marlin_out);
    free(cublas_out);
    r.norm_error = ref_squares > 0.0 ? sqrt(diff_squares / ref_squares) : INFINITY;
    r.element_error = ref_squares > 0.0 ? max_diff / sqrt(ref_squares / (double)count) : INFINITY;
    return r;
}

static int check_passed(const check_result* r) {
    return r->finite && r->norm_error <= CHECK_MAX_NORM_ERROR && r->element_error <= CHECK_MAX_ELEMENT_ERROR;
}

/* -------------------------------------------------------- one shape set -- */

typedef struct {
    double marlin_us[MAX_M_VALUES]; /* sums over the set's layers */
    double fp16_us[MAX_M_VALUES];
    double weight_bytes;            /* packed weights + scales, all layers */
    double flops_per_row;           /* 2 * sum of k * n: flops per row of A */
    int check_failures;
} set_result;

/*
 * Measures one layer for every m and adds its times to `result`. Prints one
 * line: the copies used, which fp16 path won, and the --check errors.
 */
#ifdef MARLIN_TRACE
/* --trace: TRACE_CALLS back-to-back calls of one layer and m (rotating
 * weights, as timed), then every recorded block's timeline as CSV rows. */
static void write_trace(const bench_gpu* gpu, rotating_launcher* launcher, FILE* out, const bench_layer* layer,
                        int m) {
    static unsigned long long stamps[MARLIN_TRACE_LAUNCHES][MARLIN_TRACE_BLOCKS][MARLIN_TRACE_FIELDS];
    int grids[MARLIN_TRACE_LAUNCHES], launches = 0;
    MARLIN_CHECK(marlin_trace_reset());
    launch_batch(launcher, TRACE_CALLS);
    CUDA_CHECK(cudaStreamSynchronize(gpu->stream));
    MARLIN_CHECK(marlin_trace_read(&stamps[0][0][0], grids, &launches));
    unsigned long long origin = 0;
    for (int l = 0; l < launches; l++)
        for (int b = 0; b < grids[l] && b < MARLIN_TRACE_BLOCKS; b++) {
            const unsigned long long start = stamps[l][b][MARLIN_TRACE_START];
            if (start && (!origin || start < origin)) origin = start;
        }
    for (int l = 0; l < launches; l++)
        for (int b = 0; b < grids[l] && b < MARLIN_TRACE_BLOCKS; b++) {
            const unsigned long long* r = stamps[l][b];
            fprintf(out, "%s,%d,%d,%d,%d,%d,%d,%llu", layer->name, layer->k, layer->n, m, l, grids[l], b,
                    r[MARLIN_TRACE_SM]);
            for (int f = MARLIN_TRACE_START; f < MARLIN_TRACE_FIELDS; f++)
                fprintf(out, ",%lld", r[f] ? (long long)(r[f] - origin) : -1ll);
            fprintf(out, "\n");
        }
}
#endif

static void bench_layer_shape(bench_gpu* gpu, const bench_options* options, const bench_layer* layer, FILE* report,
                              set_result* result) {
    const int k = layer->k, n = layer->n, group_size = layer_group_size(options, k);
    host_weights host = make_host_weights(k, n, group_size);
    const void* marlin_parts[MAX_WEIGHT_PARTS] = {host.packed_b, host.packed_scales};
    const size_t marlin_part_bytes[MAX_WEIGHT_PARTS] = {marlin_packed_weight_bytes(k, n),
                                                        marlin_scale_bytes(k, n, group_size)};
    const void* fp16_parts[1] = {host.dequantized_nk};
    const size_t fp16_part_bytes[1] = {(size_t)k * n * sizeof(uint16_t)};
    rotating_weights marlin_weights = make_rotating_weights(gpu, marlin_parts, marlin_part_bytes, MAX_WEIGHT_PARTS);
    rotating_weights fp16_weights = make_rotating_weights(gpu, fp16_parts, fp16_part_bytes, 1);
    free_host_weights(&host);
    result->weight_bytes += (double)(marlin_part_bytes[0] + marlin_part_bytes[1]);
    result->flops_per_row += 2.0 * k * n;

    int lt_wins = 0;
    double layer_marlin_us[MAX_M_VALUES], layer_fp16_us[MAX_M_VALUES];
    double worst_norm_error = 0.0, worst_element_error = 0.0;
    int layer_check_failures = 0;
    for (int i = 0; i < options->m_count; i++) {
        const int m = options->m_values[i];
        marlin_call marlin = {gpu, &marlin_weights, gpu->C, m, n, k, group_size};
        fp16_call fp16 = make_fp16_call(gpu, &fp16_weights, gpu->C, m, n, k);
        if (options->check) {
            check_result r = check_against_cublas(&marlin, &fp16);
            if (!check_passed(&r)) {
                layer_check_failures++;
                fprintf(report, "  CHECK FAILED %s %dx%d m=%d: relative error %.3g, max element error %.3g x RMS%s\n",
                        layer->name, k, n, m, r.norm_error, r.element_error, r.finite ? "" : ", non-finite output");
            }
            /* A NaN error, once seen, stays the worst. */
            if (isnan(r.norm_error) || r.norm_error > worst_norm_error) worst_norm_error = r.norm_error;
            if (isnan(r.element_error) || r.element_error > worst_element_error) worst_element_error = r.element_error;
        }
        rotating_launcher marlin_launcher = {launch_marlin, &marlin, marlin_weights.copy_count,
                                             &marlin_weights.next_copy};
        rotating_launcher gemm_launcher = {launch_gemm_ex, &fp16, fp16_weights.copy_count, &fp16_weights.next_copy};
        rotating_launcher lt_launcher = {launch_cublaslt, &fp16, fp16_weights.copy_count, &fp16_weights.next_copy};
        const double marlin_us = median_launch_us(gpu, &marlin_launcher, options->trials);
#ifdef MARLIN_TRACE
        if (options->trace) write_trace(gpu, &marlin_launcher, options->trace, layer, m);
#endif
        const double gemm_us = median_launch_us(gpu, &gemm_launcher, options->trials);
        const double lt_us = fp16.lt_found ? median_launch_us(gpu, &lt_launcher, options->trials) : INFINITY;
        if (lt_us < gemm_us) lt_wins++;
        layer_marlin_us[i] = marlin_us;
        layer_fp16_us[i] = lt_us < gemm_us ? lt_us : gemm_us;
        result->marlin_us[i] += marlin_us;
        result->fp16_us[i] += lt_us < gemm_us ? lt_us : gemm_us;
        free_fp16_call(&fp16);
    }
    fprintf(report,
            "  %-8s %6d x %-6d marlin %4d cop%s x %7.1f MB, fp16 %4d cop%s x %7.1f MB; cuBLASLt faster at %d/%d m",
            layer->name, k, n, marlin_weights.copy_count, marlin_weights.copy_count == 1 ? "y " : "ies",
            marlin_weights.copy_bytes / 1e6, fp16_weights.copy_count, fp16_weights.copy_count == 1 ? "y " : "ies",
            fp16_weights.copy_bytes / 1e6, lt_wins, options->m_count);
    if (options->check)
        fprintf(report, "; check: rel err <= %.2e, max elem err <= %.2e x RMS %s", worst_norm_error,
                worst_element_error, layer_check_failures ? "FAILED" : "ok");
    fprintf(report, "\n");
    if (options->per_layer) {
        const double bytes = (double)(marlin_part_bytes[0] + marlin_part_bytes[1]);
        for (int i = 0; i < options->m_count; i++)
            fprintf(report, "    m %5d: marlin %9.1f us (%6.0f GB/s), fp16 %9.1f us, speedup %5.2f\n",
                    options->m_values[i], layer_marlin_us[i], bytes / (layer_marlin_us[i] * 1e3), layer_fp16_us[i],
                    layer_fp16_us[i] / layer_marlin_us[i]);
    }
    fflush(report);
    result->check_failures += layer_check_failures;
    free_rotating_weights(&marlin_weights);
    free_rotating_weights(&fp16_weights);
}

/* The GPU's name with the characters that would break a CSV field replaced. */
static void csv_safe_name(const char* name, char* out, size_t out_size) {
    size_t i = 0;
    for (; name[i] && i + 1 < out_size; i++)
        out[i] = (name[i] == ',' || name[i] == '"' || name[i] == '\n') ? ' ' : name[i];
    out[i] = '\0';
}

static void print_set_table(FILE* out, const bench_options* options, const set_result* r, double copy_gbs) {
    fprintf(out, "  %6s %11s %11s %8s %8s %11s %7s\n", "m", "marlin us", "fp16 us", "speedup", "TFLOP/s",
            "weight GB/s", "% copy");
    for (int i = 0; i < options->m_count; i++) {
        const double weight_gbs = r->weight_bytes / (r->marlin_us[i] * 1e3);
        fprintf(out, "  %6d %11.1f %11.1f %8.2f %8.2f %11.0f %7.1f\n", options->m_values[i], r->marlin_us[i],
                r->fp16_us[i], r->fp16_us[i] / r->marlin_us[i],
                r->flops_per_row * options->m_values[i] / (r->marlin_us[i] * 1e6), weight_gbs,
                100.0 * weight_gbs / copy_gbs);
    }
    fflush(out);
}

static void write_csv_rows(FILE* csv, const char* gpu_name, const char* set_name, const bench_options* options,
                           const set_result* r, double copy_gbs) {
    for (int i = 0; i < options->m_count; i++) {
        const double weight_gbs = r->weight_bytes / (r->marlin_us[i] * 1e3);
        fprintf(csv, "%s,%s,%d,%d,%.3f,%.3f,%.4f,%.1f,%.1f,%.2f\n", gpu_name, set_name, options->m_values[i],
                options->group_size, r->marlin_us[i], r->fp16_us[i], r->fp16_us[i] / r->marlin_us[i], weight_gbs,
                copy_gbs, 100.0 * weight_gbs / copy_gbs);
    }
    fflush(csv);
}

/* ----------------------------------------------------------------- main -- */

/* The selected sets, with the ideal set's shape filled in for this GPU. */
static int selected_sets(const bench_options* options, const bench_gpu* gpu, shape_set* sets) {
    int count = 0;
    if (options->custom.layer_count > 0) sets[count++] = options->custom;
    for (int s = 0; s < SHAPE_SET_COUNT; s++) {
        if (!options->set_selected[s]) continue;
        sets[count] = SHAPE_SETS[s];
        if (sets[count].sized_to_sms) {
            sets[count].layers[0].k = 256 * gpu->prop.multiProcessorCount;
            sets[count].layers[0].n = 128 * gpu->prop.multiProcessorCount;
        }
        count++;
    }
    return count;
}

/* Checks every shape up front, then allocates the activations, outputs and
 * one marlin workspace covering every call of the run (zeroed once). */
static void allocate_run_buffers(bench_gpu* gpu, const bench_options* options, const shape_set* sets, int set_count) {
    int max_m = 1, max_k = 1, max_n = 1;
    for (int i = 0; i < options->m_count; i++)
        if (options->m_values[i] > max_m) max_m = options->m_values[i];
    gpu->marlin_workspace_bytes = 0;
    for (int s = 0; s < set_count; s++) {
        for (int l = 0; l < sets[s].layer_count; l++) {
            const bench_layer* layer = &sets[s].layers[l];
            const int group_size = layer_group_size(options, layer->k);
            marlin_status status = marlin_check_weight_shape(layer->k, layer->n, group_size);
            if (status != MARLIN_STATUS_SUCCESS)
                fatal(EXIT_USAGE, "%s %s: %d x %d with group %d: %s", sets[s].name, layer->name, layer->k, layer->n,
                      group_size, marlin_status_string(status));
            if (layer->k > max_k) max_k = layer->k;
            if (layer->n > max_n) max_n = layer->n;
            for (int i = 0; i < options->m_count; i++) {
                size_t bytes = 0;
                MARLIN_CHECK(marlin_workspace_size(options->m_values[i], layer->n, layer->k, group_size, &bytes));
                if (bytes > gpu->marlin_workspace_bytes) gpu->marlin_workspace_bytes = bytes;
            }
        }
    }
    const size_t a_count = (size_t)max_m * max_k, c_bytes = (size_t)max_m * max_n * sizeof(uint16_t);
    uint16_t* host_a = checked_malloc(a_count * sizeof(uint16_t));
    fill_random_fp16(host_a, a_count, -1.0f, 1.0f);
    CUDA_CHECK(cudaMalloc(&gpu->A, a_count * sizeof(uint16_t)));
    CUDA_CHECK(cudaMemcpy(gpu->A, host_a, a_count * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(host_a);
    CUDA_CHECK(cudaMalloc(&gpu->C, c_bytes));
    gpu->C_check = NULL;
    if (options->check) CUDA_CHECK(cudaMalloc(&gpu->C_check, c_bytes));
    /* cudaMalloc of 0 bytes returns NULL, which marlin_matmul refuses: allocate at least one aligned unit. */
    const size_t workspace_alloc = gpu->marlin_workspace_bytes ? gpu->marlin_workspace_bytes : MARLIN_ALIGNMENT;
    CUDA_CHECK(cudaMalloc(&gpu->marlin_workspace, workspace_alloc));
    CUDA_CHECK(cudaMemset(gpu->marlin_workspace, 0, workspace_alloc));
}

static void init_gpu(bench_gpu* gpu) {
    memset(gpu, 0, sizeof(*gpu));
    CUDA_CHECK(cudaGetDevice(&gpu->device));
    CUDA_CHECK(cudaGetDeviceProperties(&gpu->prop, gpu->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&gpu->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&gpu->start));
    CUDA_CHECK(cudaEventCreate(&gpu->stop));
    CUBLAS_CHECK(cublasCreate(&gpu->cublas));
    CUBLAS_CHECK(cublasLtCreate(&gpu->cublaslt));
    CUBLAS_CHECK(cublasSetStream(gpu->cublas, gpu->stream));
    CUDA_CHECK(cudaMalloc(&gpu->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    CUDA_CHECK(cudaMalloc(&gpu->cublaslt_workspace, CUBLAS_WORKSPACE_BYTES));
    CUBLAS_CHECK(cublasSetWorkspace(gpu->cublas, gpu->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
}

static void release_gpu(bench_gpu* gpu) {
    CUDA_CHECK(cudaFree(gpu->A));
    CUDA_CHECK(cudaFree(gpu->C));
    CUDA_CHECK(cudaFree(gpu->C_check));
    CUDA_CHECK(cudaFree(gpu->marlin_workspace));
    CUBLAS_CHECK(cublasDestroy(gpu->cublas));
    CUBLAS_CHECK(cublasLtDestroy(gpu->cublaslt));
    CUDA_CHECK(cudaFree(gpu->cublas_workspace));
    CUDA_CHECK(cudaFree(gpu->cublaslt_workspace));
    CUDA_CHECK(cudaEventDestroy(gpu->start));
    CUDA_CHECK(cudaEventDestroy(gpu->stop));
    CUDA_CHECK(cudaStreamDestroy(gpu->stream));
}

static double wall_seconds(void) {
    struct timespec now;
    timespec_get(&now, TIME_UTC);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
    bench_options options = parse_options(argc, argv);
    require_device();
    const double start_seconds = wall_seconds();

    bench_gpu gpu;
    init_gpu(&gpu);
    shape_set sets[SHAPE_SET_COUNT + 1];
    const int set_count = selected_sets(&options, &gpu, sets);
    allocate_run_buffers(&gpu, &options, sets, set_count);

    /* With the CSV on stdout, the readable report goes to stderr. */
    const int csv_on_stdout = options.csv_path && strcmp(options.csv_path, "-") == 0;
    FILE* report = csv_on_stdout ? stderr : stdout;
    FILE* csv = NULL;
    if (options.csv_path) {
        csv = csv_on_stdout ? stdout : fopen(options.csv_path, "w");
        if (!csv) fatal(EXIT_USAGE, "cannot write %s: %s", options.csv_path, strerror(errno));
        fprintf(csv, "gpu,set,m,group,marlin_us,fp16_us,speedup,weight_gbs,copy_gbs,pct_copy\n");
    }
    if (options.trace_path) {
        options.trace = fopen(options.trace_path, "w");
        if (!options.trace) fatal(EXIT_USAGE, "cannot write %s: %s", options.trace_path, strerror(errno));
        fprintf(options.trace, "layer,k,n,m,launch,grid,block,sm,start_ns,waited_ns,first_stage_ns,last_finish_ns,"
                               "reduced_ns,arrived_ns,end_ns\n");
    }
    char gpu_name[sizeof(gpu.prop.name)];
    csv_safe_name(gpu.prop.name, gpu_name, sizeof(gpu_name));

    print_device_header(report, &gpu);
    const double copy_gbs = measure_copy_gbs(&gpu, options.trials);
    fprintf(report, "copy bandwidth: %.1f GB/s (1 GiB device-to-device copy, bytes read + written)\n", copy_gbs);
    fprintf(report, "group size %d%s; median of %d trials; weights rotate through copies totalling > %d x L2\n",
            options.group_size, options.group_size < 0 ? " (one scale per column)" : "", options.trials,
            ROTATION_L2_MULTIPLE);
    fflush(report);

    int check_failures = 0;
    for (int s = 0; s < set_count; s++) {
        const shape_set* set = &sets[s];
        set_result result;
        memset(&result, 0, sizeof(result));
        fprintf(report, "\n== %s ==\n", set->name);
        fflush(report);
        for (int l = 0; l < set->layer_count; l++) {
            fprintf(stderr, "[%s %d/%d] %s %dx%d: preparing weights and timing %d batch sizes...\n", set->name, l + 1,
                    set->layer_count, set->layers[l].name, set->layers[l].k, set->layers[l].n, options.m_count);
            bench_layer_shape(&gpu, &options, &set->layers[l], report, &result);
        }
        print_set_table(report, &options, &result, copy_gbs);
        if (csv) write_csv_rows(csv, gpu_name, set->name, &options, &result, copy_gbs);
        check_failures += result.check_failures;
    }
    if (csv && !csv_on_stdout && fclose(csv) != 0)
        fatal(EXIT_RUNTIME_FAILURE, "writing %s failed: %s", options.csv_path, strerror(errno));
    if (options.trace && fclose(options.trace) != 0)
        fatal(EXIT_RUNTIME_FAILURE, "writing %s failed: %s", options.trace_path, strerror(errno));
    release_gpu(&gpu);
    fprintf(report, "\ndone in %.0f s\n", wall_seconds() - start_seconds);
    if (check_failures) {
        fprintf(stderr, "marlin-bench: --check failed for %d layer/m pairs (see CHECK FAILED lines)\n", check_failures);
        return EXIT_CHECK_FAILED;
    }
    return 0;
}
