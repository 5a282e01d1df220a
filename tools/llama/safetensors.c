/*
 * safetensors.c: loads a Hugging Face Llama checkpoint: config.json plus one
 * or more *.safetensors files (F32, F16 or BF16 tensors), and the tokenizer
 * from tokenizer.json when it is there (byte-level BPE: model.vocab,
 * model.merges, added_tokens).
 *
 * A safetensors file is: u64 header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...}, then the
 * data; offsets are relative to the end of the header and are checked
 * against the file size and the expected shape.
 *
 * Hugging Face stores q and k rows for "rotate half" RoPE (pairs i and
 * i + head_dim/2); this loader permutes them into the GGUF order (adjacent
 * pairs), exactly as llama.cpp's converter does, so the forward pass is the
 * same for both sources.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "marlin.h"
#include "model.h"

typedef struct st_file {
    unsigned char* data;  /* the whole file (owned) */
    size_t size;
    size_t data_start;    /* 8 + header length */
    json_value header;
} st_file;

static char* read_all(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    char* buffer = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buffer = malloc((size_t)n + 1);
        if (buffer && fread(buffer, 1, (size_t)n, f) != (size_t)n) {
            free(buffer);
            buffer = NULL;
        }
    }
    fclose(f);
    if (buffer) {
        buffer[n] = 0;
        *size = (size_t)n;
    }
    return buffer;
}

static int st_open(const char* path, st_file* f, char* error, size_t error_bytes) {
    memset(f, 0, sizeof(*f));
    f->data = (unsigned char*)read_all(path, &f->size);
    if (!f->data) {
        snprintf(error, error_bytes, "cannot read '%s'", path);
        return -1;
    }
    uint64_t header = 0;
    for (int i = 7; i >= 0 && f->size >= 8; i--) header = (header << 8) | f->data[i];
    if (f->size < 8 || header > f->size - 8) {
        snprintf(error, error_bytes, "%s: truncated or not a safetensors file (header of %llu bytes)", path,
                 (unsigned long long)header);
        return -1;
    }
    f->data_start = 8 + (size_t)header;
    char msg[256];
    if (json_parse((const char*)f->data + 8, (size_t)header, &f->header, msg, sizeof(msg)) != 0 ||
        f->header.type != JSON_OBJECT) {
        snprintf(error, error_bytes, "%s: corrupt header: %s", path, f->header.type == JSON_OBJECT ? msg : "not an object");
        return -1;
    }
    return 0;
}

static void st_close(st_file* f) {
    json_free(&f->header);
    free(f->data);
    memset(f, 0, sizeof(*f));
}

