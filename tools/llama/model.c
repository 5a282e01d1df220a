/*
 * model.c: allocation of llama_model, config checks and presets, int4 layer
 * set-up through the public Marlin API, and the GGUF loader.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "marlin.h"

int llama_config_validate(const llama_config* c, char* error, size_t error_bytes) {
    const char* why = NULL;
    if (c->n_layers < 1 || c->n_layers > 1024) why = "layer count out of range";
    else if (c->dim < 1 || c->ffn_dim < 1 || c->vocab_size < 1) why = "non-positive dimension";
    else if (c->n_heads < 1 || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0)
        why = "head count not a multiple of the KV head count";
    else if (c->head_dim < 2 || c->head_dim % 2 != 0 || c->head_dim * c->n_heads != c->dim)
        why = "head dimension must be even and dim = heads x head dimension";
    else if (c->rope_dim < 2 || c->rope_dim > c->head_dim || c->rope_dim % 2 != 0) why = "invalid RoPE dimension";
    else if (!(c->rope_base > 1.0f) || !isfinite(c->rope_base)) why = "invalid RoPE base";
    else if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f)) why = "invalid RMSNorm epsilon";
    else if ((int64_t)c->vocab_size * c->dim > ((int64_t)1 << 34)) why = "vocabulary x dim too large";
    if (why) {
        snprintf(error, error_bytes, "invalid model config: %s (layers %d, dim %d, ffn %d, heads %d, kv heads %d, "
                 "head dim %d, rope dim %d, vocab %d)", why, c->n_layers, c->dim, c->ffn_dim, c->n_heads,
                 c->n_kv_heads, c->head_dim, c->rope_dim, c->vocab_size);
        return -1;
    }
    return 0;
}

static int linear_allocate(llama_linear* l, int n, int k) {
    l->n = n;
    l->k = k;
    l->group_size = 0;
    l->weight = malloc((size_t)n * (size_t)k * sizeof(float));
    return l->weight ? 0 : -1;
}

static void linear_free(llama_linear* l) {
    free(l->weight);
    free(l->packed_b);
    free(l->packed_scales);
    memset(l, 0, sizeof(*l));
}

int llama_model_allocate(llama_model* model, const llama_config* c) {
    memset(model, 0, sizeof(*model));
    model->config = *c;
    int q_rows = c->n_heads * c->head_dim, kv_rows = c->n_kv_heads * c->head_dim;
    size_t embedding_elems = (size_t)c->vocab_size * (size_t)c->dim;
    model->embedding = malloc(embedding_elems * sizeof(float));
    model->output = c->tied_embeddings ? model->embedding : malloc(embedding_elems * sizeof(float));
    model->output_norm = malloc((size_t)c->dim * sizeof(float));
    model->layers = calloc((size_t)c->n_layers, sizeof(llama_layer));
    if (!model->embedding || !model->output || !model->output_norm || !model->layers) return -1;
    for (int i = 0; i < c->n_layers; i++) {
        llama_layer* L = &model->layers[i];
        L->attn_norm = malloc((size_t)c->dim * sizeof(float));
        L->ffn_norm = malloc((size_t)c->dim * sizeof(float));
        if (!L->attn_norm || !L->ffn_norm) return -1;
        if (linear_allocate(&L->qkv, q_rows + 2 * kv_rows, c->dim) || linear_allocate(&L->out, c->dim, q_rows) ||
            linear_allocate(&L->gate_up, 2 * c->ffn_dim, c->dim) || linear_allocate(&L->down, c->dim, c->ffn_dim))
            return -1;
    }
    return 0;
}

void llama_model_free(llama_model* model) {
    if (!model) return;
    if (model->output != model->embedding) free(model->output);
    free(model->embedding);
    free(model->output_norm);
    if (model->layers) {
        for (int i = 0; i < model->config.n_layers; i++) {
            llama_layer* L = &model->layers[i];
            free(L->attn_norm);
            free(L->ffn_norm);
            linear_free(&L->qkv);
            linear_free(&L->out);
            linear_free(&L->gate_up);
            linear_free(&L->down);
        }
    }
    free(model->layers);
    if (model->has_tokenizer) llama_tokenizer_free(&model->tokenizer);
    memset(model, 0, sizeof(*model));
}

/* Refreshes the fp32 copy from the packed data: unpack, then dequantize
 * exactly like the kernel: fp16((q - 8) * scale). */
