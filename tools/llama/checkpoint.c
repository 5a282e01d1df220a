/*
 * checkpoint.c: marlin-llama's own 4-bit checkpoint format.
 *
 * Little-endian, sequential:
 *   "MLQ4"  u32 version (= 1)
 *   config: i32 n_layers dim ffn_dim n_heads n_kv_heads head_dim rope_dim
 *           vocab_size max_context tied_embeddings; f32 rope_base norm_eps
 *   tokenizer: u32 present; if 1: i32 n_vocab bos eos, then per token
 *           (u32 bytes, bytes, i32 type), i32 n_merges, per merge (u32 bytes,
 *           "left right")
 *   f32 embedding[vocab x dim]; f32 output[vocab x dim] unless tied;
 *   f32 output_norm[dim]
 *   per layer: f32 attn_norm[dim], f32 ffn_norm[dim], then the linear layers
 *           qkv, out, gate_up, down, each:
 *           u32 kind (0 dense, 1 int4) i32 n k group_size, then
 *           dense: f32 weight[n x k]; int4: u32 packed_b[k*n/8], u16 packed_scales
 *   "END4"
 * The reader checks every count against the config (itself validated) and
 * refuses a short read, so a truncated file gives an error, not a crash.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marlin.h"
#include "model.h"

enum { CHECKPOINT_VERSION = 1, LINEAR_DENSE = 0, LINEAR_INT4 = 1 };

typedef struct writer {
    FILE* f;
    int failed;
} writer;

static void w_bytes(writer* w, const void* p, size_t n) {
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n) w->failed = 1;
}
static void w_i32(writer* w, int32_t v) { w_bytes(w, &v, 4); } /* the host is little-endian (x86, ARM) */
static void w_f32(writer* w, float v) { w_bytes(w, &v, 4); }

static void w_linear(writer* w, const llama_linear* l) {
    w_i32(w, l->group_size ? LINEAR_INT4 : LINEAR_DENSE);
    w_i32(w, l->n);
    w_i32(w, l->k);
    w_i32(w, l->group_size);
    if (l->group_size) {
        w_bytes(w, l->packed_b, marlin_packed_weight_bytes(l->k, l->n));
        w_bytes(w, l->packed_scales, marlin_scale_bytes(l->k, l->n, l->group_size));
    } else {
        w_bytes(w, l->weight, (size_t)l->n * l->k * sizeof(float));
    }
}

int llama_checkpoint_save(const llama_model* model, const char* path, char* error, size_t error_bytes) {
    writer w = {fopen(path, "wb"), 0};
    if (!w.f) {
        snprintf(error, error_bytes, "cannot create '%s'", path);
        return -1;
    }
    const llama_config* c = &model->config;
    w_bytes(&w, "MLQ4", 4);
    w_i32(&w, CHECKPOINT_VERSION);
    int32_t ints[10] = {c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->rope_dim,
                        c->vocab_size, c->max_context, c->tied_embeddings};
    for (int i = 0; i < 10; i++) w_i32(&w, ints[i]);
    w_f32(&w, c->rope_base);
    w_f32(&w, c->norm_eps);
    w_i32(&w, model->has_tokenizer);
    if (model->has_tokenizer) {
        const llama_tokenizer* t = &model->tokenizer;
        w_i32(&w, t->n_vocab);
        w_i32(&w, t->bos_id);
        w_i32(&w, t->eos_id);
        for (int i = 0; i < t->n_vocab; i++) {
            w_i32(&w, t->token_lengths[i]);
            w_bytes(&w, t->tokens[i], (size_t)t->token_lengths[i]);
            w_i32(&w, t->token_types[i]);
        }
        w_i32(&w, t->n_merges);
        for (int r = 0; r < t->n_merges; r++) {
            int a = t->merge_left[r], b = t->merge_right[r];
            w_i32(&w, t->token_lengths[a] + 1 + t->token_lengths[b]);
            w_bytes(&w, t->tokens[a], (size_t)t->token_lengths[a]);
            w_bytes(&w, " ", 1);
            w_bytes(&w, t->tokens[b], (size_t)t->token_lengths[b]);
        }
    }
    size_t embedding_bytes = (size_t)c->vocab_size * c->dim * sizeof(float);
    w_bytes(&w, model->embedding, embedding_bytes);
    if (!c->tied_embeddings) w_bytes(&w, model->output, embedding_bytes);
    w_bytes(&w, model->output_norm, (size_t)c->dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer* L = &model->layers[l];
        w_bytes(&w, L->attn_norm, (size_t)c->dim * sizeof(float));
        w_bytes(&w, L->ffn_norm, (size_t)c->dim * sizeof(float));
        w_linear(&w, &L->qkv);
        w_linear(&w, &L->out);
        w_linear(&w, &L->gate_up);
        w_linear(&w, &L->down);
    }
    w_bytes(&w, "END4", 4);
    if (fclose(w.f) != 0) w.failed = 1;
    if (w.failed) {
        snprintf(error, error_bytes, "write error on '%s' (disk full?)", path);
        return -1;
    }
    return 0;
}

