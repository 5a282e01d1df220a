/*
 * test_llama_forward.c: marlin-llama's CPU forward pass, int4 layers and
 * checkpoint format, on a tiny random Llama (2 layers, dim 128, 4 heads
 * sharing 2 KV heads).
 *
 * Checks: (1) the threaded fp32 forward against a naive double-precision
 * forward written here from the definitions (RMSNorm, adjacent-pair RoPE,
 * grouped-query causal attention, SwiGLU, tied head); (2) batched decoding
 * (rows of several sequences at different positions in one call) equals
 * running each sequence alone; (3) an int4 layer's CPU weights multiply like
 * marlin_reference_matmul on the same packed data; (4) the checkpoint round
 * trip gives identical logits, and truncated / corrupted checkpoints are
 * refused with a message; (5) the layer-by-layer GPTQ pipeline quantizes
 * every layer and, on inputs with correlated features (where the Hessian
 * matters), ends closer to the fp32 model's logits than RTN does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "marlin.h"
#include "model.h"
#include "quantize.h"
#include "test_llama_common.h"
#include "test_util.h"

static double max_relative_error(const float* got, const double* want, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]));
    return worst / (scale > 0 ? scale : 1);
}

enum { T = 24 };

/* Logits of the model on `tokens` of one sequence (seq 0, positions 0..T-1). */
static void cpu_logits(llama_cpu_state* st, const int* tokens, int n, float* logits) {
    int seq[T] = {0}, pos[T];
    for (int i = 0; i < n; i++) pos[i] = i;
    llama_cpu_forward(st, tokens, seq, pos, n, logits);
}

/* Mean squared difference of the logits of `a` and `b` over `n` rows of one sequence. */
static double logits_mse(const llama_model* a, const llama_model* b, llama_thread_pool* pool, const int* tokens, int n) {
    llama_cpu_state sa, sb;
    int V = a->config.vocab_size;
    llama_cpu_state_init(&sa, a, pool, n, 1, n);
    llama_cpu_state_init(&sb, b, pool, n, 1, n);
    float* la = malloc(sizeof(float) * n * V);
    float* lb = malloc(sizeof(float) * n * V);
    int* seq = calloc((size_t)n, sizeof(int));
    int* pos = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) pos[i] = i;
    llama_cpu_forward(&sa, tokens, seq, pos, n, la);
    llama_cpu_forward(&sb, tokens, seq, pos, n, lb);
    double sum = 0;
    for (size_t i = 0; i < (size_t)n * V; i++) sum += ((double)la[i] - lb[i]) * ((double)la[i] - lb[i]);
    free(la); free(lb); free(seq); free(pos);
    llama_cpu_state_free(&sa);
    llama_cpu_state_free(&sb);
    return sum / ((double)n * V);
}

/* Copies the weights of `src` into a freshly allocated `dst` (dense layers). */
static void copy_model(const llama_model* src, llama_model* dst) {
    const llama_config* c = &src->config;
    if (llama_model_allocate(dst, c) != 0) exit(2);
    memcpy(dst->embedding, src->embedding, sizeof(float) * c->vocab_size * c->dim);
    memcpy(dst->output_norm, src->output_norm, sizeof(float) * c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer* a = &src->layers[l];
        llama_layer* b = &dst->layers[l];
        memcpy(b->attn_norm, a->attn_norm, sizeof(float) * c->dim);
        memcpy(b->ffn_norm, a->ffn_norm, sizeof(float) * c->dim);
        const llama_linear* la[4] = {&a->qkv, &a->out, &a->gate_up, &a->down};
        llama_linear* lb[4] = {&b->qkv, &b->out, &b->gate_up, &b->down};
        for (int j = 0; j < 4; j++) memcpy(lb[j]->weight, la[j]->weight, sizeof(float) * la[j]->n * la[j]->k);
    }
}

