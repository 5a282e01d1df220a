/*
 * quantize.c: int4 quantization of a whole model.
 *
 * RTN quantizes each linear layer on its own (marlin_quantize_rtn).
 *
 * GPTQ is sequential, as in the GPTQ paper: the calibration windows run
 * through the model one block at a time, on the CPU backend, and each linear
 * layer is quantized just before the block applies it, from the Hessian of
 * the inputs it actually receives, which were computed by the blocks (and
 * the linear layers of its own block) already quantized. The block then
 * continues with the quantized weights, so the next layer's inputs carry the
 * quantization error of everything before it. H = (2/N) X^T X is formed
 * with the multithreaded CPU matmul (the same definition as
 * marlin_hessian_accumulate, which is single-threaded).
 */
#include "quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "marlin.h"

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static llama_linear* linear_of(llama_layer* L, enum llama_linear_id which) {
    switch (which) {
    case LLAMA_LINEAR_QKV: return &L->qkv;
    case LLAMA_LINEAR_OUT: return &L->out;
    case LLAMA_LINEAR_GATE_UP: return &L->gate_up;
    default: return &L->down;
    }
}

static const char* linear_name(enum llama_linear_id which) {
    static const char* names[4] = {"qkv", "out", "gate_up", "down"};
    return names[which];
}

typedef struct quantize_context {
    llama_model* model;
    const llama_quantize_options* options;
    llama_thread_pool* pool;
    char* error;
    size_t error_bytes;
    int failed;
} quantize_context;

/* Quantizes one layer, with RTN (H == NULL) or GPTQ. */
static int quantize_linear(quantize_context* q, llama_linear* l, const float* H, const char* where) {
    int group = q->options->group_size > 0 ? q->options->group_size : l->k;
    uint8_t* codes = malloc((size_t)l->k * l->n);
    uint16_t* scales = malloc(marlin_scale_bytes(l->k, l->n, group));
    int rc = -1;
    if (!codes || !scales) {
        snprintf(q->error, q->error_bytes, "out of memory quantizing %s", where);
        goto done;
    }
    marlin_status s = H ? marlin_gptq_quantize(l->weight, l->n, l->k, H, group, &q->options->gptq, codes, scales)
                        : marlin_quantize_rtn(l->weight, l->n, l->k, group, codes, scales);
    if (s != MARLIN_STATUS_SUCCESS) {
        snprintf(q->error, q->error_bytes, "%s of %s (%d x %d, group %d) failed: %s", H ? "GPTQ" : "RTN", where,
                 l->n, l->k, group, marlin_status_string(s));
        goto done;
    }
    rc = llama_linear_set_int4(l, codes, scales, group, q->error, q->error_bytes);
done:
    free(codes);
    free(scales);
    return rc;
}

/* The block-level hook: Hessian of this input, then GPTQ. */
static void gptq_hook(void* p, int layer, enum llama_linear_id which, const float* input, int n_rows) {
    quantize_context* q = p;
    if (q->failed) return;
    llama_linear* l = linear_of(&q->model->layers[layer], which);
    int k = l->k;
    float* transposed = malloc((size_t)k * n_rows * sizeof(float)); /* k x n_rows */
    float* H = malloc((size_t)k * k * sizeof(float));                /* k x k */
    char where[64];
    snprintf(where, sizeof(where), "layer %d %s", layer, linear_name(which));
    if (!transposed || !H) {
        snprintf(q->error, q->error_bytes, "out of memory for the Hessian of %s", where);
        q->failed = 1;
    } else {
        for (int r = 0; r < n_rows; r++)
            for (int i = 0; i < k; i++) transposed[(size_t)i * n_rows + r] = input[(size_t)r * k + i];
        llama_cpu_matmul(q->pool, transposed, transposed, H, k, k, n_rows);
        float scale = 2.0f / (float)n_rows;
        for (size_t i = 0; i < (size_t)k * k; i++) H[i] *= scale;
        if (quantize_linear(q, l, H, where) != 0) q->failed = 1;
    }
    free(transposed);
    free(H);
}

int llama_quantize_model(llama_model* model, const llama_quantize_options* o, llama_thread_pool* pool, char* error,
                         size_t error_bytes) {
    const llama_config* c = &model->config;
    quantize_context q = {model, o, pool, error, error_bytes, 0};
    double start = seconds_now();
    if (o->method == LLAMA_QUANTIZE_RTN) {
        for (int l = 0; l < c->n_layers; l++) {
            for (int which = 0; which < 4; which++) {
                char where[64];
                snprintf(where, sizeof(where), "layer %d %s", l, linear_name((enum llama_linear_id)which));
                if (quantize_linear(&q, linear_of(&model->layers[l], (enum llama_linear_id)which), NULL, where)) return -1;
            }
        }
        if (o->verbose) fprintf(stderr, "quantize (rtn): %d layers in %.1f s\n", c->n_layers, seconds_now() - start);
        return 0;
    }
    if (o->n_seqs < 1 || o->seq_len < 2 || o->n_calib_tokens < o->seq_len) {
        snprintf(error, error_bytes, "GPTQ needs at least one calibration window of %d tokens (have %d tokens)",
                 o->seq_len, o->n_calib_tokens);
        return -1;
    }
    int rows = o->n_seqs * o->seq_len;
    llama_cpu_state st;
    if (llama_cpu_state_init(&st, model, pool, rows, o->n_seqs, o->seq_len) != 0) {
        snprintf(error, error_bytes, "out of memory for %d calibration rows", rows);
        return -1;
    }
    int* seq_ids = malloc((size_t)rows * sizeof(int));
    int* positions = malloc((size_t)rows * sizeof(int));
    float* x = malloc((size_t)rows * c->dim * sizeof(float));
    int rc = -1;
    if (!seq_ids || !positions || !x) {
        snprintf(error, error_bytes, "out of memory for %d calibration rows", rows);
        goto done;
    }
    for (int s = 0; s < o->n_seqs; s++) {
        int64_t span = o->n_calib_tokens - o->seq_len;
        int64_t begin = o->n_seqs > 1 ? span * s / (o->n_seqs - 1) : 0;
        for (int p = 0; p < o->seq_len; p++) {
            int r = s * o->seq_len + p;
            int token = o->calib_tokens[begin + p];
            if (token < 0 || token >= c->vocab_size) {
                snprintf(error, error_bytes, "calibration token %d out of range", token);
                goto done;
            }
            seq_ids[r] = s;
            positions[r] = p;
            memcpy(x + (size_t)r * c->dim, model->embedding + (size_t)token * c->dim, (size_t)c->dim * sizeof(float));
        }
    }
    for (int l = 0; l < c->n_layers; l++) {
        llama_cpu_layer(&st, l, x, seq_ids, positions, rows, gptq_hook, &q);
        if (q.failed) goto done;
        /* one line rewritten in place on a terminal, one line per layer in a log */
        if (o->verbose)
            fprintf(stderr, "%squantize (gptq, %d x %d calibration tokens): layer %d/%d, %.1f s%s",
                    isatty(2) ? "\r" : "", o->n_seqs, o->seq_len, l + 1, c->n_layers, seconds_now() - start,
                    isatty(2) ? "" : "\n");
    }
    if (o->verbose && isatty(2)) fprintf(stderr, "\n");
    rc = 0;
done:
    llama_cpu_state_free(&st);
    free(seq_ids);
    free(positions);
    free(x);
    return rc;
}
