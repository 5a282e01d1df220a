/*
 * test_llama_safetensors.c: loading a Hugging Face Llama checkpoint
 * (config.json + model.safetensors + tokenizer.json) that this test writes:
 * a tiny random model in Hugging Face's layout, tensors stored as F32, F16
 * and BF16.
 *
 * The loaded model must compute the same logits as a double-precision
 * forward of the original weights with Hugging Face's "rotate half" RoPE,
 * which checks the q/k row permutation into the GGUF order. Also: the
 * tokenizer from tokenizer.json, and clear errors for a missing config, a
 * truncated weight file, a wrong shape and a corrupt header.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpu.h"
#include "marlin.h"
#include "model.h"
#include "test_llama_common.h"
#include "test_util.h"

typedef struct st_tensor {
    char name[96];
    const float* data;
    int rows, cols;
    const char* dtype;
} st_tensor;

static size_t dtype_bytes(const char* dtype) { return strcmp(dtype, "F32") ? 2 : 4; }

/* Rounds in place to what the dtype can store (so the reference uses the stored values). */
static void round_to_dtype(float* x, size_t n, const char* dtype) {
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(dtype, "F16")) x[i] = marlin_fp16_to_float(marlin_fp16_from_float(x[i]));
        else if (!strcmp(dtype, "BF16")) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            u &= 0xFFFF0000u; /* truncation is a valid bf16 value */
            memcpy(&x[i], &u, 4);
        }
    }
}

static void write_safetensors(const char* path, st_tensor* t, int n, int bad_shape) {
    char header[16384];
    size_t used = 0, offset = 0;
    used += (size_t)snprintf(header + used, sizeof(header) - used, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)t[i].rows * t[i].cols * dtype_bytes(t[i].dtype);
        int rows = bad_shape && i == 3 ? t[i].rows + 1 : t[i].rows;
        if (t[i].rows == 1)
            used += (size_t)snprintf(header + used, sizeof(header) - used,
                                     ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}", t[i].name,
                                     t[i].dtype, t[i].cols, offset, offset + bytes);
        else
            used += (size_t)snprintf(header + used, sizeof(header) - used,
                                     ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                     t[i].name, t[i].dtype, rows, t[i].cols, offset, offset + bytes);
        offset += bytes;
    }
    used += (size_t)snprintf(header + used, sizeof(header) - used, "}");
    FILE* f = fopen(path, "wb");
    uint64_t len = used;
    fwrite(&len, 8, 1, f);
    fwrite(header, 1, used, f);
    for (int i = 0; i < n; i++) {
        size_t count = (size_t)t[i].rows * t[i].cols;
        for (size_t j = 0; j < count; j++) {
            if (!strcmp(t[i].dtype, "F32")) fwrite(&t[i].data[j], 4, 1, f);
            else {
                uint16_t h;
                if (!strcmp(t[i].dtype, "F16")) h = marlin_fp16_from_float(t[i].data[j]);
                else {
                    uint32_t u;
                    memcpy(&u, &t[i].data[j], 4);
                    h = (uint16_t)(u >> 16);
                }
                fwrite(&h, 2, 1, f);
            }
        }
    }
    fclose(f);
}

