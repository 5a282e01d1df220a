/*
 * test_llama_gguf.c: the GGUF reader of marlin-llama.
 *
 * Builds GGUF files in memory with this file's own small writer: metadata of
 * every scalar type, string arrays, and tensors of type F32, F16, Q4_0, Q4_1
 * and Q8_0 whose values the test knows, plus a complete tiny Llama model.
 * Checks: values and dequantized tensors read back; the model loader fills
 * the config and fuses q/k/v in order; every truncation of the file is
 * refused with a message; and a mutation loop (random byte flips, random
 * overwritten lengths) never crashes the parser (run under ASan/valgrind in CI).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "marlin.h"
#include "model.h"
#include "test_util.h"

typedef struct buffer {
    uint8_t* data;
    size_t size, capacity;
} buffer;

static void put(buffer* b, const void* p, size_t n) {
    if (b->size + n > b->capacity) {
        b->capacity = (b->size + n) * 2 + 64;
        b->data = realloc(b->data, b->capacity);
        if (!b->data) exit(2);
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}
static void put_u32(buffer* b, uint32_t v) { uint8_t p[4]; for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); put(b, p, 4); }
static void put_u64(buffer* b, uint64_t v) { uint8_t p[8]; for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); put(b, p, 8); }
static void put_u16(buffer* b, uint16_t v) { uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; put(b, p, 2); }
static void put_f32(buffer* b, float f) { uint32_t u; memcpy(&u, &f, 4); put_u32(b, u); }
static void put_str(buffer* b, const char* s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }

/* One tensor to write: name, dims (in, out), type, raw bytes, expected floats. */
typedef struct test_tensor {
    char name[64];
    uint64_t dims[2];
    int n_dims;
    uint32_t type;
    buffer raw;
    float* expected;
} test_tensor;

/* Encodes n random values of `type` into t->raw and their exact values into t->expected. */
static void make_tensor(test_tensor* t, const char* name, uint64_t in, uint64_t out, uint32_t type) {
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->dims[0] = in;
    t->dims[1] = out;
    t->n_dims = out > 1 ? 2 : 1;
    t->type = type;
    uint64_t n = in * out;
    t->expected = malloc(n * sizeof(float));
    for (uint64_t i = 0; i < n;) {
        if (type == GGUF_TENSOR_F32) {
            float v = test_rand_normal();
            put_f32(&t->raw, v);
            t->expected[i++] = v;
        } else if (type == GGUF_TENSOR_F16) {
            uint16_t h = marlin_fp16_from_float(test_rand_normal());
            put_u16(&t->raw, h);
            t->expected[i++] = marlin_fp16_to_float(h);
        } else if (type == GGUF_TENSOR_Q4_0 || type == GGUF_TENSOR_Q4_1) {
            uint16_t d = marlin_fp16_from_float(0.01f + 0.1f * (test_rand_uniform() + 1.0f));
            uint16_t m = marlin_fp16_from_float(-0.5f * (test_rand_uniform() + 1.0f));
            put_u16(&t->raw, d);
            if (type == GGUF_TENSOR_Q4_1) put_u16(&t->raw, m);
            uint8_t q[32];
            for (int j = 0; j < 32; j++) q[j] = (uint8_t)test_rand_int(16);
            for (int j = 0; j < 16; j++) {
                uint8_t byte = (uint8_t)(q[j] | (q[j + 16] << 4));
                put(&t->raw, &byte, 1);
            }
            for (int j = 0; j < 32; j++)
                t->expected[i + j] = type == GGUF_TENSOR_Q4_0 ? (q[j] - 8) * marlin_fp16_to_float(d)
                                                              : q[j] * marlin_fp16_to_float(d) + marlin_fp16_to_float(m);
            i += 32;
        } else { /* Q8_0 */
            uint16_t d = marlin_fp16_from_float(0.001f + 0.01f * (test_rand_uniform() + 1.0f));
            put_u16(&t->raw, d);
            for (int j = 0; j < 32; j++) {
                int8_t q = (int8_t)(test_rand_int(255) - 127);
                put(&t->raw, &q, 1);
                t->expected[i + j] = q * marlin_fp16_to_float(d);
            }
            i += 32;
        }
    }
}

static void free_tensor(test_tensor* t) {
    free(t->raw.data);
    free(t->expected);
}

typedef struct test_kv_writer {
    buffer kv;
    uint64_t count;
} test_kv_writer;