static float bf16_to_float(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Finds `name` in any of the files and converts it to fp32 (rows x cols). 0, 1 when absent, -1 on error. */
static int st_load(st_file* files, int n_files, const char* name, int rows, int cols, float* out, char* error,
                   size_t error_bytes) {
    for (int i = 0; i < n_files; i++) {
        const json_value* t = json_get(&files[i].header, name);
        if (!t) continue;
        const json_value* dtype = json_get(t, "dtype");
        const json_value* shape = json_get(t, "shape");
        const json_value* offsets = json_get(t, "data_offsets");
        if (!dtype || dtype->type != JSON_STRING || !shape || shape->type != JSON_ARRAY || !offsets ||
            offsets->type != JSON_ARRAY || offsets->count != 2) {
            snprintf(error, error_bytes, "safetensors: tensor '%s' has a malformed entry", name);
            return -1;
        }
        int elem = !strcmp(dtype->string, "F32") ? 4 : (!strcmp(dtype->string, "F16") || !strcmp(dtype->string, "BF16")) ? 2 : 0;
        if (!elem) {
            snprintf(error, error_bytes, "safetensors: tensor '%s' has unsupported dtype %s (F32, F16, BF16)", name, dtype->string);
            return -1;
        }
        int shape_ok = (shape->count == 2 && shape->items[0].number == rows && shape->items[1].number == cols) ||
                       (rows == 1 && shape->count == 1 && shape->items[0].number == cols);
        if (!shape_ok) {
            snprintf(error, error_bytes, "safetensors: tensor '%s' has the wrong shape (expected [%d, %d])", name, rows, cols);
            return -1;
        }
        double begin = offsets->items[0].number, end = offsets->items[1].number;
        size_t bytes = (size_t)rows * cols * elem;
        size_t avail = files[i].size - files[i].data_start;
        if (!(begin >= 0) || !(end >= begin) || end > (double)avail || end - begin != (double)bytes) {
            snprintf(error, error_bytes, "safetensors: tensor '%s' has data offsets [%.0f, %.0f] outside the file or of the wrong size",
                     name, begin, end);
            return -1;
        }
        const unsigned char* p = files[i].data + files[i].data_start + (size_t)begin;
        size_t count = (size_t)rows * cols;
        for (size_t j = 0; j < count; j++) {
            if (elem == 4) memcpy(&out[j], p + 4 * j, 4);
            else {
                uint16_t h = (uint16_t)(p[2 * j] | (p[2 * j + 1] << 8));
                out[j] = dtype->string[0] == 'B' ? bf16_to_float(h) : marlin_fp16_to_float(h);
            }
        }
        return 0;
    }
    return 1;
}

/* Hugging Face "rotate half" row order -> GGUF adjacent pairs, per head:
 * new row 2i + j takes old row j * head_dim/2 + i. */
static void permute_rope_rows(float* w, int n_heads, int head_dim, int cols) {
    size_t head_elems = (size_t)head_dim * cols;
    float* tmp = malloc(head_elems * sizeof(float));
    if (!tmp) return;
    for (int h = 0; h < n_heads; h++) {
        float* head = w + h * head_elems;
        memcpy(tmp, head, head_elems * sizeof(float));
        for (int i = 0; i < head_dim / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(head + (size_t)(2 * i + j) * cols, tmp + (size_t)(j * head_dim / 2 + i) * cols, (size_t)cols * sizeof(float));
    }
    free(tmp);
}

/* tokenizer.json: byte-level BPE only. 0, 1 when the file is absent, -1 on error. */
static int load_tokenizer_json(const char* path, llama_tokenizer* tok, char* error, size_t error_bytes) {
    size_t size;
    char* text = read_all(path, &size);
    if (!text) return 1;
    json_value root;
    char msg[256];
    int rc = -1;
    if (json_parse(text, size, &root, msg, sizeof(msg)) != 0) {
        snprintf(error, error_bytes, "%s: %s", path, msg);
        free(text);
        return -1;
    }
    free(text);
    const json_value* model = json_get(&root, "model");
    const json_value* vocab = json_get(model, "vocab");
    const json_value* merges = json_get(model, "merges");
    const json_value* added = json_get(&root, "added_tokens");
    if (!vocab || vocab->type != JSON_OBJECT || !merges || merges->type != JSON_ARRAY) {
        snprintf(error, error_bytes, "%s: not a BPE tokenizer (model.vocab / model.merges missing)", path);
        json_free(&root);
        return -1;
    }
    int n_vocab = 0;
    for (int i = 0; i < vocab->count; i++)
        if (vocab->items[i].number + 1 > n_vocab) n_vocab = (int)vocab->items[i].number + 1;
    for (int i = 0; added && added->type == JSON_ARRAY && i < added->count; i++) {
        int id = (int)json_get_number(&added->items[i], "id", -1);
        if (id + 1 > n_vocab) n_vocab = id + 1;
    }
    if (n_vocab < 1 || n_vocab > (1 << 24)) {
        snprintf(error, error_bytes, "%s: bad vocabulary size %d", path, n_vocab);
        json_free(&root);
        return -1;
    }
    const char** strings = calloc((size_t)n_vocab, sizeof(char*));
    uint64_t* lengths = calloc((size_t)n_vocab, sizeof(uint64_t));
    int* types = calloc((size_t)n_vocab, sizeof(int));
    const char** merge_strings = calloc((size_t)merges->count + 1, sizeof(char*));
    uint64_t* merge_lengths = calloc((size_t)merges->count + 1, sizeof(uint64_t));
    char** joined = calloc((size_t)merges->count + 1, sizeof(char*));
    if (!strings || !lengths || !types || !merge_strings || !merge_lengths || !joined) {
        snprintf(error, error_bytes, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_vocab; i++) {
        strings[i] = "";
        types[i] = 5; /* unused slot */
    }
    for (int i = 0; i < vocab->count; i++) {
        int id = (int)vocab->items[i].number;
        if (id < 0) continue;
        strings[id] = vocab->keys[i];
        lengths[id] = strlen(vocab->keys[i]);
        types[id] = 1;
    }
    for (int i = 0; added && added->type == JSON_ARRAY && i < added->count; i++) {
        const json_value* a = &added->items[i];
        const json_value* content = json_get(a, "content");
        int id = (int)json_get_number(a, "id", -1);
        if (id < 0 || !content || content->type != JSON_STRING) continue;
        strings[id] = content->string;
        lengths[id] = content->string_length;
        types[id] = json_get_number(a, "special", 0) ? 3 : 4;
    }
    for (int i = 0; i < merges->count; i++) {
        const json_value* m = &merges->items[i];
        if (m->type == JSON_STRING) {
            merge_strings[i] = m->string;
            merge_lengths[i] = m->string_length;
        } else if (m->type == JSON_ARRAY && m->count == 2 && m->items[0].type == JSON_STRING &&
                   m->items[1].type == JSON_STRING) { /* newer format: ["left", "right"] */
            size_t a = m->items[0].string_length, b = m->items[1].string_length;
            joined[i] = malloc(a + b + 2);
            if (!joined[i]) { snprintf(error, error_bytes, "out of memory"); goto done; }
            memcpy(joined[i], m->items[0].string, a);
            joined[i][a] = ' ';
            memcpy(joined[i] + a + 1, m->items[1].string, b);
            merge_strings[i] = joined[i];
            merge_lengths[i] = a + b + 1;
        } else {
            snprintf(error, error_bytes, "%s: merge %d is malformed", path, i);
            goto done;
        }
    }
    rc = llama_tokenizer_init(tok, n_vocab, strings, lengths, types, merges->count, merge_strings, merge_lengths, -1,
                              -1, error, error_bytes);
    if (rc == 0) {
        tok->eos_id = llama_tokenizer_find(tok, "<|im_end|>", 10);
        if (tok->eos_id < 0) tok->eos_id = llama_tokenizer_find(tok, "<|endoftext|>", 13);
        if (tok->eos_id < 0) tok->eos_id = llama_tokenizer_find(tok, "</s>", 4);
    }
done:
    if (joined) for (int i = 0; i < merges->count; i++) free(joined[i]);
    free(joined);
    free(strings);
    free(lengths);
    free(types);
    free(merge_strings);
    free(merge_lengths);
    json_free(&root);
    return rc;
}

int llama_model_load_safetensors(const char* path, llama_model* model, char* error, size_t error_bytes) {
    memset(model, 0, sizeof(*model));
    char dir[4096];
    struct stat info;
    if (stat(path, &info) != 0) {
        snprintf(error, error_bytes, "cannot open '%s'", path);
        return -1;
    }
    int is_dir = S_ISDIR(info.st_mode);
    snprintf(dir, sizeof(dir), "%s", path);
    if (!is_dir) {
        char* slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof(dir), ".");
        size_t len = strlen(path);
        if (len < 12 || strcmp(path + len - 12, ".safetensors") != 0) {
            snprintf(error, error_bytes, "'%s' is not a GGUF file, a marlin-llama checkpoint or a .safetensors file", path);
            return -1;
        }
    }
    char config_path[4200];
    snprintf(config_path, sizeof(config_path), "%s/config.json", dir);
    size_t config_size;
    char* config_text = read_all(config_path, &config_size);
    if (!config_text) {
        snprintf(error, error_bytes, "safetensors checkpoint: '%s' is missing", config_path);
        return -1;
    }
    json_value cfg;
    char msg[256];
    if (json_parse(config_text, config_size, &cfg, msg, sizeof(msg)) != 0) {
        snprintf(error, error_bytes, "%s: %s", config_path, msg);
        free(config_text);
        return -1;
    }
    free(config_text);
    llama_config c;
    memset(&c, 0, sizeof(c));
    c.dim = (int)json_get_number(&cfg, "hidden_size", 0);
    c.ffn_dim = (int)json_get_number(&cfg, "intermediate_size", 0);
    c.n_heads = (int)json_get_number(&cfg, "num_attention_heads", 0);
    c.n_kv_heads = (int)json_get_number(&cfg, "num_key_value_heads", c.n_heads);
    c.n_layers = (int)json_get_number(&cfg, "num_hidden_layers", 0);
    c.vocab_size = (int)json_get_number(&cfg, "vocab_size", 0);
    c.max_context = (int)json_get_number(&cfg, "max_position_embeddings", 2048);
    c.norm_eps = (float)json_get_number(&cfg, "rms_norm_eps", 1e-6);
    c.rope_base = (float)json_get_number(&cfg, "rope_theta", 10000.0);
    c.tied_embeddings = json_get_number(&cfg, "tie_word_embeddings", 0) != 0;
    c.head_dim = c.n_heads > 0 ? (int)json_get_number(&cfg, "head_dim", c.dim / c.n_heads) : 0;
    c.rope_dim = c.head_dim;
    json_free(&cfg);
    if (llama_config_validate(&c, error, error_bytes) != 0) return -1;

    /* the weight files: the one given, or every *.safetensors in the directory */
    st_file files[64];
    int n_files = 0, rc = -1;
    if (!is_dir) {
        if (st_open(path, &files[n_files], error, error_bytes) != 0) { st_close(&files[0]); return -1; }
        n_files = 1;
    } else {
        DIR* d = opendir(dir);
        struct dirent* e;
        while (d && (e = readdir(d)) != NULL && n_files < 64) {
            size_t len = strlen(e->d_name);
            if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
            char file_path[8400];
            snprintf(file_path, sizeof(file_path), "%s/%s", dir, e->d_name);
            if (st_open(file_path, &files[n_files], error, error_bytes) != 0) {
                st_close(&files[n_files]);
                closedir(d);
                goto done;
            }
            n_files++;
        }
        if (d) closedir(d);
        if (n_files == 0) {
            snprintf(error, error_bytes, "no .safetensors file in '%s'", dir);
            return -1;
        }
    }
    if (llama_model_allocate(model, &c) != 0) {
        snprintf(error, error_bytes, "out of memory allocating the model");
        goto done;
    }
    int q_rows = c.n_heads * c.head_dim, kv_rows = c.n_kv_heads * c.head_dim;
    char name[256];
#define LOAD(tensor_name, rows, cols, dst)                                                                  \
    do {                                                                                                    \
        int r_ = st_load(files, n_files, tensor_name, rows, cols, dst, error, error_bytes);                 \
        if (r_ == 1) snprintf(error, error_bytes, "safetensors: tensor '%s' is missing", tensor_name);      \
        if (r_ != 0) goto done;                                                                             \
    } while (0)
    LOAD("model.embed_tokens.weight", c.vocab_size, c.dim, model->embedding);
    LOAD("model.norm.weight", 1, c.dim, model->output_norm);
    if (!c.tied_embeddings) {
        int r = st_load(files, n_files, "lm_head.weight", c.vocab_size, c.dim, model->output, error, error_bytes);
        if (r < 0) goto done;
        if (r == 1) { /* no head: tie it after all */
            free(model->output);
            model->output = model->embedding;
            model->config.tied_embeddings = 1;
        }
    }
    for (int l = 0; l < c.n_layers; l++) {
        llama_layer* L = &model->layers[l];
#define LAYER(suffix, rows, cols, dst)                                              \
    snprintf(name, sizeof(name), "model.layers.%d.%s.weight", l, suffix);           \
    LOAD(name, rows, cols, dst)
        LAYER("input_layernorm", 1, c.dim, L->attn_norm);
        LAYER("post_attention_layernorm", 1, c.dim, L->ffn_norm);
        LAYER("self_attn.q_proj", q_rows, c.dim, L->qkv.weight);
        LAYER("self_attn.k_proj", kv_rows, c.dim, L->qkv.weight + (size_t)q_rows * c.dim);
        LAYER("self_attn.v_proj", kv_rows, c.dim, L->qkv.weight + (size_t)(q_rows + kv_rows) * c.dim);
        LAYER("self_attn.o_proj", c.dim, q_rows, L->out.weight);
        LAYER("mlp.gate_proj", c.ffn_dim, c.dim, L->gate_up.weight);
        LAYER("mlp.up_proj", c.ffn_dim, c.dim, L->gate_up.weight + (size_t)c.ffn_dim * c.dim);
        LAYER("mlp.down_proj", c.dim, c.ffn_dim, L->down.weight);
#undef LAYER
        permute_rope_rows(L->qkv.weight, c.n_heads, c.head_dim, c.dim);
        permute_rope_rows(L->qkv.weight + (size_t)q_rows * c.dim, c.n_kv_heads, c.head_dim, c.dim);
    }
#undef LOAD
    char tokenizer_path[4200];
    snprintf(tokenizer_path, sizeof(tokenizer_path), "%s/tokenizer.json", dir);
    int t = load_tokenizer_json(tokenizer_path, &model->tokenizer, error, error_bytes);
    if (t < 0) goto done;
    model->has_tokenizer = t == 0;
    rc = 0;
done:
    for (int i = 0; i < n_files; i++) st_close(&files[i]);
    if (rc != 0) llama_model_free(model);
    return rc;
}
