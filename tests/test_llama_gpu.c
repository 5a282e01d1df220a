/*
 * test_llama_gpu.c: marlin-llama's GPU backend against its CPU backend.
 * Prints "SKIPPED: no CUDA device" and passes where there is no GPU.
 *
 * For fp16 weights (cuBLAS) and int4 Marlin weights (marlin_matmul), the GPU
 * logits must match the CPU logits: relative error (max |gpu - cpu| / max
 * |cpu|) < 1e-2, and the same top-1 token on >= 99% of positions.
 *   1. tiny random models (2 layers; head sizes 20, 32, 64, 72, 128 and 256,
 *      grouped and not, so every lane layout of the attention kernel runs),
 *      with the attention kernel's block size chosen by the row count and
 *      forced to each of 8, 16 and 32 warps: a 24-token prompt, then
 *      batched decoding of 3 sequences, and one 600-position sequence;
 *      prompts of 3 sequences followed by decode steps that read the cache
 *      the earlier calls wrote (graphs on and off); int4 decode calls (up to
 *      8 rows) fold the RMSNorms into the multiplies, and run once more
 *      with norm kernels instead;
 *   2. the real SmolLM2-135M (models/SmolLM2-135M-Instruct.gguf or
 *      MARLIN_LLAMA_MODEL) on the first 256 tokens of carroll-alice, original
 *      weights and int4 g128 RTN. The 94 MB model cannot always travel to a
 *      GPU machine (the lent ones have no network and a 64 MiB upload limit),
 *      so where the file is absent this part prints why it did not run and
 *      counts nothing; test_llama_model (CPU, CI) is the one that requires it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "gpu.h"
#include "model.h"
#include "quantize.h"
#include "test_llama_common.h"
#include "test_util.h"

/* Warps per (head, row) of the GPU attention kernel in the comparisons
 * below (llama_gpu_set_attention_warps; 0: chosen by the row count). */
static int attention_warps_under_test = 0;
/* Whether int4 decode calls fold the RMSNorms into the multiplies
 * (llama_gpu_set_fused_norms, on by default). */
static int fused_norms_under_test = 1;

/* llama_gpu_create with the attention size and norm mode under test. */
static llama_gpu* create_gpu(const llama_model* m, int max_rows, int max_seqs, int max_ctx, char* error,
                             size_t error_bytes) {
    llama_gpu* gpu = llama_gpu_create(m, max_rows, max_seqs, max_ctx, error, error_bytes);
    if (gpu && llama_gpu_set_attention_warps(gpu, attention_warps_under_test) != 0) {
        snprintf(error, error_bytes, "attention warps %d refused", attention_warps_under_test);
        llama_gpu_free(gpu);
        return NULL;
    }
    if (gpu) llama_gpu_set_fused_norms(gpu, fused_norms_under_test);
    return gpu;
}

typedef struct agreement {
    double diff, mag;  /* max |gpu - cpu|, max |cpu| */
    int same_top, rows;
} agreement;

/* Accumulates the comparison of n_rows rows of cpu and gpu logits. */
static void compare_logits(const float* cpu, const float* gpu, int n_rows, int V, agreement* g) {
    for (int r = 0; r < n_rows; r++) {
        int ta = 0, tb = 0;
        for (int v = 0; v < V; v++) {
            float x = cpu[(size_t)r * V + v], y = gpu[(size_t)r * V + v];
            g->diff = fmax(g->diff, fabs((double)x - y));
            g->mag = fmax(g->mag, fabs((double)x));
            if (x > cpu[(size_t)r * V + ta]) ta = v;
            if (y > gpu[(size_t)r * V + tb]) tb = v;
        }
        g->same_top += ta == tb;
        g->rows++;
    }
}

static int agrees(const agreement* g, double* rel) {
    *rel = g->diff / (g->mag > 0 ? g->mag : 1);
    return *rel < 1e-2 && g->same_top >= 0.99 * g->rows;
}

