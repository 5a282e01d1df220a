/*
 * cpu.c: the CPU backend (see cpu.h).
 *
 * Speed matters here: CI runs a perplexity check of a 135M-parameter model on
 * two cores. The matmul keeps a 2-row x 4-token block of 8-wide float
 * accumulators in registers, so each weight row is read from memory once per
 * four tokens and the inner loop is contiguous in k and vectorizes without
 * reassociation (each of the 8 lanes is its own sum). Threads split the
 * output rows; the pool is persistent, so a decode step pays a wake-up per
 * matmul, not a thread creation.
 */
#include "cpu.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- pool -- */

struct llama_thread_pool {
    int n_threads;
    pthread_t* threads;
    pthread_mutex_t mutex;
    pthread_cond_t start;
    pthread_cond_t done;
    unsigned generation;  /* bumped for each job */
    int pending;          /* workers still running the current job */
    int stop;
    void (*fn)(void*, int, int, int);
    void* context;
    int n_items;
};

typedef struct worker_arg {
    llama_thread_pool* pool;
    int index;
} worker_arg;

static void run_share(llama_thread_pool* pool, int index) {
    int n = pool->n_items, t = pool->n_threads;
    int begin = (int)((int64_t)n * index / t), end = (int)((int64_t)n * (index + 1) / t);
    if (end > begin) pool->fn(pool->context, begin, end, index);
}

static void* worker_main(void* p) {
    worker_arg* arg = p;
    llama_thread_pool* pool = arg->pool;
    int index = arg->index;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mutex);
        while (pool->generation == seen && !pool->stop) pthread_cond_wait(&pool->start, &pool->mutex);
        if (pool->stop) {
            pthread_mutex_unlock(&pool->mutex);
            return NULL;
        }
        seen = pool->generation;
        pthread_mutex_unlock(&pool->mutex);
        run_share(pool, index);
        pthread_mutex_lock(&pool->mutex);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->mutex);
    }
}

llama_thread_pool* llama_thread_pool_create(int n_threads) {
    if (n_threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = online > 0 ? (int)online : 1;
    }
    if (n_threads > 256) n_threads = 256;
    llama_thread_pool* pool = calloc(1, sizeof(*pool));
    if (!pool) return NULL;
    pool->n_threads = n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->start, NULL);
    pthread_cond_init(&pool->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg* arg = malloc(sizeof(*arg));
        if (arg) {
            arg->pool = pool;
            arg->index = i;
        }
        if (!arg || pthread_create(&pool->threads[i], NULL, worker_main, arg) != 0) {
            free(arg);
            pool->n_threads = i; /* run with the workers we have */
            break;
        }
    }
    return pool;
}

void llama_thread_pool_free(llama_thread_pool* pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->start);
    pthread_cond_destroy(&pool->done);
    free(pool->threads);
    free(pool);
}

int llama_thread_pool_size(const llama_thread_pool* pool) { return pool ? pool->n_threads : 1; }

void llama_parallel_for(llama_thread_pool* pool, int n_items, void (*fn)(void*, int, int, int), void* context) {
    if (n_items <= 0) return;
    if (!pool || pool->n_threads == 1 || n_items == 1) {
        fn(context, 0, n_items, 0);
        return;
    }
    pthread_mutex_lock(&pool->mutex);
    pool->fn = fn;
    pool->context = context;
    pool->n_items = n_items;
    pool->pending = pool->n_threads - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mutex);
    run_share(pool, 0);
    pthread_mutex_lock(&pool->mutex);
    while (pool->pending > 0) pthread_cond_wait(&pool->done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
}

/* ----------------------------------------------------------- matmul -- */

enum { LANES = 8, ROW_BLOCK = 2, TOKEN_BLOCK = 4 };