typedef struct reader {
    FILE* f;
    const char* path;
    char* error;
    size_t error_bytes;
    int failed;
} reader;

static void r_fail(reader* r, const char* fmt, ...) {
    if (r->failed) return;
    r->failed = 1;
    char msg[400];
    va_list args;
    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);
    snprintf(r->error, r->error_bytes, "%s: %s", r->path, msg);
}
static void r_bytes(reader* r, void* p, size_t n, const char* what) {
    if (r->failed) return;
    if (n && fread(p, 1, n, r->f) != n) r_fail(r, "file truncated while reading %s", what);
}
static int32_t r_i32(reader* r, const char* what) {
    int32_t v = 0;
    r_bytes(r, &v, 4, what);
    return v;
}

static void r_linear(reader* r, llama_linear* l, const char* name) {
    int32_t kind = r_i32(r, name), n = r_i32(r, name), k = r_i32(r, name), g = r_i32(r, name);
    if (r->failed) return;
    if (n != l->n || k != l->k || (kind != LINEAR_DENSE && kind != LINEAR_INT4)) {
        r_fail(r, "corrupt layer %s: kind %d, %d x %d (expected %d x %d)", name, kind, n, k, l->n, l->k);
        return;
    }
    if (kind == LINEAR_DENSE) {
        r_bytes(r, l->weight, (size_t)n * k * sizeof(float), name);
        return;
    }
    if (marlin_check_weight_shape(k, n, g) != MARLIN_STATUS_SUCCESS) {
        r_fail(r, "corrupt layer %s: invalid int4 shape %d x %d, group %d", name, n, k, g);
        return;
    }
    size_t packed_bytes = marlin_packed_weight_bytes(k, n), scale_bytes = marlin_scale_bytes(k, n, g);
    uint32_t* packed = malloc(packed_bytes);
    uint16_t* scales = malloc(scale_bytes);
    if (!packed || !scales) r_fail(r, "out of memory");
    r_bytes(r, packed, packed_bytes, name);
    r_bytes(r, scales, scale_bytes, name);
    char msg[256];
    if (!r->failed && llama_linear_set_packed(l, packed, scales, g, msg, sizeof(msg)) != 0) r_fail(r, "%s", msg);
    free(packed);
    free(scales);
}

