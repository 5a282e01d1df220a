/*
 * gpu.h: the GPU backend: the same forward pass as cpu.h on a CUDA device.
 *
 * Activations are fp16 between layers (the residual stream stays fp32);
 * dense linear layers run through cuBLAS (cublasGemmEx, fp16 in, fp32
 * accumulate), int4 layers through marlin_matmul; RMSNorm, RoPE, attention
 * over an fp16 KV cache, SwiGLU and the residual adds are small kernels in
 * gpu.cu. The output head stays fp16 (cuBLAS) and its logits are fp32.
 */
#ifndef LLAMA_GPU_H
#define LLAMA_GPU_H

#include <stddef.h>

#include "model.h"

typedef struct llama_gpu llama_gpu;

/* Number of CUDA devices (0 when there is none or the driver is missing). */
int llama_gpu_device_count(void);
/* Name of device 0 into `name`. */
void llama_gpu_device_name(char* name, size_t name_bytes);

/* Uploads `model` (its int4 layers as packed Marlin data, dense ones as fp16)
 * and allocates caches for max_seqs sequences of max_ctx positions and
 * scratch for max_rows rows per call. NULL + error on failure. */
llama_gpu* llama_gpu_create(const llama_model* model, int max_rows, int max_seqs, int max_ctx, char* error,
                            size_t error_bytes);

/* Synthetic weights with the shapes of `config`, drawn on the device:
 * int4 (packed codes and scales, group_size) when use_int4, else fp16. For
 * speed measurements only; the KV cache is filled with random values too. */
llama_gpu* llama_gpu_create_synthetic(const llama_config* config, int use_int4, int group_size, int max_rows,
                                      int max_seqs, int max_ctx, char* error, size_t error_bytes);

/* As llama_cpu_forward. logits: host, n_rows x vocab fp32, or NULL (the
 * head still runs on the device; nothing is copied). Synchronous. */
int llama_gpu_forward(llama_gpu* gpu, const int* tokens, const int* seq_ids, const int* positions, int n_rows,
                      float* logits, char* error, size_t error_bytes);

/* CUDA graphs for calls of up to 64 rows (decode steps), on by default.
 * A failed capture switches them off for this instance and the call runs
 * eagerly; llama_gpu_graphs_enabled says whether they are still on. */
void llama_gpu_set_graphs(llama_gpu* gpu, int enabled);
int llama_gpu_graphs_enabled(const llama_gpu* gpu);

/* For measurements (bench --breakdown): when enabled, a forward call runs
 * only the linear layers, the four of every block and the output head, with
 * the same shapes, order and buffers, and nothing else (no embedding, norms,
 * attention, cache writes or SwiGLU), so its logits are meaningless and the
 * KV cache is left alone. Changing it drops the captured graphs. Off by
 * default. */
void llama_gpu_set_linear_only(llama_gpu* gpu, int enabled);

/* Whether decode-sized calls (up to 8 rows, see kFusedNormMaxRows) of a model
 * whose linear layers are all int4 fold the RMSNorms into the multiplies
 * (marlin_matmul_residual / marlin_matmul_rms_scaled: no norm kernels
 * inside the stack); on by default. The same function either way, up to
 * rounding, as long as the residual stream times the norm weights fits
 * fp16: a folded step whose logits come back non-finite runs again with
 * norm kernels, and the instance turns folding off for good
 * (llama_gpu_fused_norms_enabled then says 0). For measurements. Changing
 * it drops the captured graphs. */
void llama_gpu_set_fused_norms(llama_gpu* gpu, int enabled);
int llama_gpu_fused_norms_enabled(const llama_gpu* gpu);

/* Warps per (head, row) of the attention kernel: 8, 16 or 32, or 0 (the
 * default) to choose by the row count of each call (see attention_warps in
 * gpu.cu). Every size computes the same function; tests run each, and
 * tuning measures them. Returns -1 (and changes nothing) for other values.
 * Changing it drops the captured graphs. */
int llama_gpu_set_attention_warps(llama_gpu* gpu, int warps);
/* Whether llama_gpu_set_attention_warps takes `warps` (needs no GPU). */
int llama_gpu_attention_warps_supported(int warps);

/* Bytes of weights on the device (what one decode step reads). */
size_t llama_gpu_weight_bytes(const llama_gpu* gpu);

void llama_gpu_free(llama_gpu* gpu);

#endif /* LLAMA_GPU_H */
