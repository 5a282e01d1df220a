/*
 * gptq.c: GPTQ on the CPU (marlin_gptq.h describes the algorithm step by step).
 *
 * Data layout, chosen so every inner loop runs over contiguous memory:
 *   Wt   k x n float: the weights transposed (one row per input feature, in
 *        the order columns are visited), so "column i of W" is a contiguous
 *        row of n floats and the error feedback is a row AXPY;
 *   D    k x k double: first the permuted, reversed, damped H, then its lower
 *        Cholesky factor L in place, then L^-1 in place. With P the reversal,
 *        P H P = L L^T means H = (P L P)(P L P)^T with P L P upper, so the
 *        upper Cholesky factor of H^-1 that GPTQ needs is U = P L^-1 P:
 *        U[i][j] = D[k-1-i][k-1-j]. One factorisation and one triangular
 *        inverse (k^3/3 multiply-adds), instead of inverting H and factoring
 *        the inverse again.
 *   Ublk block_size x k float: rows i1..i2 of U, read per block.
 *   E    block_size x n float: the scaled errors of the block's columns, which
 *        the lazy update multiplies into the columns after the block.
 * No external BLAS: the factorisation and inverse are plain loops in double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gptq_internal.h"

/* ------------------------------------------------------------- options -- */

void marlin_gptq_default_options(marlin_gptq_options* options) {
    if (!options) return;
    options->damp_fraction = 0.01f;
    options->block_size = 128;
    options->act_order = 0;
    options->clip_grid_points = 20;
    options->clip_min_shrink = 0.5f;
}

marlin_status marlin_gptq_check_options(const marlin_gptq_options* o) {
    if (!o) return MARLIN_STATUS_NULL_POINTER;
    if (!isfinite(o->damp_fraction) || o->damp_fraction < 0.0f) return MARLIN_STATUS_INVALID_VALUE;
    if (o->block_size < 1) return MARLIN_STATUS_INVALID_VALUE;
    if (o->act_order != 0 && o->act_order != 1) return MARLIN_STATUS_INVALID_VALUE;
    if (o->clip_grid_points < 1 || o->clip_grid_points > GPTQ_MAX_GRID_POINTS) return MARLIN_STATUS_INVALID_VALUE;
    if (!(o->clip_min_shrink > 0.0f && o->clip_min_shrink <= 1.0f)) return MARLIN_STATUS_INVALID_VALUE;
    return MARLIN_STATUS_SUCCESS;
}

marlin_status gptq_resolve_options(const marlin_gptq_options* options, marlin_gptq_options* resolved) {
    if (options) *resolved = *options;
    else marlin_gptq_default_options(resolved);
    return marlin_gptq_check_options(resolved);
}

double gptq_damping_fraction(const marlin_gptq_options* options, int attempt) {
    double fraction = options->damp_fraction;
    if (attempt == 0) return fraction;
    double floor_value = attempt == 1 ? 1e-2 : 1e-1;
    double raised = fraction * (attempt == 1 ? 10.0 : 100.0);
    return raised > floor_value ? raised : floor_value;
}

void gptq_shrink_factors(const marlin_gptq_options* options, float* factors) {
    int points = options->clip_grid_points;
    for (int p = 0; p < points; p++)
        factors[p] = points == 1 ? 1.0f
                                 : (float)(1.0 - (1.0 - (double)options->clip_min_shrink) * p / (points - 1));
}

/* ------------------------------------------------------- column order -- */

typedef struct {
    float key;
    int index;
} column_key;

