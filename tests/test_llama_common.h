/*
 * test_llama_common.h: a tiny random Llama shared by the marlin-llama tests.
 * Every dimension is a multiple of 64 where Marlin needs it (qkv 256 x 128,
 * out 128 x 128, gate_up 512 x 128, down 128 x 256), so the GPU test can
 * quantize it too.
 */
#ifndef TEST_LLAMA_COMMON_H
#define TEST_LLAMA_COMMON_H

#include <stdlib.h>

#include "model.h"
#include "test_util.h"

/* 2 layers, dim 128, 4 heads sharing 2 KV heads, ffn 256, vocab 192, tied head;
 * weights ~ N(0, 1/k), norm weights near one. Exits on allocation failure. */
static void test_llama_random_model(llama_model* m) {
    llama_config c = {0};
    c.n_layers = 2; c.dim = 128; c.ffn_dim = 256; c.n_heads = 4; c.n_kv_heads = 2; c.head_dim = 32;
    c.rope_dim = 32; c.vocab_size = 192; c.max_context = 64; c.rope_base = 10000.0f; c.norm_eps = 1e-5f;
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

#endif /* TEST_LLAMA_COMMON_H */
