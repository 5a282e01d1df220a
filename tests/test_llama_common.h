/*
 * test_llama_common.h: a tiny random Llama shared by the marlin-llama tests.
 * Every dimension is a multiple of 64 where Marlin needs it (qkv 256 x 128,
 * out 128 x 128, gate_up 512 x 128, down 128 x 256), so the GPU test can
 * quantize it too.
 */
#ifndef TEST_LLAMA_COMMON_H
#define TEST_LLAMA_COMMON_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "test_util.h"

/* 2 layers, n_heads heads of head_dim sharing n_kv_heads KV heads (dim =
 * n_heads * head_dim), ffn 256, vocab 192, tied head; weights ~ N(0, 1/k),
 * norm weights near one. Exits on allocation failure. */
static inline void test_llama_random_model_shaped(llama_model* m, int n_heads, int n_kv_heads, int head_dim) {
    llama_config c = {0};
    c.n_layers = 2; c.dim = n_heads * head_dim; c.ffn_dim = 256; c.n_heads = n_heads; c.n_kv_heads = n_kv_heads;
    c.head_dim = head_dim; c.rope_dim = head_dim; c.vocab_size = 192; c.max_context = 64; c.rope_base = 10000.0f;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = 1;
    if (llama_model_allocate(m, &c) != 0) exit(2);
    for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++) m->embedding[i] = test_rand_normal();
    for (int i = 0; i < c.dim; i++) m->output_norm[i] = 1.0f + 0.2f * test_rand_uniform();
    for (int l = 0; l < c.n_layers; l++) {
        llama_layer* L = &m->layers[l];
        for (int i = 0; i < c.dim; i++) {
            L->attn_norm[i] = 1.0f + 0.2f * test_rand_uniform();
            L->ffn_norm[i] = 1.0f + 0.2f * test_rand_uniform();
        }
        llama_linear* ls[4] = {&L->qkv, &L->out, &L->gate_up, &L->down};
        for (int j = 0; j < 4; j++)
            for (size_t i = 0; i < (size_t)ls[j]->n * ls[j]->k; i++)
                ls[j]->weight[i] = test_rand_normal() / sqrtf((float)ls[j]->k);
    }
}

/* The default tiny model: dim 128, 4 heads of 32 sharing 2 KV heads. */
static inline void test_llama_random_model(llama_model* m) { test_llama_random_model_shaped(m, 4, 2, 32); }

/* y[n] = W[n x k] . x[k] in double */
static inline void ref_linear(const llama_linear* l, const double* x, double* y) {
    for (int j = 0; j < l->n; j++) {
        double s = 0;
        for (int i = 0; i < l->k; i++) s += (double)l->weight[(size_t)j * l->k + i] * x[i];
        y[j] = s;
    }
}
static inline void ref_rmsnorm(const double* x, const float* w, double* out, int dim, double eps) {
    double s = 0;
    for (int i = 0; i < dim; i++) s += x[i] * x[i];
    double inv = 1.0 / sqrt(s / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = x[i] * inv * w[i];
}
/* RoPE on each head: pairs (2i, 2i+1) (GGUF order) or, with rotate_half,
 * pairs (i, i + rope_dim/2) (Hugging Face order). */
static inline void ref_rope(double* v, int heads, int hd, int rope_dim, double base, int pos, int rotate_half) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < rope_dim / 2; i++) {
            double a = pos * pow(base, -2.0 * i / rope_dim), c = cos(a), s = sin(a);
            double* p0 = v + h * hd + (rotate_half ? i : 2 * i);
            double* p1 = rotate_half ? p0 + rope_dim / 2 : p0 + 1;
            double x0 = *p0, x1 = *p1;
            *p0 = x0 * c - x1 * s;
            *p1 = x0 * s + x1 * c;
        }
}

/* Logits (T x vocab) of one sequence, every position, in double, written
 * from the definitions; rotate_half selects the RoPE pairing of q/k rows. */