static void test_gptq_pipeline(llama_thread_pool* pool) {
    llama_model original, rtn, gptq;
    test_llama_random_model(&original);
    const llama_config* c = &original.config;
    /* correlated embedding features: a random mixing with decaying column scales */
    float* mix = malloc(sizeof(float) * c->dim * c->dim);
    for (int i = 0; i < c->dim * c->dim; i++) mix[i] = test_rand_normal() / (1.0f + (float)(i % c->dim) / 4.0f);
    float* row = malloc(sizeof(float) * c->dim);
    for (int v = 0; v < c->vocab_size; v++) {
        float* e = original.embedding + (size_t)v * c->dim;
        for (int j = 0; j < c->dim; j++) {
            double s = 0;
            for (int i = 0; i < c->dim; i++) s += e[i] * mix[(size_t)i * c->dim + j];
            row[j] = (float)(s / sqrt((double)c->dim));
        }
        memcpy(e, row, sizeof(float) * c->dim);
    }
    free(mix);
    free(row);
    copy_model(&original, &rtn);
    copy_model(&original, &gptq);
    enum { CALIB = 8 * 32 };
    int calib[CALIB];
    for (int i = 0; i < CALIB; i++) calib[i] = test_rand_int(c->vocab_size);
    llama_quantize_options q;
    memset(&q, 0, sizeof(q));
    q.group_size = 64;
    char error[512] = "";
    q.method = LLAMA_QUANTIZE_RTN;
    int rc_rtn = llama_quantize_model(&rtn, &q, pool, error, sizeof(error));
    q.method = LLAMA_QUANTIZE_GPTQ;
    q.calib_tokens = calib;
    q.n_calib_tokens = CALIB;
    q.n_seqs = 8;
    q.seq_len = 32;
    marlin_gptq_default_options(&q.gptq);
    int rc_gptq = llama_quantize_model(&gptq, &q, pool, error, sizeof(error));
    int all_int4 = 1;
    for (int l = 0; l < c->n_layers; l++)
        all_int4 &= gptq.layers[l].qkv.group_size == 64 && gptq.layers[l].out.group_size == 64 &&
                    gptq.layers[l].gate_up.group_size == 64 && gptq.layers[l].down.group_size == 64;
    test_check(rc_rtn == 0 && rc_gptq == 0 && all_int4, "GPTQ pipeline quantizes all %d linear layers (%s)",
               4 * c->n_layers, error);
    double e_rtn = logits_mse(&original, &rtn, pool, calib, 32);
    double e_gptq = logits_mse(&original, &gptq, pool, calib, 32);
    test_check(e_gptq < e_rtn, "logits MSE vs fp32 on a calibration window: GPTQ %.3e < RTN %.3e", e_gptq, e_rtn);
    q.n_calib_tokens = 16; /* shorter than one window */
    test_check(llama_quantize_model(&gptq, &q, pool, error, sizeof(error)) != 0, "too little calibration text refused: %s",
               error);
    llama_model_free(&original);
    llama_model_free(&rtn);
    llama_model_free(&gptq);
}