/* Runs the same rows on both backends and compares every logit. */
static void compare_backends(const llama_model* m, const int* tokens, const int* seq_ids, const int* positions,
                             int n_rows, int max_seqs, int max_ctx, const char* what) {
    int V = m->config.vocab_size;
    llama_thread_pool* pool = llama_thread_pool_create(0);
    llama_cpu_state cpu;
    char error[1024] = "";
    llama_gpu* gpu = create_gpu(m, n_rows, max_seqs, max_ctx, error, sizeof(error));
    if (!gpu || llama_cpu_state_init(&cpu, m, pool, n_rows, max_seqs, max_ctx) != 0) {
        test_check(0, "%s: backends set up (%s)", what, error);
        llama_thread_pool_free(pool);
        return;
    }
    float* a = malloc(sizeof(float) * n_rows * V);
    float* b = malloc(sizeof(float) * n_rows * V);
    int rc_cpu = llama_cpu_forward(&cpu, tokens, seq_ids, positions, n_rows, a);
    /* twice: calls of up to 64 rows are captured in a CUDA graph the first
     * time and replayed the second; both must give the same logits */
    float* first = malloc(sizeof(float) * n_rows * V);
    int rc_gpu = llama_gpu_forward(gpu, tokens, seq_ids, positions, n_rows, first, error, sizeof(error));
    if (rc_gpu == 0) rc_gpu = llama_gpu_forward(gpu, tokens, seq_ids, positions, n_rows, b, error, sizeof(error));
    test_check(rc_gpu == 0 && memcmp(first, b, sizeof(float) * n_rows * V) == 0,
               "%s: two GPU runs give identical logits (CUDA graphs %s)", what,
               n_rows <= 64 && llama_gpu_graphs_enabled(gpu) ? "used" : "not used");
    free(first);
    agreement g = {0};
    compare_logits(a, b, n_rows, V, &g);
    double rel;
    int ok = agrees(&g, &rel);
    test_check(rc_cpu == 0 && rc_gpu == 0 && ok,
               "%s: GPU vs CPU logits relative error %.2e, same top-1 on %d of %d rows %s", what, rel, g.same_top,
               n_rows, rc_gpu ? error : "");
    free(a);
    free(b);
    llama_gpu_free(gpu);
    llama_cpu_state_free(&cpu);
    llama_thread_pool_free(pool);
}

/* One call with the prompts of 3 sequences of different lengths (the GPU
 * writes the cache before attention), then decode steps of one row per
 * sequence at different positions (the GPU's attention writes the cache
 * itself and reads what the earlier calls wrote): every call's logits
 * against the CPU's. */
static void compare_decode(const llama_model* m, int graphs, const char* what) {
    enum { S = 3, P = 20, STEPS = 12, ROWS = 3 * P };
    int V = m->config.vocab_size;
    llama_thread_pool* pool = llama_thread_pool_create(0);
    llama_cpu_state cpu;
    char error[1024] = "";
    llama_gpu* gpu = create_gpu(m, ROWS, S, P + STEPS, error, sizeof(error));
    if (!gpu || llama_cpu_state_init(&cpu, m, pool, ROWS, S, P + STEPS) != 0) {
        test_check(0, "%s: backends set up (%s)", what, error);
        llama_thread_pool_free(pool);
        return;
    }
    llama_gpu_set_graphs(gpu, graphs);
    float* a = malloc(sizeof(float) * ROWS * V);
    float* b = malloc(sizeof(float) * ROWS * V);
    int tokens[ROWS], seq[ROWS], pos[ROWS], length[S], n = 0;
    for (int s = 0; s < S; s++) {
        length[s] = P - 3 * s;
        for (int t = 0; t < length[s]; t++, n++) {
            tokens[n] = test_rand_int(V);
            seq[n] = s;
            pos[n] = t;
        }
    }
    agreement g = {0};
    int rc_cpu = llama_cpu_forward(&cpu, tokens, seq, pos, n, a);
    int rc_gpu = llama_gpu_forward(gpu, tokens, seq, pos, n, b, error, sizeof(error));
    compare_logits(a, b, n, V, &g);
    for (int step = 0; step < STEPS && rc_cpu == 0 && rc_gpu == 0; step++) {
        for (int s = 0; s < S; s++) {
            tokens[s] = test_rand_int(V);
            seq[s] = s;
            pos[s] = length[s] + step;
        }
        rc_cpu = llama_cpu_forward(&cpu, tokens, seq, pos, S, a);
        rc_gpu = llama_gpu_forward(gpu, tokens, seq, pos, S, b, error, sizeof(error));
        compare_logits(a, b, S, V, &g);
    }
    double rel;
    int ok = agrees(&g, &rel);
    test_check(rc_cpu == 0 && rc_gpu == 0 && ok,
               "%s: prompts then %d decode steps, GPU vs CPU logits relative error %.2e, same top-1 on %d of %d "
               "rows (CUDA graphs %s) %s",
               what, STEPS, rel, g.same_top, g.rows, llama_gpu_graphs_enabled(gpu) ? "used" : "not used",
               rc_gpu ? error : "");
    free(a);
    free(b);
    llama_gpu_free(gpu);
    llama_cpu_state_free(&cpu);
    llama_thread_pool_free(pool);
}

