/*
 * cpu.h: the CPU backend: the Llama forward pass in fp32 on the host,
 * multithreaded with pthreads over output rows.
 *
 * One call processes `n_rows` tokens, each with its own sequence slot and
 * position: a prompt (one sequence, consecutive positions), a decode step of
 * a batch (several sequences, one position each), or any mix. Each row first
 * writes its key and value into the cache at (sequence, position), then
 * attends to positions 0..position of its sequence.
 */
#ifndef LLAMA_CPU_H
#define LLAMA_CPU_H

#include "model.h"

typedef struct llama_thread_pool llama_thread_pool;

/* n_threads <= 0: one per online CPU. NULL when out of memory. */
llama_thread_pool* llama_thread_pool_create(int n_threads);
void llama_thread_pool_free(llama_thread_pool* pool);
int llama_thread_pool_size(const llama_thread_pool* pool);
/* Runs fn(context, begin, end, thread) over [0, n_items) split into one contiguous
 * range per thread, and waits for all of them. */
void llama_parallel_for(llama_thread_pool* pool, int n_items,
                        void (*fn)(void* context, int begin, int end, int thread),
                        void* context);

/* Y[m x n] = X[m x k] . W^T, W n x k row-major; threads split the n rows. */
void llama_cpu_matmul(llama_thread_pool* pool, const float* X, const float* W, float* Y, int m, int n, int k);

typedef struct llama_cpu_state {
    const llama_model* model;
    llama_thread_pool* pool;
    int max_rows;       /* rows one forward call may take */
    int max_seqs;       /* sequence slots in the cache */
    int max_ctx;        /* positions per sequence */
    float* key_cache;   /* n_layers x max_seqs x max_ctx x kv_dim */
    float* value_cache; /* same */
    /* scratch, max_rows rows each */
    float* x;           /* max_rows x dim: residual stream */
    float* xn;          /* max_rows x dim: normalised input of a sub-layer */
    float* qkv;         /* max_rows x (q_dim + 2 kv_dim) */
    float* attn;        /* max_rows x q_dim */
    float* proj;        /* max_rows x dim */
    float* gate_up;     /* max_rows x 2 ffn_dim */
    float* hidden;      /* max_rows x ffn_dim */
    float* scores;      /* n_threads x max_ctx */
} llama_cpu_state;

int llama_cpu_state_init(llama_cpu_state* st, const llama_model* model, llama_thread_pool* pool, int max_rows,
                         int max_seqs, int max_ctx);
void llama_cpu_state_free(llama_cpu_state* st);

/*
 * Runs the model on n_rows tokens.
 *   tokens, seq_ids, positions  n_rows each (position < max_ctx, seq < max_seqs)
 *   logits  out: n_rows x vocab fp32, or NULL (fills the caches only)
 * Returns 0, or -1 when an argument is out of range (nothing computed).
 */
int llama_cpu_forward(llama_cpu_state* st, const int* tokens, const int* seq_ids, const int* positions,
                      int n_rows, float* logits);

/* The four linear layers of a block, in the order the block applies them. */
enum llama_linear_id { LLAMA_LINEAR_QKV = 0, LLAMA_LINEAR_OUT, LLAMA_LINEAR_GATE_UP, LLAMA_LINEAR_DOWN };

/* Called just before a block applies one of its linear layers, with that
 * layer's input (n_rows x k); the hook may replace the layer's weights (the
 * layer-by-layer GPTQ does), and the block then uses the new ones. */
typedef void (*llama_linear_hook)(void* context, int layer, enum llama_linear_id which, const float* input,
                                  int n_rows);

/* Runs block `layer` on x (n_rows x dim) in place: the building block of
 * llama_cpu_forward, exposed for the layer-by-layer GPTQ calibration. */
void llama_cpu_layer(llama_cpu_state* st, int layer, float* x, const int* seq_ids, const int* positions,
                     int n_rows, llama_linear_hook hook, void* hook_context);

/* out[i] = x[i] / rms(x) * weight[i] for each of n_rows rows of dim floats. */
void llama_rmsnorm(const float* x, const float* weight, float* out, int n_rows, int dim, float eps);

#endif /* LLAMA_CPU_H */