/* Decreasing key, then increasing index: a total order, so the sort is deterministic. */
static int compare_column_keys(const void* a, const void* b) {
    const column_key* x = a;
    const column_key* y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

marlin_status gptq_column_order(const float* diagonal, int k, int act_order, int* order) {
    for (int i = 0; i < k; i++) order[i] = i;
    if (!act_order) return MARLIN_STATUS_SUCCESS;
    column_key* keys = malloc((size_t)k * sizeof *keys);
    if (!keys) return MARLIN_STATUS_OUT_OF_MEMORY;
    for (int i = 0; i < k; i++) {
        keys[i].key = diagonal[i] == 0.0f ? 1.0f : diagonal[i];
        keys[i].index = i;
    }
    qsort(keys, (size_t)k, sizeof *keys, compare_column_keys);
    for (int i = 0; i < k; i++) order[i] = keys[i].index;
    free(keys);
    return MARLIN_STATUS_SUCCESS;
}

int gptq_block_end(int begin, int k, int block_size, int group_size, int static_groups) {
    int end = begin + block_size < k ? begin + block_size : k;
    if (static_groups) return end;
    /* A dynamic group's scale is chosen from the weights as updated so far.
     * Columns inside the current block get the block's updates at once,
     * columns after it only at the block's end; so a group that starts
     * inside the block must also end inside it. */
    for (int start = (begin / group_size + 1) * group_size; start < end; start += group_size) {
        int group_end = start + group_size < k ? start + group_size : k;
        if (group_end > end) return start;
    }
    return end;
}

/* --------------------------------------------------------- quantization -- */

static float round_to_fp16(float x) { return marlin_fp16_to_float(marlin_fp16_from_float(x)); }

/* Code of w with scale s, as marlin_quantize_rtn computes it. */
static uint8_t quantize_code(float w, float s) {
    float q = rintf(w / s) + (float)MARLIN_ZERO_CODE;
    if (q < 0.0f) q = 0.0f;
    if (q > 15.0f) q = 15.0f;
    return (uint8_t)q;
}

/* The weight the kernel multiplies by: (q - 8) * s rounded to fp16. */
static float dequantize_code(uint8_t q, float s) {
    return round_to_fp16((float)((int)q - MARLIN_ZERO_CODE) * s);
}

/* fp16 bits of the scale shrink * max_abs / 7; 1.0 where that is 0 (all-zero
 * group, or fp16 underflow), as marlin_quantize_rtn does. */
static uint16_t candidate_scale_bits(float shrink, float max_abs) {
    uint16_t bits = marlin_fp16_from_float(shrink * max_abs / 7.0f);
    return marlin_fp16_to_float(bits) == 0.0f ? marlin_fp16_from_float(1.0f) : bits;
}

/* Scratch for choosing the scales of one group, for all n outputs. */
typedef struct {
    const float* shrink;   /* grid_points shrink factors, 1.0 first */
    int grid_points;
    float* max_abs;        /* n */
    float* candidate;      /* n x grid_points: candidate scales */
    double* squared_error; /* n x grid_points */
} scale_search;

/*
 * Chooses each output's scale for a group made of the Wt rows `rows`
 * (count of them): the grid candidate with the least squared error.
 *   Wt     k x n;  rows  count row indices into Wt
 *   bits   out: n fp16 scales
 * MARLIN_STATUS_INVALID_VALUE if a scale overflows fp16.
 */
static marlin_status choose_group_scales(const float* Wt, int n, const int* rows, int count,
                                         const scale_search* search, uint16_t* bits) {
    int points = search->grid_points;
    for (int r = 0; r < n; r++) search->max_abs[r] = 0.0f;
    for (int c = 0; c < count; c++) {
        const float* w = Wt + (size_t)rows[c] * n;
        for (int r = 0; r < n; r++) search->max_abs[r] = fmaxf(search->max_abs[r], fabsf(w[r]));
    }
    for (int r = 0; r < n; r++) {
        if (isinf(marlin_fp16_to_float(marlin_fp16_from_float(search->max_abs[r] / 7.0f))))
            return MARLIN_STATUS_INVALID_VALUE;
        for (int p = 0; p < points; p++) {
            search->candidate[(size_t)r * points + p] =
                marlin_fp16_to_float(candidate_scale_bits(search->shrink[p], search->max_abs[r]));
            search->squared_error[(size_t)r * points + p] = 0.0;
        }
    }
    if (points > 1) {
        for (int c = 0; c < count; c++) {
            const float* w = Wt + (size_t)rows[c] * n;
            for (int r = 0; r < n; r++) {
                const float* scale = search->candidate + (size_t)r * points;
                double* error = search->squared_error + (size_t)r * points;
                for (int p = 0; p < points; p++) {
                    float d = w[r] - dequantize_code(quantize_code(w[r], scale[p]), scale[p]);
                    error[p] += (double)d * (double)d;
                }
            }
        }
    }
    for (int r = 0; r < n; r++) {
        int best = 0;
        const double* error = search->squared_error + (size_t)r * points;
        for (int p = 1; p < points; p++)
            if (error[p] < error[best]) best = p;
        bits[r] = marlin_fp16_from_float(search->candidate[(size_t)r * points + best]);
    }
    return MARLIN_STATUS_SUCCESS;
}

/* ------------------------------------------------------ linear algebra -- */

/* Sum of x[i] * y[i], four partial sums for instruction-level parallelism. */
static double dot_double(const double* x, const double* y, int count) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= count; i += 4) {
        s0 += x[i] * y[i];
        s1 += x[i + 1] * y[i + 1];
        s2 += x[i + 2] * y[i + 2];
        s3 += x[i + 3] * y[i + 3];
    }
    for (; i < count; i++) s0 += x[i] * y[i];
    return (s0 + s1) + (s2 + s3);
}