static void quantize_rtn(llama_model* m, int group) {
    llama_quantize_options q;
    memset(&q, 0, sizeof(q));
    q.method = LLAMA_QUANTIZE_RTN;
    q.group_size = group;
    char error[512] = "";
    test_check(llama_quantize_model(m, &q, NULL, error, sizeof(error)) == 0, "RTN g%d quantization (%s)", group, error);
}

/* A tiny random model with n_heads heads of head_dim (n_kv_heads KV heads):
 * prompts, decode steps and a long sequence on both backends, in fp16 and
 * int4, with the attention kernel's block size chosen by the row count and
 * then forced to each of its sizes (8, 16 and 32 warps per head and row). */
static void tiny_model_cases(int n_heads, int n_kv_heads, int head_dim) {
    llama_model m;
    test_llama_random_model_shaped(&m, n_heads, n_kv_heads, head_dim);
    enum { T = 24, LONG = 600 };
    int tokens[3 * T], seq[3 * T], pos[3 * T];
    for (int i = 0; i < 3 * T; i++) {
        tokens[i] = test_rand_int(m.config.vocab_size);
        seq[i] = i / T;
        pos[i] = i % T;
    }
    int long_tok[LONG], long_seq[LONG], long_pos[LONG];
    for (int i = 0; i < LONG; i++) {
        long_tok[i] = test_rand_int(m.config.vocab_size);
        long_seq[i] = 0;
        long_pos[i] = i;
    }
    static const int warp_counts[] = {0, 8, 16, 32};
    for (int format = 0; format < 2; format++) {
        if (format == 1) quantize_rtn(&m, 64);
        for (size_t w = 0; w < sizeof(warp_counts) / sizeof(warp_counts[0]); w++) {
            attention_warps_under_test = warp_counts[w];
            char warps[32], name[96], what[160];
            if (warp_counts[w])
                snprintf(warps, sizeof(warps), "%d warps", warp_counts[w]);
            else
                snprintf(warps, sizeof(warps), "warps by row count");
            snprintf(name, sizeof(name), "tiny model (%d x %d heads), %s, attention %s", n_heads, head_dim,
                     format ? "int4 g64" : "fp16", warps);
            snprintf(what, sizeof(what), "%s, 3 sequences x %d positions in one call", name, T);
            compare_backends(&m, tokens, seq, pos, 3 * T, 3, T, what);
            /* decode-sized calls (one row per sequence): the CUDA-graph path */
            int step_tok[3] = {tokens[0], tokens[T], tokens[2 * T]}, step_seq[3] = {0, 1, 2}, step_pos[3] = {0, 0, 0};
            for (int rows = 1; rows <= 3; rows += 2) {
                snprintf(what, sizeof(what), "%s, batch of %d sequence%s, one row each", name, rows,
                         rows > 1 ? "s" : "");
                compare_backends(&m, step_tok, step_seq, step_pos, rows, 3, T, what);
            }
            /* one sequence of LONG positions in one call: each warp takes
             * several rounds of positions, so its running softmax rescales */
            snprintf(what, sizeof(what), "%s, one sequence x %d positions", name, LONG);
            compare_backends(&m, long_tok, long_seq, long_pos, LONG, 1, LONG, what);
            for (int graphs = 1; graphs >= 0; graphs--) {
                snprintf(what, sizeof(what), "%s, graphs %s", name, graphs ? "on" : "off");
                compare_decode(&m, graphs, what);
            }
            if (format == 1) { /* int4 decode steps with norm kernels instead of the folded norms */
                fused_norms_under_test = 0;
                snprintf(what, sizeof(what), "%s, norm kernels (not folded), graphs on", name);
                compare_decode(&m, 1, what);
                fused_norms_under_test = 1;
            }
        }
    }
    attention_warps_under_test = 0;
    llama_model_free(&m);
}