static int linear_dequantize_packed(llama_linear* l, char* error, size_t error_bytes) {
    int n = l->n, k = l->k, g = l->group_size;
    uint8_t* codes = malloc((size_t)k * (size_t)n);
    uint16_t* scales = malloc(marlin_scale_bytes(k, n, g));
    if (!codes || !scales) {
        free(codes);
        free(scales);
        snprintf(error, error_bytes, "out of memory");
        return -1;
    }
    marlin_status s = marlin_unpack(l->packed_b, l->packed_scales, k, n, g, codes, scales);
    if (s != MARLIN_STATUS_SUCCESS) {
        snprintf(error, error_bytes, "marlin_unpack (%d x %d, group %d): %s", k, n, g, marlin_status_string(s));
        free(codes);
        free(scales);
        return -1;
    }
    for (int row = 0; row < k; row++) {
        const uint16_t* srow = scales + (size_t)(row / g) * n;
        for (int col = 0; col < n; col++) {
            float w = (float)((int)codes[(size_t)row * n + col] - MARLIN_ZERO_CODE) * marlin_fp16_to_float(srow[col]);
            l->weight[(size_t)col * k + row] = marlin_fp16_to_float(marlin_fp16_from_float(w));
        }
    }
    free(codes);
    free(scales);
    return 0;
}

static int linear_make_int4_storage(llama_linear* l, int group_size, char* error, size_t error_bytes) {
    marlin_status s = marlin_check_weight_shape(l->k, l->n, group_size);
    if (s != MARLIN_STATUS_SUCCESS) {
        snprintf(error, error_bytes, "cannot use int4 for a %d x %d layer with group %d: %s", l->n, l->k,
                 group_size, marlin_status_string(s));
        return -1;
    }
    free(l->packed_b);
    free(l->packed_scales);
    l->packed_b = malloc(marlin_packed_weight_bytes(l->k, l->n));
    l->packed_scales = malloc(marlin_scale_bytes(l->k, l->n, group_size));
    if (!l->packed_b || !l->packed_scales) {
        snprintf(error, error_bytes, "out of memory");
        return -1;
    }
    l->group_size = group_size;
    return 0;
}

int llama_linear_set_int4(llama_linear* l, const uint8_t* codes, const uint16_t* scales, int group_size,
                          char* error, size_t error_bytes) {
    if (linear_make_int4_storage(l, group_size, error, error_bytes)) return -1;
    marlin_status s = marlin_pack(codes, scales, l->k, l->n, group_size, l->packed_b, l->packed_scales);
    if (s != MARLIN_STATUS_SUCCESS) {
        snprintf(error, error_bytes, "marlin_pack: %s", marlin_status_string(s));
        return -1;
    }
    return linear_dequantize_packed(l, error, error_bytes);
}

int llama_linear_set_packed(llama_linear* l, const uint32_t* packed_b, const uint16_t* packed_scales,
                            int group_size, char* error, size_t error_bytes) {
    if (linear_make_int4_storage(l, group_size, error, error_bytes)) return -1;
    memcpy(l->packed_b, packed_b, marlin_packed_weight_bytes(l->k, l->n));
    memcpy(l->packed_scales, packed_scales, marlin_scale_bytes(l->k, l->n, group_size));
    return linear_dequantize_packed(l, error, error_bytes);
}

int64_t llama_linear_parameters(const llama_config* c) {
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer = (q + 2 * kv) * c->dim + c->dim * q + 3 * (int64_t)c->ffn_dim * c->dim;
    return per_layer * c->n_layers;
}