static inline void test_llama_reference_forward(const llama_model* m, const int* tokens, int T, int rotate_half,
                                         double* logits) {
    const llama_config* c = &m->config;
    int d = c->dim, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, f = c->ffn_dim;
    double* x = calloc((size_t)T * d, sizeof(double));
    double* keys = calloc((size_t)T * kvd, sizeof(double));
    double* values = calloc((size_t)T * kvd, sizeof(double));
    double *xn = malloc(d * sizeof(double)), *qkv = malloc((qd + 2 * kvd) * sizeof(double));
    double *att = malloc(qd * sizeof(double)), *proj = malloc(d * sizeof(double));
    double *gu = malloc(2 * f * sizeof(double)), *h = malloc(f * sizeof(double)), *sc = malloc(T * sizeof(double));
    double* q_all = malloc((size_t)T * qd * sizeof(double));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < d; i++) x[(size_t)t * d + i] = m->embedding[(size_t)tokens[t] * d + i];
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer* L = &m->layers[l];
        for (int t = 0; t < T; t++) {
            ref_rmsnorm(x + (size_t)t * d, L->attn_norm, xn, d, c->norm_eps);
            ref_linear(&L->qkv, xn, qkv);
            ref_rope(qkv, c->n_heads, hd, c->rope_dim, c->rope_base, t, rotate_half);
            ref_rope(qkv + qd, c->n_kv_heads, hd, c->rope_dim, c->rope_base, t, rotate_half);
            memcpy(q_all + (size_t)t * qd, qkv, qd * sizeof(double));
            memcpy(keys + (size_t)t * kvd, qkv + qd, kvd * sizeof(double));
            memcpy(values + (size_t)t * kvd, qkv + qd + kvd, kvd * sizeof(double));
        }
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < c->n_heads; hh++) {
                int kvh = hh / (c->n_heads / c->n_kv_heads);
                const double* q = q_all + (size_t)t * qd + hh * hd;
                double mx = -1e300, tot = 0;
                for (int u = 0; u <= t; u++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += q[i] * keys[(size_t)u * kvd + kvh * hd + i];
                    sc[u] = s / sqrt((double)hd);
                    if (sc[u] > mx) mx = sc[u];
                }
                for (int u = 0; u <= t; u++) tot += (sc[u] = exp(sc[u] - mx));
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int u = 0; u <= t; u++) a += sc[u] / tot * values[(size_t)u * kvd + kvh * hd + i];
                    att[hh * hd + i] = a;
                }
            }
            ref_linear(&L->out, att, proj);
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] += proj[i];
            ref_rmsnorm(x + (size_t)t * d, L->ffn_norm, xn, d, c->norm_eps);
            ref_linear(&L->gate_up, xn, gu);
            for (int i = 0; i < f; i++) h[i] = gu[i] / (1.0 + exp(-gu[i])) * gu[f + i];
            ref_linear(&L->down, h, proj);
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] += proj[i];
        }
    }
    for (int t = 0; t < T; t++) {
        ref_rmsnorm(x + (size_t)t * d, m->output_norm, xn, d, c->norm_eps);
        for (int v = 0; v < c->vocab_size; v++) {
            double s = 0;
            for (int i = 0; i < d; i++) s += (double)m->output[(size_t)v * d + i] * xn[i];
            logits[(size_t)t * c->vocab_size + v] = s;
        }
    }
    free(x); free(keys); free(values); free(xn); free(qkv); free(att); free(proj); free(gu); free(h); free(sc);
    free(q_all);
}

/* The real model and evaluation text: MARLIN_LLAMA_MODEL / MARLIN_LLAMA_TEXT,
 * else the fetched SmolLM2 and carroll-alice from ../shared. */
static inline const char* test_llama_model_path(void) {
    const char* env = getenv("MARLIN_LLAMA_MODEL");
    return env ? env : "models/SmolLM2-135M-Instruct.gguf";
}
static inline const char* test_llama_text_path(void) {
    const char* env = getenv("MARLIN_LLAMA_TEXT");
    return env ? env : "../shared/data/gutenberg/carroll-alice.txt";
}

#endif /* TEST_LLAMA_COMMON_H */