/* A residual stream whose product with the norm weights leaves fp16's
 * range: embeddings 3e4 N(0, 1) clipped to +-6e4 (the GPU keeps the table
 * in fp16), norm weights near 2, the output head kept apart and unscaled.
 * The folded int4 step's fp16(x . w) overflows, so the GPU backend must
 * notice the non-finite logits, redo the step with norm kernels and stop
 * folding, and still match the CPU. */
static void overflow_fallback_case(void) {
    llama_model m;
    test_llama_random_model(&m);
    const llama_config c = m.config;
    llama_model untied;
    llama_config uc = c;
    uc.tied_embeddings = 0;
    if (llama_model_allocate(&untied, &uc) != 0) exit(2);
    memcpy(untied.output, m.embedding, sizeof(float) * c.vocab_size * c.dim);
    for (size_t i = 0; i < (size_t)c.vocab_size * c.dim; i++)
        untied.embedding[i] = fminf(fmaxf(3e4f * m.embedding[i], -6e4f), 6e4f);
    memcpy(untied.output_norm, m.output_norm, sizeof(float) * c.dim);
    for (int l = 0; l < c.n_layers; l++) {
        llama_layer *to = &untied.layers[l], *from = &m.layers[l];
        for (int i = 0; i < c.dim; i++) {
            to->attn_norm[i] = 2.0f * from->attn_norm[i];
            to->ffn_norm[i] = 2.0f * from->ffn_norm[i];
        }
        llama_linear* dst[4] = {&to->qkv, &to->out, &to->gate_up, &to->down};
        llama_linear* src[4] = {&from->qkv, &from->out, &from->gate_up, &from->down};
        for (int j = 0; j < 4; j++) memcpy(dst[j]->weight, src[j]->weight, sizeof(float) * src[j]->n * src[j]->k);
    }
    quantize_rtn(&untied, 64);
    char error[1024] = "";
    llama_thread_pool* pool = llama_thread_pool_create(0);
    llama_cpu_state cpu;
    llama_gpu* gpu = create_gpu(&untied, 1, 1, 8, error, sizeof(error));
    if (!gpu || llama_cpu_state_init(&cpu, &untied, pool, 1, 1, 8) != 0) {
        test_check(0, "overflow fallback: backends set up (%s)", error);
    } else {
        int V = c.vocab_size, token = test_rand_int(V), seq = 0, pos = 0;
        float* a = malloc(sizeof(float) * V);
        float* b = malloc(sizeof(float) * V);
        agreement g = {0};
        int folding_before = llama_gpu_fused_norms_enabled(gpu);
        int rc_cpu = llama_cpu_forward(&cpu, &token, &seq, &pos, 1, a);
        int rc_gpu = llama_gpu_forward(gpu, &token, &seq, &pos, 1, b, error, sizeof(error));
        compare_logits(a, b, 1, V, &g);
        test_check(rc_cpu == 0 && rc_gpu == 0 && folding_before && !llama_gpu_fused_norms_enabled(gpu) &&
                       g.diff <= 1e-2 * g.mag && g.same_top == 1,
                   "residual stream ~3e4, norm weights ~2 (x . w past fp16): the folded step was redone with norm kernels (folding %d "
                   "-> %d), GPU vs CPU logits relative error %.2e, same top-1 %d of 1 (%s)",
                   folding_before, llama_gpu_fused_norms_enabled(gpu), g.mag > 0 ? g.diff / g.mag : 0.0, g.same_top,
                   error);
        free(a), free(b);
        llama_cpu_state_free(&cpu);
    }
    llama_gpu_free(gpu);
    llama_thread_pool_free(pool);
    llama_model_free(&untied);
    llama_model_free(&m);
}