static void write_text(const char* path, const char* text) {
    FILE* f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

int main(void) {
    test_seed("test_llama_safetensors");
    llama_model hf; /* weights in Hugging Face's q/k row order */
    test_llama_random_model(&hf);
    const llama_config* c = &hf.config;
    int q_rows = c->n_heads * c->head_dim, kv_rows = c->n_kv_heads * c->head_dim;
    const char* dtypes[3] = {"F32", "F16", "BF16"};
    st_tensor t[64];
    int n = 0;
#define ADD(nm, ptr, r, cc)                                               \
    do {                                                                  \
        snprintf(t[n].name, sizeof(t[n].name), "%s", nm);                 \
        t[n].data = ptr; t[n].rows = r; t[n].cols = cc;                   \
        t[n].dtype = dtypes[test_rand_int(3)];                            \
        round_to_dtype((float*)ptr, (size_t)(r) * (cc), t[n].dtype);      \
        n++;                                                              \
    } while (0)
    ADD("model.embed_tokens.weight", hf.embedding, c->vocab_size, c->dim);
    ADD("model.norm.weight", hf.output_norm, 1, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer* L = &hf.layers[l];
        char name[96];
#define LAYER(suffix, ptr, r, cc) snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, suffix); ADD(name, ptr, r, cc)
        LAYER("self_attn.q_proj", L->qkv.weight, q_rows, c->dim);
        LAYER("self_attn.k_proj", L->qkv.weight + (size_t)q_rows * c->dim, kv_rows, c->dim);
        LAYER("self_attn.v_proj", L->qkv.weight + (size_t)(q_rows + kv_rows) * c->dim, kv_rows, c->dim);
        LAYER("self_attn.o_proj", L->out.weight, c->dim, q_rows);
        LAYER("mlp.gate_proj", L->gate_up.weight, c->ffn_dim, c->dim);
        LAYER("mlp.up_proj", L->gate_up.weight + (size_t)c->ffn_dim * c->dim, c->ffn_dim, c->dim);
        LAYER("mlp.down_proj", L->down.weight, c->dim, c->ffn_dim);
        LAYER("input_layernorm", L->attn_norm, 1, c->dim);
        LAYER("post_attention_layernorm", L->ffn_norm, 1, c->dim);
#undef LAYER
    }
    char dir[] = "/tmp/test_llama_st_XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char path[256], config_path[256], tok_path[256];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    snprintf(config_path, sizeof(config_path), "%s/config.json", dir);
    snprintf(tok_path, sizeof(tok_path), "%s/tokenizer.json", dir);
    llama_model m;
    char error[1024] = "";
    write_safetensors(path, t, n, 0);
    int rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "config.json"), "missing config.json refused: %s", error);
    char config[1024];
    snprintf(config, sizeof(config),
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"intermediate_size\": %d,\n"
             " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"num_hidden_layers\": %d,\n"
             " \"vocab_size\": %d, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true,\n"
             " \"max_position_embeddings\": 64, \"torch_dtype\": \"float32\"}",
             c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->n_layers, c->vocab_size);
    write_text(config_path, config);
    /* a byte-level BPE over 'a'..'e' with two merges, plus one special token */
    write_text(tok_path,
               "{\"added_tokens\": [{\"id\": 7, \"content\": \"<|im_end|>\", \"special\": true}],\n"
               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"d\": 3, \"ab\": 4, \"abc\": 5, \"\\u0120\": 6},\n"
               " \"merges\": [\"a b\", [\"ab\", \"c\"]]}}");
    rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc == 0, "checkpoint directory loads (%s)", error);
    if (rc == 0) {
        test_check(m.config.n_layers == c->n_layers && m.config.n_kv_heads == c->n_kv_heads && m.config.tied_embeddings,
                   "config.json read");
        int ids[8];
        int k = llama_tokenizer_encode(&m.tokenizer, "abcab<|im_end|>", 15, 1, ids, 8);
        test_check(m.has_tokenizer && k == 3 && ids[0] == 5 && ids[1] == 4 && ids[2] == 7 && m.tokenizer.eos_id == 7,
                   "tokenizer.json: \"abcab<|im_end|>\" -> abc ab <|im_end|> (%d tokens)", k);
        enum { T = 20 };
        int tokens[T], seq[T] = {0}, pos[T];
        for (int i = 0; i < T; i++) {
            tokens[i] = test_rand_int(c->vocab_size);
            pos[i] = i;
        }
        llama_thread_pool* pool = llama_thread_pool_create(2);
        llama_cpu_state st;
        llama_cpu_state_init(&st, &m, pool, T, 1, T);
        float* logits = malloc(sizeof(float) * T * c->vocab_size);
        double* want = malloc(sizeof(double) * T * c->vocab_size);
        llama_cpu_forward(&st, tokens, seq, pos, T, logits);
        test_llama_reference_forward(&hf, tokens, T, 1, want);
        double diff = 0, mag = 0;
        for (int i = 0; i < T * c->vocab_size; i++) {
            diff = fmax(diff, fabs(logits[i] - want[i]));
            mag = fmax(mag, fabs(want[i]));
        }
        test_check(diff < 1e-4 * mag, "loaded model == Hugging Face forward (rotate-half RoPE): max error %.2e of %.2e",
                   diff, mag);
        test_llama_reference_forward(&hf, tokens, T, 0, want);
        double unpermuted = 0;
        for (int i = 0; i < T * c->vocab_size; i++) unpermuted = fmax(unpermuted, fabs(logits[i] - want[i]));
        test_check(unpermuted > 1e-3 * mag, "(the permutation matters: without it the error would be %.2e)", unpermuted);
        free(logits);
        free(want);
        llama_cpu_state_free(&st);
        llama_thread_pool_free(pool);
        llama_model_free(&m);
    }
    rc = llama_model_load(path, &m, error, sizeof(error));
    test_check(rc == 0, "a .safetensors file with config.json beside it loads (%s)", error);
    if (rc == 0) llama_model_free(&m);
    /* truncated weights */
    struct stat info;
    stat(path, &info);
    if (truncate(path, info.st_size - 100) != 0) return 2;
    rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "outside the file"), "truncated weight file refused: %s", error);
    write_safetensors(path, t, n, 1);
    rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "shape"), "wrong tensor shape refused: %s", error);
    FILE* f = fopen(path, "r+b");
    fseek(f, 8, SEEK_SET);
    fputc('x', f); /* the header's opening brace */
    fclose(f);
    rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "corrupt header"), "corrupt JSON header refused: %s", error);
    f = fopen(path, "r+b");
    uint64_t huge = 1ull << 40;
    fwrite(&huge, 8, 1, f);
    fclose(f);
    rc = llama_model_load(dir, &m, error, sizeof(error));
    test_check(rc != 0 && strstr(error, "truncated"), "header length past the end refused: %s", error);
    unlink(path);
    unlink(config_path);
    unlink(tok_path);
    rmdir(dir);
    llama_model_free(&hf);
    return test_finish();
}