static void kv_u32(test_kv_writer* w, const char* key, uint32_t v) { put_str(&w->kv, key); put_u32(&w->kv, GGUF_TYPE_UINT32); put_u32(&w->kv, v); w->count++; }
static void kv_f32(test_kv_writer* w, const char* key, float v) { put_str(&w->kv, key); put_u32(&w->kv, GGUF_TYPE_FLOAT32); put_f32(&w->kv, v); w->count++; }
static void kv_str(test_kv_writer* w, const char* key, const char* v) { put_str(&w->kv, key); put_u32(&w->kv, GGUF_TYPE_STRING); put_str(&w->kv, v); w->count++; }
static void kv_str_array(test_kv_writer* w, const char* key, const char* const* v, int n) {
    put_str(&w->kv, key);
    put_u32(&w->kv, GGUF_TYPE_ARRAY);
    put_u32(&w->kv, GGUF_TYPE_STRING);
    put_u64(&w->kv, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(&w->kv, v[i]);
    w->count++;
}

/* Header + metadata + tensor infos + aligned data. */
static buffer write_gguf(test_kv_writer* w, test_tensor* tensors, int n_tensors) {
    buffer b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)n_tensors);
    put_u64(&b, w->count);
    put(&b, w->kv.data, w->kv.size);
    uint64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        put_str(&b, tensors[i].name);
        put_u32(&b, (uint32_t)tensors[i].n_dims);
        for (int d = 0; d < tensors[i].n_dims; d++) put_u64(&b, tensors[i].dims[d]);
        put_u32(&b, tensors[i].type);
        put_u64(&b, offset);
        offset += (tensors[i].raw.size + 31) / 32 * 32;
    }
    uint8_t zero[32] = {0};
    put(&b, zero, (32 - b.size % 32) % 32);
    for (int i = 0; i < n_tensors; i++) {
        put(&b, tensors[i].raw.data, tensors[i].raw.size);
        put(&b, zero, (32 - tensors[i].raw.size % 32) % 32);
    }
    return b;
}

static uint8_t* copy_bytes(const uint8_t* p, size_t n) {
    uint8_t* c = malloc(n ? n : 1);
    memcpy(c, p, n);
    return c;
}

static void test_types_and_values(void) {
    uint32_t types[5] = {GGUF_TENSOR_F32, GGUF_TENSOR_F16, GGUF_TENSOR_Q4_0, GGUF_TENSOR_Q4_1, GGUF_TENSOR_Q8_0};
    test_tensor tensors[5];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "tensor.%s", gguf_tensor_type_name(types[i]));
        make_tensor(&tensors[i], name, 64, 3 + (uint64_t)test_rand_int(5), types[i]);
    }
    test_kv_writer w = {0};
    kv_u32(&w, "answer", 42);
    kv_f32(&w, "pi", 3.25f);
    kv_str(&w, "greeting", "hello");
    const char* words[3] = {"a", "bc", "def"};
    kv_str_array(&w, "words", words, 3);
    buffer file = write_gguf(&w, tensors, 5);
    gguf_file f;
    char error[512] = "";
    int rc = gguf_parse(copy_bytes(file.data, file.size), file.size, &f, error, sizeof(error));
    test_check(rc == 0, "parse a valid GGUF file (%s)", error);
    if (rc == 0) {
        int64_t answer = 0;
        double pi = 0;
        const gguf_value* greeting = gguf_find(&f, "greeting");
        const gguf_value* list = gguf_find(&f, "words");
        test_check(gguf_get_int(&f, "answer", &answer) == 0 && answer == 42, "u32 metadata reads back");
        test_check(gguf_get_float(&f, "pi", &pi) == 0 && pi == 3.25, "f32 metadata reads back");
        test_check(greeting && gguf_string_equals(greeting->string, "hello"), "string metadata reads back");
        test_check(list && list->array_count == 3 && gguf_string_equals(list->array_strings[2], "def"),
                   "string array reads back");
        test_check(gguf_find(&f, "missing") == NULL && gguf_get_int(&f, "greeting", &answer) != 0,
                   "absent key / wrong type refused");
        for (int i = 0; i < 5; i++) {
            const gguf_tensor* t = gguf_find_tensor(&f, tensors[i].name);
            uint64_t n = tensors[i].dims[0] * tensors[i].dims[1];
            float* got = malloc(n * sizeof(float));
            int ok = t && t->n_elements == n && gguf_tensor_to_f32(t, got, error, sizeof(error)) == 0;
            float worst = 0;
            for (uint64_t j = 0; ok && j < n; j++) {
                float diff = fabsf(got[j] - tensors[i].expected[j]);
                if (diff > worst) worst = diff;
            }
            test_check(ok && worst <= 1e-6f, "%s tensor %llux%llu dequantizes exactly (max diff %g)",
                       gguf_tensor_type_name(types[i]), (unsigned long long)tensors[i].dims[1],
                       (unsigned long long)tensors[i].dims[0], worst);
            free(got);
        }
        gguf_free(&f);
    }
    /* every truncation must be refused with a message */
    /* (the file's last bytes are padding after the last tensor: cutting those is harmless) */
    size_t data_end = file.size - (32 - tensors[4].raw.size % 32) % 32;
    int refused = 0, total = 0;
    for (size_t len = 0; len < data_end; len += 1 + data_end / 600) {
        char msg[512] = "";
        gguf_file g;
        total++;
        if (gguf_parse(copy_bytes(file.data, len), len, &g, msg, sizeof(msg)) != 0 && msg[0]) refused++;
        else gguf_free(&g);
    }
    test_check(refused == total, "%d of %d truncated copies refused with a message", refused, total);
    for (int i = 0; i < 5; i++) free_tensor(&tensors[i]);
    free(w.kv.data);
    free(file.data);
}

