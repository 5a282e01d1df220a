/*
 * quantize.h: turns a model's linear layers into int4 Marlin layers, by
 * round-to-nearest or by GPTQ calibrated layer by layer (see quantize.c).
 */
#ifndef LLAMA_QUANTIZE_H
#define LLAMA_QUANTIZE_H

#include "cpu.h"
#include "marlin_gptq.h"
#include "model.h"

enum llama_quantize_method { LLAMA_QUANTIZE_RTN = 0, LLAMA_QUANTIZE_GPTQ = 1 };

typedef struct llama_quantize_options {
    enum llama_quantize_method method;
    int group_size;              /* 32, 64, 128 or -1 for one group per column (k) */
    const int* calib_tokens;     /* GPTQ: calibration token stream */
    int n_calib_tokens;
    int n_seqs;                  /* GPTQ: calibration windows ... */
    int seq_len;                 /* ... of this many tokens, evenly spaced over the stream */
    marlin_gptq_options gptq;
    int verbose;                 /* progress lines on stderr */
} llama_quantize_options;

/* Quantizes every linear layer of `model` in place. 0, or -1 + error. */
int llama_quantize_model(llama_model* model, const llama_quantize_options* options, llama_thread_pool* pool,
                         char* error, size_t error_bytes);

#endif /* LLAMA_QUANTIZE_H */