static int r_tokenizer(reader* r, llama_tokenizer* tok, int vocab_size) {
    int32_t n_vocab = r_i32(r, "tokenizer"), bos = r_i32(r, "tokenizer"), eos = r_i32(r, "tokenizer");
    if (r->failed) return -1;
    if (n_vocab < 1 || n_vocab > (1 << 24) || n_vocab > vocab_size * 2 + 1024) {
        r_fail(r, "corrupt tokenizer: %d tokens", n_vocab);
        return -1;
    }
    char** strings = calloc((size_t)n_vocab, sizeof(char*));
    uint64_t* lengths = calloc((size_t)n_vocab, sizeof(uint64_t));
    int* types = calloc((size_t)n_vocab, sizeof(int));
    char** merges = NULL;
    uint64_t* merge_lengths = NULL;
    int32_t n_merges = 0;
    int rc = -1;
    if (!strings || !lengths || !types) {
        r_fail(r, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_vocab && !r->failed; i++) {
        int32_t len = r_i32(r, "token");
        if (len < 0 || len > 4096) r_fail(r, "corrupt token %d (length %d)", i, len);
        if (r->failed) break;
        strings[i] = malloc((size_t)len + 1);
        if (!strings[i]) { r_fail(r, "out of memory"); break; }
        r_bytes(r, strings[i], (size_t)len, "token");
        lengths[i] = (uint64_t)len;
        types[i] = r_i32(r, "token type");
    }
    n_merges = r_i32(r, "merge count");
    if (!r->failed && (n_merges < 0 || n_merges > (1 << 24))) r_fail(r, "corrupt merge count %d", n_merges);
    if (!r->failed) {
        merges = calloc((size_t)n_merges + 1, sizeof(char*));
        merge_lengths = calloc((size_t)n_merges + 1, sizeof(uint64_t));
        if (!merges || !merge_lengths) r_fail(r, "out of memory");
    }
    for (int i = 0; i < n_merges && !r->failed; i++) {
        int32_t len = r_i32(r, "merge");
        if (len < 0 || len > 8193) r_fail(r, "corrupt merge %d (length %d)", i, len);
        if (r->failed) break;
        merges[i] = malloc((size_t)len + 1);
        if (!merges[i]) { r_fail(r, "out of memory"); break; }
        r_bytes(r, merges[i], (size_t)len, "merge");
        merge_lengths[i] = (uint64_t)len;
    }
    if (!r->failed) {
        char msg[256];
        if (llama_tokenizer_init(tok, n_vocab, (const char* const*)strings, lengths, types, n_merges,
                                 (const char* const*)merges, merge_lengths, bos, eos, msg, sizeof(msg)) != 0)
            r_fail(r, "%s", msg);
        else rc = 0;
    }
done:
    if (strings) for (int i = 0; i < n_vocab; i++) free(strings[i]);
    if (merges) for (int i = 0; i < n_merges; i++) free(merges[i]);
    free(strings);
    free(lengths);
    free(types);
    free(merges);
    free(merge_lengths);
    return rc;
}

int llama_checkpoint_load(const char* path, llama_model* model, char* error, size_t error_bytes) {
    memset(model, 0, sizeof(*model));
    reader r = {fopen(path, "rb"), path, error, error_bytes, 0};
    if (!r.f) {
        snprintf(error, error_bytes, "cannot open '%s'", path);
        return -1;
    }
    char magic[4];
    r_bytes(&r, magic, 4, "magic");
    if (!r.failed && memcmp(magic, "MLQ4", 4) != 0) r_fail(&r, "not a marlin-llama checkpoint (bad magic number)");
    int32_t version = r_i32(&r, "version");
    if (!r.failed && version != CHECKPOINT_VERSION)
        r_fail(&r, "unsupported checkpoint version %d (this build reads version %d)", version, CHECKPOINT_VERSION);
    llama_config c;
    memset(&c, 0, sizeof(c));
    int32_t ints[10];
    for (int i = 0; i < 10; i++) ints[i] = r_i32(&r, "config");
    r_bytes(&r, &c.rope_base, 4, "config");
    r_bytes(&r, &c.norm_eps, 4, "config");
    c.n_layers = ints[0]; c.dim = ints[1]; c.ffn_dim = ints[2]; c.n_heads = ints[3]; c.n_kv_heads = ints[4];
    c.head_dim = ints[5]; c.rope_dim = ints[6]; c.vocab_size = ints[7]; c.max_context = ints[8];
    c.tied_embeddings = ints[9] != 0;
    char msg[400];
    if (!r.failed && llama_config_validate(&c, msg, sizeof(msg)) != 0) r_fail(&r, "%s", msg);
    if (!r.failed && llama_model_allocate(model, &c) != 0) r_fail(&r, "out of memory allocating the model");
    int32_t has_tokenizer = r_i32(&r, "tokenizer flag");
    if (!r.failed && has_tokenizer) {
        if (r_tokenizer(&r, &model->tokenizer, c.vocab_size) == 0) model->has_tokenizer = 1;
    }
    if (!r.failed) {
        size_t embedding_bytes = (size_t)c.vocab_size * c.dim * sizeof(float);
        r_bytes(&r, model->embedding, embedding_bytes, "embedding");
        if (!c.tied_embeddings) r_bytes(&r, model->output, embedding_bytes, "output head");
        r_bytes(&r, model->output_norm, (size_t)c.dim * sizeof(float), "output norm");
        for (int l = 0; l < c.n_layers && !r.failed; l++) {
            llama_layer* L = &model->layers[l];
            r_bytes(&r, L->attn_norm, (size_t)c.dim * sizeof(float), "attention norm");
            r_bytes(&r, L->ffn_norm, (size_t)c.dim * sizeof(float), "MLP norm");
            r_linear(&r, &L->qkv, "qkv");
            r_linear(&r, &L->out, "attention output");
            r_linear(&r, &L->gate_up, "gate/up");
            r_linear(&r, &L->down, "down");
        }
        char end[4];
        r_bytes(&r, end, 4, "end marker");
        if (!r.failed && memcmp(end, "END4", 4) != 0) r_fail(&r, "corrupt file: end marker missing");
    }
    fclose(r.f);
    if (r.failed) {
        llama_model_free(model);
        return -1;
    }
    return 0;
}