/* A complete tiny Llama GGUF: 2 layers, dim 64, 2 heads of 32, 1 KV head. */
enum { TINY_LAYERS = 2, TINY_DIM = 64, TINY_FFN = 128, TINY_HEADS = 2, TINY_KV_HEADS = 1, TINY_VOCAB = 300 };

static buffer write_tiny_llama(test_tensor** out_tensors, int* out_count) {
    int head_dim = TINY_DIM / TINY_HEADS, kv_rows = TINY_KV_HEADS * head_dim;
    int count = 2 + TINY_LAYERS * 9;
    test_tensor* t = calloc((size_t)count, sizeof(test_tensor));
    int i = 0;
    make_tensor(&t[i++], "token_embd.weight", TINY_DIM, TINY_VOCAB, GGUF_TENSOR_Q8_0);
    make_tensor(&t[i++], "output_norm.weight", TINY_DIM, 1, GGUF_TENSOR_F32);
    for (int l = 0; l < TINY_LAYERS; l++) {
        char name[64];
#define ADD(suffix, in, out, type) snprintf(name, sizeof(name), "blk.%d.%s.weight", l, suffix); make_tensor(&t[i++], name, in, out, type)
        ADD("attn_norm", TINY_DIM, 1, GGUF_TENSOR_F32);
        ADD("ffn_norm", TINY_DIM, 1, GGUF_TENSOR_F32);
        ADD("attn_q", TINY_DIM, TINY_DIM, GGUF_TENSOR_Q4_1);
        ADD("attn_k", TINY_DIM, kv_rows, GGUF_TENSOR_Q4_0);
        ADD("attn_v", TINY_DIM, kv_rows, GGUF_TENSOR_F16);
        ADD("attn_output", TINY_DIM, TINY_DIM, GGUF_TENSOR_Q4_1);
        ADD("ffn_gate", TINY_DIM, TINY_FFN, GGUF_TENSOR_Q4_1);
        ADD("ffn_up", TINY_DIM, TINY_FFN, GGUF_TENSOR_Q8_0);
        ADD("ffn_down", TINY_FFN, TINY_DIM, GGUF_TENSOR_F32);
#undef ADD
    }
    test_kv_writer w = {0};
    kv_str(&w, "general.architecture", "llama");
    kv_u32(&w, "llama.block_count", TINY_LAYERS);
    kv_u32(&w, "llama.embedding_length", TINY_DIM);
    kv_u32(&w, "llama.feed_forward_length", TINY_FFN);
    kv_u32(&w, "llama.attention.head_count", TINY_HEADS);
    kv_u32(&w, "llama.attention.head_count_kv", TINY_KV_HEADS);
    kv_u32(&w, "llama.rope.dimension_count", (uint32_t)head_dim);
    kv_f32(&w, "llama.rope.freq_base", 10000.0f);
    kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    buffer b = write_gguf(&w, t, count);
    free(w.kv.data);
    *out_tensors = t;
    *out_count = count;
    return b;
}

static int write_file(const char* path, const uint8_t* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    size_t wrote = fwrite(p, 1, n, f);
    return fclose(f) == 0 && wrote == n ? 0 : -1;
}

