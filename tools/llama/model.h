/*
 * model.h: a Llama-architecture model in host memory, and its loaders.
 *
 * One in-memory form serves every source (GGUF, safetensors + config.json,
 * our own 4-bit checkpoint) and every backend:
 *   - each block has four linear layers, the projections that read the same
 *     input fused by output rows: qkv (q rows, then k, then v), out,
 *     gate_up (gate rows, then up), down;
 *   - q and k rows are in the GGUF order, where RoPE rotates adjacent pairs
 *     (2i, 2i+1) of each head. llama.cpp's converter permutes Hugging Face's
 *     rows into this order; the safetensors loader applies the same
 *     permutation, so one forward pass serves both;
 *   - a linear layer is dense (fp32) or int4 Marlin (packed codes + scales);
 *     an int4 layer also keeps the fp32 weights dequantized from the packed
 *     data exactly as the GPU kernel does (fp16 (q - 8) * scale), which the
 *     CPU backend multiplies with.
 */
#ifndef LLAMA_MODEL_H
#define LLAMA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct llama_config {
    int n_layers;
    int dim;            /* hidden size */
    int ffn_dim;        /* MLP intermediate size */
    int n_heads;
    int n_kv_heads;
    int head_dim;       /* dim / n_heads */
    int rope_dim;       /* dimensions of each head that RoPE rotates (<= head_dim, even) */
    int vocab_size;
    int max_context;    /* trained context length */
    float rope_base;
    float norm_eps;
    int tied_embeddings; /* 1: the output head is the embedding matrix */
} llama_config;

typedef struct llama_linear {
    int n;              /* output features */
    int k;              /* input features */
    int group_size;     /* 0: dense fp32; else int4 Marlin with this group size */
    float* weight;      /* n x k fp32, row-major (int4: the dequantized packed weights) */
    uint32_t* packed_b;        /* int4 only: k*n/8 words, marlin_pack layout */
    uint16_t* packed_scales;   /* int4 only: ceil(k/group_size) x n fp16, marlin_pack layout */
} llama_linear;

typedef struct llama_layer {
    float* attn_norm;   /* dim */
    float* ffn_norm;    /* dim */
    llama_linear qkv;   /* (n_heads + 2 n_kv_heads) * head_dim x dim */
    llama_linear out;   /* dim x n_heads * head_dim */
    llama_linear gate_up; /* 2 ffn_dim x dim */
    llama_linear down;  /* dim x ffn_dim */
} llama_layer;

typedef struct llama_model {
    llama_config config;
    float* embedding;   /* vocab x dim */
    float* output;      /* vocab x dim; == embedding when tied (not freed twice) */
    float* output_norm; /* dim */
    llama_layer* layers; /* n_layers */
    int has_tokenizer;
    llama_tokenizer tokenizer;
} llama_model;

/* Loads a GGUF file, our checkpoint (magic "MLQ4") or a safetensors
 * checkpoint (a directory with config.json and *.safetensors, or a
 * .safetensors file with config.json beside it), by content. 0 or -1 + error. */
int llama_model_load(const char* path, llama_model* model, char* error, size_t error_bytes);
int llama_model_load_gguf(const char* path, llama_model* model, char* error, size_t error_bytes);
int llama_model_load_safetensors(const char* path, llama_model* model, char* error, size_t error_bytes);
void llama_model_free(llama_model* model);

/* Checks a config for values the forward pass cannot handle. */
int llama_config_validate(const llama_config* config, char* error, size_t error_bytes);
/* Allocates every weight of `config` (dense, uninitialised). */
int llama_model_allocate(llama_model* model, const llama_config* config);

/* Turns a dense layer into int4 Marlin from codes (k x n) + scales
 * (ceil(k/g) x n fp16): packs them and refreshes `weight` with the
 * dequantized values. 0, or -1 + error. */
int llama_linear_set_int4(llama_linear* linear, const uint8_t* codes, const uint16_t* scales,
                          int group_size, char* error, size_t error_bytes);
/* Same from already packed data (copied). */
int llama_linear_set_packed(llama_linear* linear, const uint32_t* packed_b, const uint16_t* packed_scales,
                            int group_size, char* error, size_t error_bytes);

/* Writes / reads our 4-bit checkpoint format (see checkpoint.c). */
int llama_checkpoint_save(const llama_model* model, const char* path, char* error, size_t error_bytes);
int llama_checkpoint_load(const char* path, llama_model* model, char* error, size_t error_bytes);

/* Named shape presets for `bench`: smollm2-135m, llama2-7b, llama3-8b, llama2-13b. */
int llama_config_preset(const char* name, llama_config* config);

/* Parameter count of the linear layers (what int4 quantizes). */
int64_t llama_linear_parameters(const llama_config* config);

#endif /* LLAMA_MODEL_H */