static void real_model_cases(void) {
    const char* model_path = test_llama_model_path();
    const char* text_path = test_llama_text_path();
    llama_model m;
    char error[1024] = "";
    FILE* probe = fopen(model_path, "rb");
    if (!probe) {
        printf("NOT RUN real model cases: '%s' not found (scripts/fetch_model.sh, or set MARLIN_LLAMA_MODEL)\n",
               model_path);
        return;
    }
    fclose(probe);
    if (llama_model_load(model_path, &m, error, sizeof(error)) != 0) {
        test_check(0, "real model: %s", error);
        return;
    }
    FILE* f = fopen(text_path, "rb");
    char text[4096];
    size_t length = f ? fread(text, 1, sizeof(text), f) : 0;
    if (f) fclose(f);
    enum { CTX = 256 };
    int tokens[2048], seq[CTX] = {0}, pos[CTX];
    int n = llama_tokenizer_encode(&m.tokenizer, text, length, 0, tokens, 2048);
    if (n < CTX) {
        test_check(0, "real model: '%s' gave %d tokens, %d needed", text_path, n, CTX);
        llama_model_free(&m);
        return;
    }
    for (int i = 0; i < CTX; i++) pos[i] = i;
    compare_backends(&m, tokens, seq, pos, CTX, 1, CTX, "SmolLM2-135M original weights (fp16 cuBLAS), 256 tokens");
    quantize_rtn(&m, 128);
    compare_backends(&m, tokens, seq, pos, CTX, 1, CTX, "SmolLM2-135M int4 g128 RTN (Marlin), 256 tokens");
    llama_model_free(&m);
}

int main(void) {
    if (llama_gpu_device_count() == 0) {
        printf("SKIPPED: no CUDA device\n");
        return 0;
    }
    test_seed("test_llama_gpu");
    /* every lane layout of the attention kernel (attention_layout in gpu.cu) */
    tiny_model_cases(4, 2, 32);    /* GQA; 16-byte loads, 4 lanes per position */
    tiny_model_cases(2, 1, 64);    /* SmolLM2's head size: 8 lanes per position */
    tiny_model_cases(2, 1, 128);   /* llama2-7b's head size: 16 lanes per position */
    tiny_model_cases(8, 8, 72);    /* 16 lanes per position, 7 of them idle */
    tiny_model_cases(1, 1, 256);   /* 32 lanes per position */
    tiny_model_cases(16, 16, 20);  /* head_dim % 8 != 0: 4-byte loads, 32 lanes per position */
    overflow_fallback_case();
    real_model_cases();
    /* sizes the attention kernel has no variant for are refused */
    llama_model m;
    test_llama_random_model(&m);
    char error[256] = "";
    llama_gpu* gpu = llama_gpu_create(&m, 1, 1, 8, error, sizeof(error));
    test_check(gpu && llama_gpu_set_attention_warps(gpu, 12) == -1 && llama_gpu_set_attention_warps(gpu, 64) == -1 &&
                   llama_gpu_set_attention_warps(gpu, 16) == 0,
               "llama_gpu_set_attention_warps refuses 12 and 64 warps, takes 16 (%s)", error);
    llama_gpu_free(gpu);
    llama_model_free(&m);
    return test_finish();
}