/* In-place lower Cholesky factor of the k x k row-major D (lower triangle
 * read and written). Returns 0 when a pivot is not positive. */
static int cholesky_lower(double* D, int k) {
    for (int i = 0; i < k; i++) {
        double* row_i = D + (size_t)i * k;
        for (int j = 0; j <= i; j++) {
            const double* row_j = D + (size_t)j * k;
            double s = row_i[j] - dot_double(row_i, row_j, j);
            if (j == i) {
                if (!(s > 0.0) || !isfinite(s)) return 0;
                row_i[i] = sqrt(s);
            } else {
                row_i[j] = s / row_j[j];
            }
        }
    }
    return 1;
}

/* In-place inverse of the lower triangular k x k row-major L, row by row:
 * L[i][i] X[i][j] = delta_ij - sum_{m<i} L[i][m] X[m][j], written as AXPYs of
 * the rows of X already computed, so L[i][m] is read just before its slot
 * is overwritten. */
static void invert_lower(double* D, int k) {
    for (int i = 0; i < k; i++) {
        double* row = D + (size_t)i * k;
        double diagonal = row[i];
        for (int m = 0; m < i; m++) {
            double t = row[m];
            const double* x = D + (size_t)m * k;
            row[m] = 0.0;
            for (int j = 0; j <= m; j++) row[j] -= t * x[j];
        }
        double inverse = 1.0 / diagonal;
        for (int j = 0; j < i; j++) row[j] *= inverse;
        row[i] = inverse;
    }
}

/* H[x][y] from the lower triangle of the row-major H. */
static float hessian_at(const float* H, int k, int x, int y) {
    return x >= y ? H[(size_t)x * k + y] : H[(size_t)y * k + x];
}

/*
 * D := P Hp P + damp I with Hp the H in visiting order (dead inputs: 1 on the
 * diagonal, 0 off it), then L^-1 of its Cholesky factor, trying more damping
 * while it is not positive definite.
 */
static marlin_status upper_inverse_factor(const float* H, int k, const int* order, const marlin_gptq_options* o,
                                          double* D) {
    double mean_diagonal = 0.0;
    for (int i = 0; i < k; i++) {
        float h = H[(size_t)i * k + i];
        mean_diagonal += h == 0.0f ? 1.0 : (double)h;
    }
    mean_diagonal /= k;
    for (int attempt = 0; attempt < GPTQ_DAMPING_ATTEMPTS; attempt++) {
        double damp = gptq_damping_fraction(o, attempt) * mean_diagonal;
        for (int a = 0; a < k; a++) {
            int x = order[k - 1 - a];
            int x_dead = H[(size_t)x * k + x] == 0.0f;
            double* row = D + (size_t)a * k;
            for (int b = 0; b < a; b++) {
                int y = order[k - 1 - b];
                row[b] = (x_dead || H[(size_t)y * k + y] == 0.0f) ? 0.0 : (double)hessian_at(H, k, x, y);
            }
            row[a] = (x_dead ? 1.0 : (double)H[(size_t)x * k + x]) + damp;
        }
        if (cholesky_lower(D, k)) {
            invert_lower(D, k);
            return MARLIN_STATUS_SUCCESS;
        }
    }
    return MARLIN_STATUS_NOT_POSITIVE_DEFINITE;
}