int llama_config_preset(const char* name, llama_config* c) {
    memset(c, 0, sizeof(*c));
    c->norm_eps = 1e-5f;
    c->rope_base = 10000.0f;
    if (strcmp(name, "smollm2-135m") == 0) {
        c->n_layers = 30; c->dim = 576; c->ffn_dim = 1536; c->n_heads = 9; c->n_kv_heads = 3;
        c->vocab_size = 49152; c->max_context = 8192; c->rope_base = 100000.0f; c->tied_embeddings = 1;
    } else if (strcmp(name, "llama2-7b") == 0) {
        c->n_layers = 32; c->dim = 4096; c->ffn_dim = 11008; c->n_heads = 32; c->n_kv_heads = 32;
        c->vocab_size = 32000; c->max_context = 4096;
    } else if (strcmp(name, "llama3-8b") == 0) {
        c->n_layers = 32; c->dim = 4096; c->ffn_dim = 14336; c->n_heads = 32; c->n_kv_heads = 8;
        c->vocab_size = 128256; c->max_context = 8192; c->rope_base = 500000.0f;
    } else if (strcmp(name, "llama2-13b") == 0) {
        c->n_layers = 40; c->dim = 5120; c->ffn_dim = 13824; c->n_heads = 40; c->n_kv_heads = 40;
        c->vocab_size = 32000; c->max_context = 4096;
    } else {
        return -1;
    }
    c->head_dim = c->dim / c->n_heads;
    c->rope_dim = c->head_dim;
    return 0;
}

/* ------------------------------------------------------------- GGUF -- */