int main(void) {
    test_seed("test_llama_forward");
    llama_model m;
    test_llama_random_model(&m);
    const llama_config* c = &m.config;
    int V = c->vocab_size;
    llama_thread_pool* pool = llama_thread_pool_create(2);
    llama_cpu_state st;
    test_check(llama_cpu_state_init(&st, &m, pool, 3 * T, 3, T) == 0, "CPU state allocated");
    int tokens[3][T];
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < T; t++) tokens[s][t] = test_rand_int(V);
    float* logits = malloc(sizeof(float) * 3 * T * V);
    double* want = malloc(sizeof(double) * T * V);

    /* (1) against the double-precision reference */
    cpu_logits(&st, tokens[0], T, logits);
    test_llama_reference_forward(&m, tokens[0], T, 0, want);
    double err = max_relative_error(logits, want, (size_t)T * V);
    test_check(err < 1e-4, "fp32 forward vs double reference: max error %.2e of the largest logit", err);

    /* (2) batched decoding == each sequence alone */
    float* alone = malloc(sizeof(float) * 3 * T * V);
    for (int s = 0; s < 3; s++) cpu_logits(&st, tokens[s], T, alone + (size_t)s * T * V);
    /* prefill the first 8 positions of each, then decode rows of all three together */
    int rows_tok[3 * T], rows_seq[3 * T], rows_pos[3 * T];
    int n = 0;
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 8; t++) { rows_tok[n] = tokens[s][t]; rows_seq[n] = s; rows_pos[n] = t; n++; }
    llama_cpu_forward(&st, rows_tok, rows_seq, rows_pos, n, logits);
    double worst = 0;
    for (int step = 8; step < T; step++) {
        for (int s = 0; s < 3; s++) { rows_tok[s] = tokens[s][step]; rows_seq[s] = s; rows_pos[s] = step; }
        llama_cpu_forward(&st, rows_tok, rows_seq, rows_pos, 3, logits);
        for (int s = 0; s < 3; s++)
            for (int v = 0; v < V; v++)
                worst = fmax(worst, fabs(logits[(size_t)s * V + v] - alone[((size_t)s * T + step) * V + v]));
    }
    test_check(worst < 1e-4, "batched decode of 3 sequences == each alone (max diff %.2e)", worst);
    int bad_tok = V, zero = 0;
    test_check(llama_cpu_forward(&st, &bad_tok, &zero, &zero, 1, logits) != 0, "token out of range refused");
    int bad_pos = T;
    test_check(llama_cpu_forward(&st, &zero, &zero, &bad_pos, 1, logits) != 0, "position out of range refused");

    /* (3) int4: RTN through the quantizer, then CPU weights vs marlin_reference_matmul */
    llama_quantize_options q;
    memset(&q, 0, sizeof(q));
    q.method = LLAMA_QUANTIZE_RTN;
    q.group_size = 64;
    char error[512] = "";
    test_check(llama_quantize_model(&m, &q, pool, error, sizeof(error)) == 0, "RTN quantization of every layer (%s)", error);
    const llama_linear* l = &m.layers[1].gate_up;
    int rows = 3;
    uint16_t* a16 = malloc(sizeof(uint16_t) * rows * l->k);
    float* a32 = malloc(sizeof(float) * rows * l->k);
    float* ref = malloc(sizeof(float) * rows * l->n);
    float* ours = malloc(sizeof(float) * rows * l->n);
    for (int i = 0; i < rows * l->k; i++) {
        a16[i] = marlin_fp16_from_float(test_rand_normal());
        a32[i] = marlin_fp16_to_float(a16[i]);
    }
    marlin_status s = marlin_reference_matmul(a16, l->packed_b, l->packed_scales, rows, l->n, l->k, l->group_size, ref);
    llama_cpu_matmul(pool, a32, l->weight, ours, rows, l->n, l->k);
    double diff = 0, mag = 0;
    for (int i = 0; i < rows * l->n; i++) {
        diff = fmax(diff, fabs(ours[i] - ref[i]));
        mag = fmax(mag, fabs(ref[i]));
    }
    test_check(s == MARLIN_STATUS_SUCCESS && l->group_size == 64 && diff <= 1e-5 * mag,
               "int4 CPU weights == marlin_reference_matmul on the packed data (max diff %.2e of %.2e)", diff, mag);

    /* (4) checkpoint round trip */
    char path[] = "/tmp/test_llama_ckpt_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    test_check(llama_checkpoint_save(&m, path, error, sizeof(error)) == 0, "checkpoint saved (%s)", error);
    llama_model loaded;
    int rc = llama_model_load(path, &loaded, error, sizeof(error));
    test_check(rc == 0, "checkpoint loads by its magic number (%s)", error);
    if (rc == 0) {
        llama_cpu_state st2;
        llama_cpu_state_init(&st2, &loaded, pool, T, 1, T);
        cpu_logits(&st, tokens[1], T, logits);
        cpu_logits(&st2, tokens[1], T, alone);
        test_check(loaded.layers[0].down.group_size == 64 && memcmp(logits, alone, sizeof(float) * T * V) == 0,
                   "reloaded int4 model gives identical logits");
        llama_cpu_state_free(&st2);
        llama_model_free(&loaded);
    }
    FILE* f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char* bytes = malloc((size_t)size);
    size_t got = fread(bytes, 1, (size_t)size, f);
    fclose(f);
    int refused = 0;
    for (int i = 0; i < 10; i++) {
        long cut = (long)(test_rand_u64() % (uint64_t)size);
        f = fopen(path, "wb");
        fwrite(bytes, 1, (size_t)cut, f);
        fclose(f);
        char msg[512] = "";
        if (llama_model_load(path, &loaded, msg, sizeof(msg)) != 0 && msg[0]) refused++;
        else llama_model_free(&loaded);
    }
    test_check(got == (size_t)size && refused == 10, "%d of 10 truncated checkpoints refused", refused);
    bytes[4] = 99; /* version */
    f = fopen(path, "wb");
    fwrite(bytes, 1, (size_t)size, f);
    fclose(f);
    rc = llama_model_load(path, &loaded, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "version"), "unknown checkpoint version refused: %s", error);
    bytes[4] = 1;
    bytes[8] = 0xFF; /* n_layers = 255 + ...: the layer count is now wrong */
    bytes[11] = 0x7F;
    f = fopen(path, "wb");
    fwrite(bytes, 1, (size_t)size, f);
    fclose(f);
    rc = llama_model_load(path, &loaded, error, sizeof(error));
    test_check(rc != 0, "corrupt config refused: %s", error);
    unlink(path);
    free(bytes);
    free(a16); free(a32); free(ref); free(ours);
    free(logits); free(want); free(alone);
    test_gptq_pipeline(pool);
    llama_cpu_state_free(&st);
    llama_thread_pool_free(pool);
    llama_model_free(&m);
    return test_finish();
}