/* ------------------------------------------------------------- Hessian -- */

static float load_value(const void* data, int is_fp16, size_t index) {
    return is_fp16 ? marlin_fp16_to_float(((const uint16_t*)data)[index]) : ((const float*)data)[index];
}

static int all_finite(const void* data, int is_fp16, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (!isfinite(load_value(data, is_fp16, i))) return 0;
    return 1;
}

/* Rows of X folded per pass over H: the transposed chunk (k x 64 doubles)
 * stays in cache while H is read and written once per chunk. */
#define HESSIAN_CHUNK_ROWS 64

static marlin_status hessian_accumulate(float* H, int64_t* rows_seen, const void* X, int x_is_fp16, int rows,
                                        int k) {
    if (!H || !rows_seen || (!X && rows > 0)) return MARLIN_STATUS_NULL_POINTER;
    if (k < 1 || rows < 0 || *rows_seen < 0) return MARLIN_STATUS_INVALID_VALUE;
    if (rows == 0) return MARLIN_STATUS_SUCCESS;
    if (!all_finite(X, x_is_fp16, (size_t)rows * k)) return MARLIN_STATUS_INVALID_VALUE;
    double* chunk = malloc((size_t)k * HESSIAN_CHUNK_ROWS * sizeof *chunk); /* k x chunk_rows */
    if (!chunk) return MARLIN_STATUS_OUT_OF_MEMORY;
    for (int first = 0; first < rows; first += HESSIAN_CHUNK_ROWS) {
        int count = rows - first < HESSIAN_CHUNK_ROWS ? rows - first : HESSIAN_CHUNK_ROWS;
        for (int r = 0; r < count; r++)
            for (int i = 0; i < k; i++)
                chunk[(size_t)i * count + r] = load_value(X, x_is_fp16, (size_t)(first + r) * k + i);
        /* H_new = H_old * N / (N + count) + 2 / (N + count) * sum x x^T */
        double total = (double)*rows_seen + count;
        double keep = (double)*rows_seen / total, add = 2.0 / total;
        for (int i = 0; i < k; i++) {
            for (int j = 0; j <= i; j++) {
                double sum = dot_double(chunk + (size_t)i * count, chunk + (size_t)j * count, count);
                float value = (float)(keep * H[(size_t)i * k + j] + add * sum);
                H[(size_t)i * k + j] = value;
                H[(size_t)j * k + i] = value;
            }
        }
        *rows_seen += count;
    }
    free(chunk);
    return MARLIN_STATUS_SUCCESS;
}

marlin_status marlin_hessian_accumulate(float* H, int64_t* rows_seen, const float* X, int rows, int k) {
    return hessian_accumulate(H, rows_seen, X, 0, rows, k);
}

marlin_status marlin_hessian_accumulate_fp16(float* H, int64_t* rows_seen, const uint16_t* X, int rows, int k) {
    return hessian_accumulate(H, rows_seen, X, 1, rows, k);
}

/* ---------------------------------------------------------------- GPTQ -- */

/* Columns of Wt updated together in the lazy update, so the block's errors
 * (block_size x this many floats) stay in cache. */
#define LAZY_UPDATE_COLUMNS 256

/* Wt[j][:] -= sum_b U[i1+b][j] * E[b][:] for every j in [i2, k). */
static void lazy_update(float* Wt, int n, int k, const float* Ublk, const float* E, int i1, int i2) {
    int count = i2 - i1;
    for (int r0 = 0; r0 < n; r0 += LAZY_UPDATE_COLUMNS) {
        int r1 = r0 + LAZY_UPDATE_COLUMNS < n ? r0 + LAZY_UPDATE_COLUMNS : n;
        for (int j = i2; j < k; j++) {
            float* w = Wt + (size_t)j * n;
            for (int b = 0; b < count; b++) {
                float u = Ublk[(size_t)b * k + j];
                const float* e = E + (size_t)b * n;
                for (int r = r0; r < r1; r++) w[r] -= e[r] * u;
            }
        }
    }
}