static int gguf_required_int(const gguf_file* f, const char* key, int* out, char* error, size_t error_bytes) {
    int64_t v;
    if (gguf_get_int(f, key, &v) != 0) {
        snprintf(error, error_bytes, "GGUF metadata '%s' is missing or not an integer", key);
        return -1;
    }
    if (v < 0 || v > (1 << 30)) {
        snprintf(error, error_bytes, "GGUF metadata '%s' = %lld is out of range", key, (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Dequantizes tensor `name` (expected rows x cols, cols contiguous) into `out`. */
static int gguf_load_matrix(const gguf_file* f, const char* name, int rows, int cols, float* out, char* error,
                            size_t error_bytes) {
    const gguf_tensor* t = gguf_find_tensor(f, name);
    if (!t) {
        snprintf(error, error_bytes, "GGUF tensor '%s' is missing", name);
        return -1;
    }
    int dims_ok = t->dims[0] == (uint64_t)cols && (t->n_dims == 1 ? rows == 1 : t->dims[1] == (uint64_t)rows) &&
                  t->dims[2] == 1 && t->dims[3] == 1;
    if (!dims_ok) {
        snprintf(error, error_bytes, "GGUF tensor '%s' has shape [%llu, %llu], expected [%d, %d] (in, out)", name,
                 (unsigned long long)t->dims[0], (unsigned long long)t->dims[1], cols, rows);
        return -1;
    }
    return gguf_tensor_to_f32(t, out, error, error_bytes);
}

static int gguf_load_tokenizer(const gguf_file* f, llama_tokenizer* tok, char* error, size_t error_bytes) {
    const gguf_value* tokens = gguf_find(f, "tokenizer.ggml.tokens");
    const gguf_value* types = gguf_find(f, "tokenizer.ggml.token_type");
    const gguf_value* merges = gguf_find(f, "tokenizer.ggml.merges");
    if (!tokens || tokens->type != GGUF_TYPE_ARRAY || tokens->array_type != GGUF_TYPE_STRING ||
        tokens->array_count == 0 || tokens->array_count > (1u << 24)) {
        snprintf(error, error_bytes, "GGUF: tokenizer.ggml.tokens is missing or not a string array");
        return -1;
    }
    int n_vocab = (int)tokens->array_count;
    int n_merges = 0;
    if (merges) {
        if (merges->type != GGUF_TYPE_ARRAY || merges->array_type != GGUF_TYPE_STRING || merges->array_count > (1u << 24)) {
            snprintf(error, error_bytes, "GGUF: tokenizer.ggml.merges is not a string array");
            return -1;
        }
        n_merges = (int)merges->array_count;
    }
    const char** token_ptrs = malloc((size_t)n_vocab * sizeof(char*));
    uint64_t* token_lens = malloc((size_t)n_vocab * sizeof(uint64_t));
    int* token_types = malloc((size_t)n_vocab * sizeof(int));
    const char** merge_ptrs = malloc(((size_t)n_merges + 1) * sizeof(char*));
    uint64_t* merge_lens = malloc(((size_t)n_merges + 1) * sizeof(uint64_t));
    int rc = -1;
    if (!token_ptrs || !token_lens || !token_types || !merge_ptrs || !merge_lens) {
        snprintf(error, error_bytes, "out of memory");
        goto done;
    }
    int types_ok = types && types->type == GGUF_TYPE_ARRAY && types->array_count == (uint64_t)n_vocab &&
                   types->array_data != NULL;
    for (int i = 0; i < n_vocab; i++) {
        token_ptrs[i] = tokens->array_strings[i].ptr;
        token_lens[i] = tokens->array_strings[i].len;
        token_types[i] = types_ok ? (int)gguf_array_int(types, (uint64_t)i) : TOKEN_TYPE_NORMAL;
    }
    for (int i = 0; i < n_merges; i++) {
        merge_ptrs[i] = merges->array_strings[i].ptr;
        merge_lens[i] = merges->array_strings[i].len;
    }
    int64_t bos = -1, eos = -1;
    gguf_get_int(f, "tokenizer.ggml.bos_token_id", &bos);
    gguf_get_int(f, "tokenizer.ggml.eos_token_id", &eos);
    rc = llama_tokenizer_init(tok, n_vocab, token_ptrs, token_lens, token_types, n_merges, merge_ptrs, merge_lens,
                              (int)bos, (int)eos, error, error_bytes);
done:
    free(token_ptrs);
    free(token_lens);
    free(token_types);
    free(merge_ptrs);
    free(merge_lens);
    return rc;
}

static int gguf_read_config(const gguf_file* f, llama_config* c, char* error, size_t error_bytes) {
    memset(c, 0, sizeof(*c));
    const gguf_value* arch = gguf_find(f, "general.architecture");
    if (!arch || arch->type != GGUF_TYPE_STRING) {
        snprintf(error, error_bytes, "GGUF: general.architecture is missing");
        return -1;
    }
    if (!gguf_string_equals(arch->string, "llama")) {
        snprintf(error, error_bytes, "GGUF: architecture '%.*s' is not supported (only 'llama')",
                 (int)(arch->string.len > 64 ? 64 : arch->string.len), arch->string.ptr);
        return -1;
    }
    if (gguf_required_int(f, "llama.block_count", &c->n_layers, error, error_bytes) ||
        gguf_required_int(f, "llama.embedding_length", &c->dim, error, error_bytes) ||
        gguf_required_int(f, "llama.feed_forward_length", &c->ffn_dim, error, error_bytes) ||
        gguf_required_int(f, "llama.attention.head_count", &c->n_heads, error, error_bytes))
        return -1;
    c->n_kv_heads = c->n_heads;
    int64_t v;
    if (gguf_get_int(f, "llama.attention.head_count_kv", &v) == 0) c->n_kv_heads = (int)v;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->rope_dim = c->head_dim;
    if (gguf_get_int(f, "llama.rope.dimension_count", &v) == 0) c->rope_dim = (int)v;
    c->max_context = 2048;
    if (gguf_get_int(f, "llama.context_length", &v) == 0 && v > 0 && v < (1 << 30)) c->max_context = (int)v;
    double d;
    c->rope_base = 10000.0f;
    if (gguf_get_float(f, "llama.rope.freq_base", &d) == 0) c->rope_base = (float)d;
    c->norm_eps = 1e-5f;
    if (gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &d) == 0) c->norm_eps = (float)d;
    const gguf_tensor* embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd || embd->n_dims != 2) {
        snprintf(error, error_bytes, "GGUF tensor 'token_embd.weight' is missing or not 2-D");
        return -1;
    }
    if (embd->dims[1] > (1u << 24)) {
        snprintf(error, error_bytes, "GGUF: vocabulary of %llu tokens is too large", (unsigned long long)embd->dims[1]);
        return -1;
    }
    c->vocab_size = (int)embd->dims[1];
    c->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    return llama_config_validate(c, error, error_bytes);
}

int llama_model_load_gguf(const char* path, llama_model* model, char* error, size_t error_bytes) {
    memset(model, 0, sizeof(*model));
    gguf_file f;
    if (gguf_open(path, &f, error, error_bytes) != 0) return -1;
    llama_config c;
    if (gguf_read_config(&f, &c, error, error_bytes) != 0) goto fail;
    if (llama_model_allocate(model, &c) != 0) {
        snprintf(error, error_bytes, "out of memory allocating the model");
        goto fail;
    }
    int q_rows = c.n_heads * c.head_dim, kv_rows = c.n_kv_heads * c.head_dim;
    if (gguf_load_matrix(&f, "token_embd.weight", c.vocab_size, c.dim, model->embedding, error, error_bytes) ||
        gguf_load_matrix(&f, "output_norm.weight", 1, c.dim, model->output_norm, error, error_bytes))
        goto fail;
    if (!c.tied_embeddings &&
        gguf_load_matrix(&f, "output.weight", c.vocab_size, c.dim, model->output, error, error_bytes))
        goto fail;
    for (int i = 0; i < c.n_layers; i++) {
        llama_layer* L = &model->layers[i];
        char name[96];
#define LOAD(suffix, rows, cols, dst)                                                         \
    do {                                                                                      \
        snprintf(name, sizeof(name), "blk.%d.%s.weight", i, suffix);                          \
        if (gguf_load_matrix(&f, name, rows, cols, dst, error, error_bytes)) goto fail;       \
    } while (0)
        LOAD("attn_norm", 1, c.dim, L->attn_norm);
        LOAD("ffn_norm", 1, c.dim, L->ffn_norm);
        LOAD("attn_q", q_rows, c.dim, L->qkv.weight);
        LOAD("attn_k", kv_rows, c.dim, L->qkv.weight + (size_t)q_rows * c.dim);
        LOAD("attn_v", kv_rows, c.dim, L->qkv.weight + (size_t)(q_rows + kv_rows) * c.dim);
        LOAD("attn_output", c.dim, q_rows, L->out.weight);
        LOAD("ffn_gate", c.ffn_dim, c.dim, L->gate_up.weight);
        LOAD("ffn_up", c.ffn_dim, c.dim, L->gate_up.weight + (size_t)c.ffn_dim * c.dim);
        LOAD("ffn_down", c.dim, c.ffn_dim, L->down.weight);
#undef LOAD
    }
    const gguf_value* tok_model = gguf_find(&f, "tokenizer.ggml.model");
    if (tok_model && tok_model->type == GGUF_TYPE_STRING && gguf_string_equals(tok_model->string, "gpt2")) {
        if (gguf_load_tokenizer(&f, &model->tokenizer, error, error_bytes) != 0) goto fail;
        model->has_tokenizer = 1;
    }
    gguf_free(&f);
    return 0;
fail:
    gguf_free(&f);
    llama_model_free(model);
    return -1;
}

int llama_model_load(const char* path, llama_model* model, char* error, size_t error_bytes) {
    FILE* file = fopen(path, "rb");
    unsigned char magic[4] = {0};
    size_t got = 0;
    if (file) {
        got = fread(magic, 1, 4, file);
        fclose(file);
    }
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return llama_model_load_gguf(path, model, error, error_bytes);
    if (got == 4 && memcmp(magic, "MLQ4", 4) == 0) return llama_checkpoint_load(path, model, error, error_bytes);
    return llama_model_load_safetensors(path, model, error, error_bytes);
}