static void test_model_loader(void) {
    test_tensor* tensors;
    int count;
    buffer file = write_tiny_llama(&tensors, &count);
    char path[] = "/tmp/test_llama_gguf_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    write_file(path, file.data, file.size);
    llama_model m;
    char error[512] = "";
    int rc = llama_model_load_gguf(path, &m, error, sizeof(error));
    test_check(rc == 0, "tiny llama GGUF loads (%s)", error);
    if (rc == 0) {
        const llama_config* c = &m.config;
        test_check(c->n_layers == TINY_LAYERS && c->dim == TINY_DIM && c->ffn_dim == TINY_FFN &&
                       c->n_heads == TINY_HEADS && c->n_kv_heads == TINY_KV_HEADS && c->head_dim == 32 &&
                       c->vocab_size == TINY_VOCAB && c->tied_embeddings == 1 && fabsf(c->norm_eps - 1e-5f) < 1e-9f,
                   "config read from metadata (tied embeddings detected)");
        /* layer 1: q rows, then k, then v in the fused qkv; gate then up */
        const test_tensor* q = &tensors[2 + 9 + 2];
        const test_tensor* k = &tensors[2 + 9 + 3];
        const test_tensor* v = &tensors[2 + 9 + 4];
        const llama_linear* qkv = &m.layers[1].qkv;
        size_t qn = TINY_DIM * TINY_DIM, kn = 32 * TINY_DIM;
        int ok = qkv->n == TINY_DIM + 64 && qkv->k == TINY_DIM &&
                 memcmp(qkv->weight, q->expected, qn * 4) == 0 &&
                 memcmp(qkv->weight + qn, k->expected, kn * 4) == 0 &&
                 memcmp(qkv->weight + qn + kn, v->expected, kn * 4) == 0;
        test_check(ok, "q, k, v rows fused in order");
        const test_tensor* up = &tensors[2 + 9 + 7];
        test_check(memcmp(m.layers[1].gate_up.weight + (size_t)TINY_FFN * TINY_DIM, up->expected,
                          (size_t)TINY_FFN * TINY_DIM * 4) == 0, "gate and up rows fused in order");
        test_check(memcmp(m.embedding, tensors[0].expected, (size_t)TINY_VOCAB * TINY_DIM * 4) == 0,
                   "Q8_0 embedding dequantized");
        llama_model_free(&m);
    }
    /* truncated model files: a clear error, no crash */
    int refused = 0, total = 0;
    for (int i = 0; i < 12; i++) {
        size_t len = (size_t)test_rand_int((int)file.size);
        write_file(path, file.data, len);
        char msg[512] = "";
        total++;
        if (llama_model_load_gguf(path, &m, msg, sizeof(msg)) != 0 && msg[0]) refused++;
        else llama_model_free(&m);
    }
    test_check(refused == total, "%d of %d truncated model files refused", refused, total);
    /* a wrong dimension in the metadata is caught by the shape checks */
    {
        buffer bad = {0};
        put(&bad, file.data, file.size);
        const char* key = "llama.feed_forward_length";
        uint8_t* at = memmem(bad.data, bad.size, key, strlen(key));
        if (at) at[strlen(key) + 4] ^= 0x40; /* the u32 value after the type */
        write_file(path, bad.data, bad.size);
        char msg[512] = "";
        int bad_rc = llama_model_load_gguf(path, &m, msg, sizeof(msg));
        if (bad_rc == 0) llama_model_free(&m);
        test_check(at && bad_rc != 0 && strstr(msg, "shape"), "mismatched tensor shape refused: %s", msg);
        free(bad.data);
    }
    /* mutation loop: random corruptions of the header must never crash */
    int parsed = 0, rejected = 0;
    size_t header = file.size - 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t* copy = copy_bytes(file.data, file.size);
        int flips = 1 + test_rand_int(4);
        for (int j = 0; j < flips; j++) {
            size_t at = (size_t)test_rand_int((int)(header < 4096 ? header : 4096));
            if (test_rand_int(3) == 0) copy[at] = (uint8_t)test_rand_int(256);
            else if (at + 8 <= file.size) { /* a wild 64-bit length */
                uint64_t v = test_rand_u64() >> test_rand_int(64);
                memcpy(copy + at, &v, 8);
            }
        }
        gguf_file g;
        char msg[256];
        if (gguf_parse(copy, file.size, &g, msg, sizeof(msg)) == 0) {
            parsed++;
            /* dequantize everything that parsed: extents were checked */
            for (uint64_t t = 0; t < g.n_tensors; t++) {
                float* out = malloc(g.tensors[t].n_elements * sizeof(float));
                if (out) gguf_tensor_to_f32(&g.tensors[t], out, msg, sizeof(msg));
                free(out);
            }
            gguf_free(&g);
        } else {
            rejected++;
        }
    }
    test_check(parsed + rejected == 3000, "3000 mutated files: %d parsed, %d refused, no crash", parsed, rejected);
    unlink(path);
    for (int i = 0; i < count; i++) free_tensor(&tensors[i]);
    free(tensors);
    free(file.data);
}

int main(void) {
    test_seed("test_llama_gguf");
    test_types_and_values();
    test_model_loader();
    {
        char error[256] = "";
        gguf_file f;
        test_check(gguf_open("/nonexistent/model.gguf", &f, error, sizeof(error)) != 0 && strstr(error, "cannot open"),
                   "missing file refused: %s", error);
        uint8_t* junk = malloc(64);
        memset(junk, 'x', 64);
        test_check(gguf_parse(junk, 64, &f, error, sizeof(error)) != 0 && strstr(error, "magic"),
                   "bad magic refused: %s", error);
    }
    return test_finish();
}