typedef struct {
    int* order;         /* k: original column visited i-th */
    int* position;      /* k: inverse of order */
    int* identity;      /* k: 0..k-1, row lists of dynamic groups */
    float* diagonal;    /* k: H_ii */
    float* Wt;          /* k x n */
    double* D;          /* k x k */
    float* Ublk;        /* block_size x k */
    float* E;           /* block_size x n */
    float* column_scale;/* n */
    uint8_t* codes;     /* k x n, original order */
    uint16_t* scales;   /* ceil(k/g) x n */
    float* shrink;      /* grid points */
    float* max_abs;     /* n */
    float* candidate;   /* n x grid points */
    double* squared_error; /* n x grid points */
} gptq_buffers;

static void free_buffers(gptq_buffers* b) {
    free(b->order); free(b->position); free(b->identity); free(b->diagonal); free(b->Wt); free(b->D); free(b->Ublk); free(b->E);
    free(b->column_scale); free(b->codes); free(b->scales); free(b->shrink); free(b->max_abs);
    free(b->candidate); free(b->squared_error);
}

static marlin_status gptq_quantize(const void* W, int w_is_fp16, int n, int k, const float* H, int group_size,
                                   const marlin_gptq_options* options, uint8_t* codes, uint16_t* scales) {
    if (!W || !H || !codes || !scales) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = marlin_check_weight_shape(k, n, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    marlin_gptq_options o;
    status = gptq_resolve_options(options, &o);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    if (!all_finite(W, w_is_fp16, (size_t)n * k)) return MARLIN_STATUS_INVALID_VALUE;
    for (int i = 0; i < k; i++)
        for (int j = 0; j <= i; j++)
            if (!isfinite(H[(size_t)i * k + j])) return MARLIN_STATUS_INVALID_VALUE;

    int block_size = o.block_size < k ? o.block_size : k;
    int points = o.clip_grid_points;
    int scale_rows = marlin_scale_rows(k, group_size);
    gptq_buffers b = {0};
    b.order = malloc((size_t)k * sizeof *b.order);
    b.position = malloc((size_t)k * sizeof *b.position);
    b.identity = malloc((size_t)k * sizeof *b.identity);
    b.diagonal = calloc((size_t)k, sizeof *b.diagonal);
    b.Wt = malloc((size_t)k * n * sizeof *b.Wt);
    b.D = malloc((size_t)k * k * sizeof *b.D);
    b.Ublk = malloc((size_t)block_size * k * sizeof *b.Ublk);
    b.E = malloc((size_t)block_size * n * sizeof *b.E);
    b.column_scale = malloc((size_t)n * sizeof *b.column_scale);
    b.codes = malloc((size_t)k * n);
    b.scales = malloc(marlin_scale_bytes(k, n, group_size));
    b.shrink = malloc((size_t)points * sizeof *b.shrink);
    b.max_abs = malloc((size_t)n * sizeof *b.max_abs);
    b.candidate = malloc((size_t)n * points * sizeof *b.candidate);
    b.squared_error = malloc((size_t)n * points * sizeof *b.squared_error);
    if (!b.order || !b.position || !b.identity || !b.diagonal || !b.Wt || !b.D || !b.Ublk || !b.E || !b.column_scale ||
        !b.codes || !b.scales || !b.shrink || !b.max_abs || !b.candidate || !b.squared_error) {
        free_buffers(&b);
        return MARLIN_STATUS_OUT_OF_MEMORY;
    }
    gptq_shrink_factors(&o, b.shrink);
    scale_search search = {b.shrink, points, b.max_abs, b.candidate, b.squared_error};

    float* diagonal = b.diagonal;
    for (int i = 0; i < k; i++) diagonal[i] = H[(size_t)i * k + i];
    status = gptq_column_order(diagonal, k, o.act_order, b.order);
    if (status != MARLIN_STATUS_SUCCESS) goto done;
    for (int i = 0; i < k; i++) {
        b.position[b.order[i]] = i;
        b.identity[i] = i;
    }
    /* Wt in visiting order; dead inputs' weights zeroed. */
    for (int r = 0; r < n; r++)
        for (int c = 0; c < k; c++)
            b.Wt[(size_t)b.position[c] * n + r] =
                diagonal[c] == 0.0f ? 0.0f : load_value(W, w_is_fp16, (size_t)r * k + c);

    /* Static groups: every scale fixed up front from the weights in the
     * original column order (the Wt rows position[c0..c1)). */
    if (o.act_order) {
        for (int g = 0; g < scale_rows; g++) {
            int c0 = g * group_size, c1 = c0 + group_size < k ? c0 + group_size : k;
            status = choose_group_scales(b.Wt, n, b.position + c0, c1 - c0, &search, b.scales + (size_t)g * n);
            if (status != MARLIN_STATUS_SUCCESS) goto done;
        }
    }

    status = upper_inverse_factor(H, k, b.order, &o, b.D);
    if (status != MARLIN_STATUS_SUCCESS) goto done;

    for (int i1 = 0; i1 < k;) {
        int i2 = gptq_block_end(i1, k, block_size, group_size, o.act_order);
        /* Ublk[b][j] = U[i1+b][j] = D[k-1-(i1+b)][k-1-j] for j >= i1 + b. */
        for (int i = i1; i < i2; i++) {
            const double* source = b.D + (size_t)(k - 1 - i) * k;
            float* target = b.Ublk + (size_t)(i - i1) * k;
            for (int j = i; j < k; j++) target[j] = (float)source[k - 1 - j];
        }
        for (int i = i1; i < i2; i++) {
            int column = b.order[i];
            if (o.act_order) {
                const uint16_t* s = b.scales + (size_t)(column / group_size) * n;
                for (int r = 0; r < n; r++) b.column_scale[r] = marlin_fp16_to_float(s[r]);
            } else if (i % group_size == 0) {
                int count = i + group_size < k ? group_size : k - i;
                uint16_t* s = b.scales + (size_t)(i / group_size) * n;
                status = choose_group_scales(b.Wt, n, b.identity + i, count, &search, s);
                if (status != MARLIN_STATUS_SUCCESS) goto done;
                for (int r = 0; r < n; r++) b.column_scale[r] = marlin_fp16_to_float(s[r]);
            }
            const float* u = b.Ublk + (size_t)(i - i1) * k;
            float* w = b.Wt + (size_t)i * n;
            float* e = b.E + (size_t)(i - i1) * n;
            uint8_t* q = b.codes + (size_t)column * n;
            for (int r = 0; r < n; r++) {
                q[r] = quantize_code(w[r], b.column_scale[r]);
                e[r] = (w[r] - dequantize_code(q[r], b.column_scale[r])) / u[i];
            }
            for (int j = i + 1; j < i2; j++) {
                float* target = b.Wt + (size_t)j * n;
                for (int r = 0; r < n; r++) target[r] -= e[r] * u[j];
            }
        }
        lazy_update(b.Wt, n, k, b.Ublk, b.E, i1, i2);
        i1 = i2;
    }
    memcpy(codes, b.codes, (size_t)k * n);
    memcpy(scales, b.scales, marlin_scale_bytes(k, n, group_size));
done:
    free_buffers(&b);
    return status;
}

marlin_status marlin_gptq_quantize(const float* W, int n, int k, const float* H, int group_size,
                                   const marlin_gptq_options* options, uint8_t* codes, uint16_t* scales) {
    return gptq_quantize(W, 0, n, k, H, group_size, options, codes, scales);
}

marlin_status marlin_gptq_quantize_fp16(const uint16_t* W, int n, int k, const float* H, int group_size,
                                        const marlin_gptq_options* options, uint8_t* codes, uint16_t* scales) {
    return gptq_quantize(W, 1, n, k, H, group_size, options, codes, scales);
}