/* ROWS x TOKENS dot products of length k; k_main = k rounded down to LANES. */
static inline void dot_block(const float* X, const float* W, float* Y, int k, int n, int rows, int tokens) {
    float acc[ROW_BLOCK][TOKEN_BLOCK][LANES];
    memset(acc, 0, sizeof(acc));
    int k_main = k - k % LANES;
    for (int kk = 0; kk < k_main; kk += LANES) {
        for (int r = 0; r < rows; r++) {
            const float* w = W + (size_t)r * k + kk;
            for (int t = 0; t < tokens; t++) {
                const float* x = X + (size_t)t * k + kk;
                for (int l = 0; l < LANES; l++) acc[r][t][l] += w[l] * x[l];
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        for (int t = 0; t < tokens; t++) {
            float sum = 0.0f;
            for (int l = 0; l < LANES; l++) sum += acc[r][t][l];
            for (int kk = k_main; kk < k; kk++) sum += W[(size_t)r * k + kk] * X[(size_t)t * k + kk];
            Y[(size_t)t * n + r] = sum;
        }
    }
}

typedef struct matmul_job {
    const float* X; /* m x k */
    const float* W; /* n x k */
    float* Y;       /* m x n */
    int m, n, k;
} matmul_job;

static void matmul_rows(void* p, int begin, int end, int thread) {
    (void)thread;
    const matmul_job* job = p;
    int m = job->m, n = job->n, k = job->k;
    for (int j = begin; j < end; j += ROW_BLOCK) {
        int rows = end - j < ROW_BLOCK ? end - j : ROW_BLOCK;
        const float* W = job->W + (size_t)j * k;
        int t = 0;
        /* constant block sizes in the common case let the compiler unroll fully */
        if (rows == ROW_BLOCK) {
            for (; t + TOKEN_BLOCK <= m; t += TOKEN_BLOCK)
                dot_block(job->X + (size_t)t * k, W, job->Y + (size_t)t * n + j, k, n, ROW_BLOCK, TOKEN_BLOCK);
            for (; t < m; t++) dot_block(job->X + (size_t)t * k, W, job->Y + (size_t)t * n + j, k, n, ROW_BLOCK, 1);
        } else {
            for (; t < m; t++) dot_block(job->X + (size_t)t * k, W, job->Y + (size_t)t * n + j, k, n, 1, 1);
        }
    }
}

void llama_cpu_matmul(llama_thread_pool* pool, const float* X, const float* W, float* Y, int m, int n, int k) {
    matmul_job job = {X, W, Y, m, n, k};
    llama_parallel_for(pool, n, matmul_rows, &job);
}

/* ------------------------------------------------------- the block -- */

void llama_rmsnorm(const float* x, const float* weight, float* out, int n_rows, int dim, float eps) {
    for (int r = 0; r < n_rows; r++) {
        const float* xr = x + (size_t)r * dim;
        float* o = out + (size_t)r * dim;
        double sum = 0.0;
        for (int i = 0; i < dim; i++) sum += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(sum / dim + eps));
        for (int i = 0; i < dim; i++) o[i] = xr[i] * inv * weight[i];
    }
}

/* Rotates the adjacent pairs (2i, 2i+1), i < rope_dim/2, of each of n_heads
 * heads of `v` by position * base^(-2i/rope_dim) (GGUF row order). */
static void apply_rope(float* v, int n_heads, int head_dim, int rope_dim, float base, int position) {
    for (int i = 0; i < rope_dim / 2; i++) {
        double angle = position * pow((double)base, -2.0 * i / rope_dim);
        float c = (float)cos(angle), s = (float)sin(angle);
        for (int h = 0; h < n_heads; h++) {
            float* p = v + (size_t)h * head_dim + 2 * i;
            float a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

typedef struct attention_job {
    llama_cpu_state* st;
    int layer;
    const int* seq_ids;
    const int* positions;
} attention_job;

static float* cache_row(const llama_cpu_state* st, float* cache, int layer, int seq, int pos) {
    const llama_config* c = &st->model->config;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    return cache + (((size_t)layer * st->max_seqs + seq) * st->max_ctx + pos) * kv_dim;
}

/* Items are (row, head) pairs: scores over the cached keys, softmax in
 * float with the max subtracted, then the weighted sum of the values. */
static void attention_items(void* p, int begin, int end, int thread) {
    attention_job* job = p;
    llama_cpu_state* st = job->st;
    const llama_config* c = &st->model->config;
    int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads;
    int qkv_stride = q_dim + 2 * kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
    float* scores = st->scores + (size_t)thread * st->max_ctx;
    for (int item = begin; item < end; item++) {
        int row = item / c->n_heads, head = item % c->n_heads, kv_head = head / group;
        int seq = job->seq_ids[row], pos = job->positions[row];
        const float* q = st->qkv + (size_t)row * qkv_stride + (size_t)head * hd;
        float max_score = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            const float* key = cache_row(st, st->key_cache, job->layer, seq, t) + (size_t)kv_head * hd;
            float dot = 0.0f;
            for (int i = 0; i < hd; i++) dot += q[i] * key[i];
            scores[t] = dot * scale;
            if (scores[t] > max_score) max_score = scores[t];
        }
        float total = 0.0f;
        for (int t = 0; t <= pos; t++) {
            scores[t] = expf(scores[t] - max_score);
            total += scores[t];
        }
        float* out = st->attn + (size_t)row * q_dim + (size_t)head * hd;
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float* value = cache_row(st, st->value_cache, job->layer, seq, t) + (size_t)kv_head * hd;
            float w = scores[t] / total;
            for (int i = 0; i < hd; i++) out[i] += w * value[i];
        }
    }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

void llama_cpu_layer(llama_cpu_state* st, int layer, float* x, const int* seq_ids, const int* positions,
                     int n_rows, llama_linear_hook hook, void* hook_context) {
    const llama_config* c = &st->model->config;
    const llama_layer* L = &st->model->layers[layer];
    int dim = c->dim, hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd, ffn = c->ffn_dim;
    int qkv_stride = q_dim + 2 * kv_dim;

    llama_rmsnorm(x, L->attn_norm, st->xn, n_rows, dim, c->norm_eps);
    if (hook) hook(hook_context, layer, LLAMA_LINEAR_QKV, st->xn, n_rows);
    llama_cpu_matmul(st->pool, st->xn, L->qkv.weight, st->qkv, n_rows, qkv_stride, dim);
    for (int r = 0; r < n_rows; r++) {
        float* q = st->qkv + (size_t)r * qkv_stride;
        apply_rope(q, c->n_heads, hd, c->rope_dim, c->rope_base, positions[r]);
        apply_rope(q + q_dim, c->n_kv_heads, hd, c->rope_dim, c->rope_base, positions[r]);
        memcpy(cache_row(st, st->key_cache, layer, seq_ids[r], positions[r]), q + q_dim, (size_t)kv_dim * sizeof(float));
        memcpy(cache_row(st, st->value_cache, layer, seq_ids[r], positions[r]), q + q_dim + kv_dim,
               (size_t)kv_dim * sizeof(float));
    }
    attention_job job = {st, layer, seq_ids, positions};
    llama_parallel_for(st->pool, n_rows * c->n_heads, attention_items, &job);
    if (hook) hook(hook_context, layer, LLAMA_LINEAR_OUT, st->attn, n_rows);
    llama_cpu_matmul(st->pool, st->attn, L->out.weight, st->proj, n_rows, dim, q_dim);
    for (size_t i = 0; i < (size_t)n_rows * dim; i++) x[i] += st->proj[i];

    llama_rmsnorm(x, L->ffn_norm, st->xn, n_rows, dim, c->norm_eps);
    if (hook) hook(hook_context, layer, LLAMA_LINEAR_GATE_UP, st->xn, n_rows);
    llama_cpu_matmul(st->pool, st->xn, L->gate_up.weight, st->gate_up, n_rows, 2 * ffn, dim);
    for (int r = 0; r < n_rows; r++) {
        const float* g = st->gate_up + (size_t)r * 2 * ffn;
        float* h = st->hidden + (size_t)r * ffn;
        for (int i = 0; i < ffn; i++) h[i] = silu(g[i]) * g[ffn + i];
    }
    if (hook) hook(hook_context, layer, LLAMA_LINEAR_DOWN, st->hidden, n_rows);
    llama_cpu_matmul(st->pool, st->hidden, L->down.weight, st->proj, n_rows, dim, ffn);
    for (size_t i = 0; i < (size_t)n_rows * dim; i++) x[i] += st->proj[i];
}

int llama_cpu_forward(llama_cpu_state* st, const int* tokens, const int* seq_ids, const int* positions, int n_rows,
                      float* logits) {
    const llama_config* c = &st->model->config;
    if (n_rows < 1 || n_rows > st->max_rows) return -1;
    for (int r = 0; r < n_rows; r++)
        if (tokens[r] < 0 || tokens[r] >= c->vocab_size || seq_ids[r] < 0 || seq_ids[r] >= st->max_seqs ||
            positions[r] < 0 || positions[r] >= st->max_ctx)
            return -1;
    for (int r = 0; r < n_rows; r++)
        memcpy(st->x + (size_t)r * c->dim, st->model->embedding + (size_t)tokens[r] * c->dim,
               (size_t)c->dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) llama_cpu_layer(st, l, st->x, seq_ids, positions, n_rows, NULL, NULL);
    if (logits) {
        llama_rmsnorm(st->x, st->model->output_norm, st->xn, n_rows, c->dim, c->norm_eps);
        llama_cpu_matmul(st->pool, st->xn, st->model->output, logits, n_rows, c->vocab_size, c->dim);
    }
    return 0;
}

int llama_cpu_state_init(llama_cpu_state* st, const llama_model* model, llama_thread_pool* pool, int max_rows,
                         int max_seqs, int max_ctx) {
    memset(st, 0, sizeof(*st));
    const llama_config* c = &model->config;
    if (max_rows < 1 || max_seqs < 1 || max_ctx < 1) return -1;
    st->model = model;
    st->pool = pool;
    st->max_rows = max_rows;
    st->max_seqs = max_seqs;
    st->max_ctx = max_ctx;
    size_t rows = (size_t)max_rows;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * max_seqs * max_ctx * kv_dim;
    st->key_cache = malloc(cache * sizeof(float));
    st->value_cache = malloc(cache * sizeof(float));
    st->x = malloc(rows * c->dim * sizeof(float));
    st->xn = malloc(rows * c->dim * sizeof(float));
    st->qkv = malloc(rows * (q_dim + 2 * kv_dim) * sizeof(float));
    st->attn = malloc(rows * q_dim * sizeof(float));
    st->proj = malloc(rows * c->dim * sizeof(float));
    st->gate_up = malloc(rows * 2 * c->ffn_dim * sizeof(float));
    st->hidden = malloc(rows * c->ffn_dim * sizeof(float));
    st->scores = malloc((size_t)llama_thread_pool_size(pool) * max_ctx * sizeof(float));
    if (!st->key_cache || !st->value_cache || !st->x || !st->xn || !st->qkv || !st->attn || !st->proj ||
        !st->gate_up || !st->hidden || !st->scores) {
        llama_cpu_state_free(st);
        return -1;
    }
    return 0;
}

void llama_cpu_state_free(llama_cpu_state* st) {
    free(st->key_cache);
    free(st->value_cache);
    free(st->x);
    free(st->xn);
    free(st->qkv);
    free(st->attn);
    free(st->proj);
    free(st->gate_up);
    free(st->hidden);
    free(st->scores);
    memset(st, 0, sizeof(*st));
}
