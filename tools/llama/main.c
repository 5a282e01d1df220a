/*
 * main.c: marlin-llama, a Llama runner on 4-bit Marlin weights.
 *
 *   marlin-llama generate  --model M --prompt TEXT [--chat] ...   text generation
 *   marlin-llama ppl       --model M --text FILE --ctx 512 ...    perplexity
 *   marlin-llama quantize  --model M --out FILE --method gptq ... int4 checkpoint
 *   marlin-llama bench     --config llama2-7b ...                  decode speed (GPU)
 *   marlin-llama info      --model M                              config and tokenizer
 *   marlin-llama tokenize  --model M --text TEXT                  token ids
 *
 * A model is a GGUF file, our int4 checkpoint or a safetensors checkpoint.
 * --backend auto picks the GPU when there is one, else the CPU; every
 * command says which it used. The tool only uses the public Marlin headers;
 * it may print and exit, the code under it (model.c, cpu.c, gpu.cu...) never does.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"
#include "gpu.h"
#include "marlin.h"
#include "model.h"
#include "quantize.h"

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "marlin-llama: error: ");
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

/* ------------------------------------------------------------ options -- */

typedef struct options {
    const char* model;
    const char* out;
    const char* prompt;
    const char* text;
    const char* method;
    const char* config;
    const char* backend;
    const char* calib[32];
    int n_calib;
    int chat;
    int max_new;
    float temperature;
    float top_p;
    uint64_t seed;
    int threads;
    int batch;
    int ctx;
    int max_tokens;
    int group_size;
    int calib_seqs;
    int calib_len;
    int steps;
    int context;
    int graphs;
    char batches[64];
    int quiet;
    int breakdown;
    int attention_warps;
    int fused_norms;
} options;

static int parse_int(const char* flag, const char* v, int lo, int hi) {
    char* end;
    long x = strtol(v, &end, 10);
    if (*v == 0 || *end != 0 || x < lo || x > hi) die("%s expects an integer in [%d, %d], got '%s'", flag, lo, hi, v);
    return (int)x;
}
static float parse_float(const char* flag, const char* v, float lo, float hi) {
    char* end;
    float x = strtof(v, &end);
    if (*v == 0 || *end != 0 || !(x >= lo && x <= hi)) die("%s expects a number in [%g, %g], got '%s'", flag, lo, hi, v);
    return x;
}

/* Parses --flag value pairs; `allowed` lists the flags this command takes. */
static void parse_options(int argc, char** argv, const char* allowed, options* o, void (*usage)(void)) {
    for (int i = 0; i < argc; i++) {
        const char* flag = argv[i];
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            usage();
            exit(0);
        }
        int is_switch = !strcmp(flag, "--chat") || !strcmp(flag, "--quiet") || !strcmp(flag, "--breakdown");
        char needle[48];
        snprintf(needle, sizeof(needle), " %s ", flag);
        if (strncmp(flag, "--", 2) != 0 || !strstr(allowed, needle)) die("unknown option '%s' (see --help)", flag);
        if (is_switch) {
            if (!strcmp(flag, "--chat")) o->chat = 1;
            else if (!strcmp(flag, "--quiet")) o->quiet = 1;
            else o->breakdown = 1;
            continue;
        }
        if (i + 1 >= argc) die("%s needs a value", flag);
        const char* v = argv[++i];
        if (!strcmp(flag, "--model")) o->model = v;
        else if (!strcmp(flag, "--out")) o->out = v;
        else if (!strcmp(flag, "--prompt")) o->prompt = v;
        else if (!strcmp(flag, "--text")) o->text = v;
        else if (!strcmp(flag, "--method")) o->method = v;
        else if (!strcmp(flag, "--config")) o->config = v;
        else if (!strcmp(flag, "--backend")) o->backend = v;
        else if (!strcmp(flag, "--calib")) {
            if (o->n_calib >= 32) die("at most 32 --calib files");
            o->calib[o->n_calib++] = v;
        } else if (!strcmp(flag, "--max-new")) o->max_new = parse_int(flag, v, 1, 1 << 20);
        else if (!strcmp(flag, "--temperature")) o->temperature = parse_float(flag, v, 0.0f, 100.0f);
        else if (!strcmp(flag, "--top-p")) o->top_p = parse_float(flag, v, 0.0f, 1.0f);
        else if (!strcmp(flag, "--seed")) o->seed = (uint64_t)parse_int(flag, v, 0, 2147483647);
        else if (!strcmp(flag, "--threads")) o->threads = parse_int(flag, v, 0, 256);
        else if (!strcmp(flag, "--batch")) o->batch = parse_int(flag, v, 1, 256);
        else if (!strcmp(flag, "--ctx")) o->ctx = parse_int(flag, v, 2, 1 << 20);
        else if (!strcmp(flag, "--max-tokens")) o->max_tokens = parse_int(flag, v, 2, 1 << 30);
        else if (!strcmp(flag, "--group-size")) o->group_size = parse_int(flag, v, -1, 1 << 20);
        else if (!strcmp(flag, "--attention-warps")) o->attention_warps = parse_int(flag, v, 0, 32);
        else if (!strcmp(flag, "--fused-norms")) o->fused_norms = parse_int(flag, v, 0, 1);
        else if (!strcmp(flag, "--calib-seqs")) o->calib_seqs = parse_int(flag, v, 1, 4096);
        else if (!strcmp(flag, "--calib-len")) o->calib_len = parse_int(flag, v, 2, 1 << 16);
        else if (!strcmp(flag, "--steps")) o->steps = parse_int(flag, v, 1, 1 << 20);
        else if (!strcmp(flag, "--context")) o->context = parse_int(flag, v, 1, 1 << 20);
        else if (!strcmp(flag, "--graphs")) o->graphs = parse_int(flag, v, 0, 1);
        else if (!strcmp(flag, "--batches")) snprintf(o->batches, sizeof(o->batches), "%s", v);
    }
}

static char* read_text_file(const char* path, size_t* length) {
    FILE* f = fopen(path, "rb");
    if (!f) die("cannot open text file '%s'", path);
    if (fseek(f, 0, SEEK_END) != 0) die("cannot read '%s'", path);
    long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) die("cannot read '%s'", path);
    char* text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) die("cannot read '%s'", path);
    fclose(f);
    text[size] = 0;
    *length = (size_t)size;
    return text;
}

static void load_model(const char* path, llama_model* model) {
    if (!path) die("--model is required");
    char error[1024];
    double t0 = seconds_now();
    if (llama_model_load(path, model, error, sizeof(error)) != 0) die("%s", error);
    const llama_config* c = &model->config;
    int int4 = model->layers[0].qkv.group_size;
    fprintf(stderr, "model: %s: %d layers, dim %d, ffn %d, %d heads (%d KV), vocab %d, linear layers %s, loaded in %.1f s\n",
            path, c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->vocab_size,
            int4 ? "int4 Marlin" : "fp32", seconds_now() - t0);
}

static int* tokenize_or_die(const llama_model* model, const char* text, size_t length, int parse_special, int* count) {
    if (!model->has_tokenizer) die("the model has no tokenizer");
    int n = llama_tokenizer_encode(&model->tokenizer, text, length, parse_special, NULL, 0);
    if (n < 0) die("out of memory tokenizing");
    int* ids = malloc(((size_t)n + 1) * sizeof(int));
    if (!ids) die("out of memory");
    llama_tokenizer_encode(&model->tokenizer, text, length, parse_special, ids, n);
    *count = n;
    return ids;
}

/* ------------------------------------------------------------ backend -- */

typedef struct runner {
    int on_gpu;
    llama_thread_pool* pool;
    llama_cpu_state cpu;
    llama_gpu* gpu;
} runner;

static void runner_init(runner* r, const llama_model* model, const char* backend, int threads, int max_rows,
                        int max_seqs, int max_ctx) {
    memset(r, 0, sizeof(*r));
    const char* choice = backend ? backend : "auto";
    if (strcmp(choice, "auto") && strcmp(choice, "cpu") && strcmp(choice, "gpu"))
        die("--backend must be auto, cpu or gpu");
    int devices = strcmp(choice, "cpu") ? llama_gpu_device_count() : 0;
    if (!strcmp(choice, "gpu") && devices == 0) die("--backend gpu: no CUDA device found");
    char error[1024];
    if (devices > 0) {
        char name[256];
        llama_gpu_device_name(name, sizeof(name));
        r->gpu = llama_gpu_create(model, max_rows, max_seqs, max_ctx, error, sizeof(error));
        if (!r->gpu) die("GPU backend: %s", error);
        r->on_gpu = 1;
        fprintf(stderr, "backend: GPU (%s): %s\n", name,
                model->layers[0].qkv.group_size ? "int4 Marlin matmul" : "fp16 cuBLAS");
        return;
    }
    r->pool = llama_thread_pool_create(threads);
    if (!r->pool) die("out of memory");
    if (llama_cpu_state_init(&r->cpu, model, r->pool, max_rows, max_seqs, max_ctx) != 0)
        die("out of memory for the CPU state (%d rows, %d x %d cache)", max_rows, max_seqs, max_ctx);
    fprintf(stderr, "backend: CPU, %d threads%s\n", llama_thread_pool_size(r->pool),
            !strcmp(choice, "auto") ? " (no CUDA device found)" : "");
}

static void runner_forward(runner* r, const int* tokens, const int* seq_ids, const int* positions, int n_rows,
                           float* logits) {
    char error[1024];
    if (r->on_gpu) {
        if (llama_gpu_forward(r->gpu, tokens, seq_ids, positions, n_rows, logits, error, sizeof(error)) != 0)
            die("GPU forward: %s", error);
    } else if (llama_cpu_forward(&r->cpu, tokens, seq_ids, positions, n_rows, logits) != 0) {
        die("CPU forward: arguments out of range");
    }
}

static void runner_free(runner* r) {
    if (r->gpu) llama_gpu_free(r->gpu);
    llama_cpu_state_free(&r->cpu);
    llama_thread_pool_free(r->pool);
}

/* ---------------------------------------------------------------- ppl -- */

static void usage_ppl(void) {
    printf("usage: marlin-llama ppl --model M --text FILE [--ctx 512] [--max-tokens N] [--backend auto|cpu|gpu]\n"
           "                        [--threads N]\n"
           "Perplexity of a text file: its tokens are cut into consecutive windows of --ctx tokens\n"
           "(only the first --max-tokens tokens when given; one shorter window when the text is\n"
           "shorter than --ctx); each window starts from an empty cache, and every token but its\n"
           "first is predicted from the ones before it. Prints 'perplexity = X' on stdout.\n");
}

/* -log softmax(logits)[target], computed in double. */
static double negative_log_likelihood(const float* logits, int vocab, int target) {
    float max_logit = logits[0];
    for (int v = 1; v < vocab; v++)
        if (logits[v] > max_logit) max_logit = logits[v];
    double sum = 0.0;
    for (int v = 0; v < vocab; v++) sum += exp((double)logits[v] - max_logit);
    return log(sum) + max_logit - logits[target];
}

static int cmd_ppl(int argc, char** argv) {
    options o = {0};
    o.ctx = 512;
    parse_options(argc, argv, " --model --text --ctx --max-tokens --backend --threads ", &o, usage_ppl);
    if (!o.text) die("--text is required (see --help)");
    llama_model model;
    load_model(o.model, &model);
    size_t length;
    char* text = read_text_file(o.text, &length);
    int n_tokens;
    int* tokens = tokenize_or_die(&model, text, length, 0, &n_tokens);
    if (o.max_tokens > 0 && n_tokens > o.max_tokens) n_tokens = o.max_tokens;
    if (n_tokens < 2) die("'%s' has fewer than 2 tokens", o.text);
    int ctx = o.ctx < n_tokens ? o.ctx : n_tokens;
    int windows = n_tokens / ctx;
    runner r;
    runner_init(&r, &model, o.backend, o.threads, ctx, 1, ctx);
    int vocab = model.config.vocab_size;
    float* logits = malloc((size_t)ctx * vocab * sizeof(float));
    int* seq_ids = calloc((size_t)ctx, sizeof(int));
    int* positions = malloc((size_t)ctx * sizeof(int));
    if (!logits || !seq_ids || !positions) die("out of memory");
    for (int i = 0; i < ctx; i++) positions[i] = i;
    double total_nll = 0.0;
    int64_t predicted = 0;
    double t0 = seconds_now();
    for (int w = 0; w < windows; w++) {
        const int* window = tokens + (size_t)w * ctx;
        runner_forward(&r, window, seq_ids, positions, ctx, logits);
        for (int i = 0; i + 1 < ctx; i++)
            total_nll += negative_log_likelihood(logits + (size_t)i * vocab, vocab, window[i + 1]);
        predicted += ctx - 1;
        fprintf(stderr, "ppl: window %d/%d, running perplexity %.4f, %.1f tokens/s\n", w + 1, windows,
                exp(total_nll / predicted), (double)(w + 1) * ctx / (seconds_now() - t0));
    }
    printf("perplexity = %.4f (model %s, text %s, %lld predicted tokens in %d windows of %d, %s backend, %.1f s)\n",
           exp(total_nll / predicted), o.model, o.text, (long long)predicted, windows, ctx, r.on_gpu ? "GPU" : "CPU",
           seconds_now() - t0);
    runner_free(&r);
    free(logits);
    free(seq_ids);
    free(positions);
    free(tokens);
    free(text);
    llama_model_free(&model);
    return 0;
}

/* ----------------------------------------------------------- generate -- */

static void usage_generate(void) {
    printf("usage: marlin-llama generate --model M --prompt TEXT [--chat] [--max-new 64]\n"
           "                             [--temperature 0] [--top-p 1] [--seed 1] [--batch 1]\n"
           "                             [--backend auto|cpu|gpu] [--threads N] [--quiet]\n"
           "Generates text after a prompt. --chat wraps the prompt in the model's chat template\n"
           "(<|im_start|>system ... <|im_start|>assistant). --temperature 0 is greedy (deterministic);\n"
           "otherwise sampling with nucleus --top-p. --batch B decodes B sequences of the same prompt\n"
           "at once (seeds seed, seed+1, ...). Prints the text and the decode speed in tokens/s.\n");
}

typedef struct prob_entry {
    float p;
    int id;
} prob_entry;

static int compare_prob_desc(const void* a, const void* b) {
    float pa = ((const prob_entry*)a)->p, pb = ((const prob_entry*)b)->p;
    return (pa < pb) - (pa > pb);
}

static double rng_uniform(uint64_t* state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

/* Greedy when temperature == 0, else temperature + nucleus sampling. */
static int sample_token(const float* logits, int vocab, float temperature, float top_p, uint64_t* rng,
                        prob_entry* scratch) {
    int best = 0;
    for (int v = 1; v < vocab; v++)
        if (logits[v] > logits[best]) best = v;
    if (temperature <= 0.0f) return best;
    double total = 0.0;
    for (int v = 0; v < vocab; v++) {
        scratch[v].p = expf((logits[v] - logits[best]) / temperature);
        scratch[v].id = v;
        total += scratch[v].p;
    }
    int keep = vocab;
    if (top_p < 1.0f) {
        qsort(scratch, (size_t)vocab, sizeof(prob_entry), compare_prob_desc);
        double cumulative = 0.0;
        for (keep = 0; keep < vocab;) {
            cumulative += scratch[keep++].p / total;
            if (cumulative >= top_p) break;
        }
        total = 0.0;
        for (int i = 0; i < keep; i++) total += scratch[i].p;
    }
    double target = rng_uniform(rng) * total, running = 0.0;
    for (int i = 0; i < keep; i++) {
        running += scratch[i].p;
        if (running >= target) return scratch[i].id;
    }
    return scratch[keep - 1].id;
}

static const char* CHAT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

static int cmd_generate(int argc, char** argv) {
    options o = {0};
    o.max_new = 64;
    o.top_p = 1.0f;
    o.seed = 1;
    o.batch = 1;
    parse_options(argc, argv, " --model --prompt --chat --max-new --temperature --top-p --seed --batch --backend --threads --quiet ",
                  &o, usage_generate);
    if (!o.prompt) die("--prompt is required (see --help)");
    llama_model model;
    load_model(o.model, &model);
    const llama_tokenizer* tok = &model.tokenizer;
    if (!model.has_tokenizer) die("the model has no tokenizer");
    size_t text_bytes = strlen(o.prompt) + strlen(CHAT_SYSTEM) + 128;
    char* text = malloc(text_bytes);
    if (!text) die("out of memory");
    if (o.chat) {
        if (llama_tokenizer_find(tok, "<|im_start|>", 12) < 0) die("--chat: the model has no <|im_start|> token");
        snprintf(text, text_bytes, "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
                 CHAT_SYSTEM, o.prompt);
    } else {
        snprintf(text, text_bytes, "%s", o.prompt);
    }
    int n_prompt;
    int* prompt = tokenize_or_die(&model, text, strlen(text), o.chat, &n_prompt);
    if (n_prompt < 1) die("the prompt is empty");
    int B = o.batch, ctx = n_prompt + o.max_new;
    int stop_ids[3] = {tok->eos_id, llama_tokenizer_find(tok, "<|im_end|>", 10), llama_tokenizer_find(tok, "<|endoftext|>", 13)};
    runner r;
    runner_init(&r, &model, o.backend, o.threads, B * n_prompt > B ? B * n_prompt : B, B, ctx);
    int vocab = model.config.vocab_size;
    size_t rows = (size_t)B * n_prompt;
    float* logits = malloc(rows * vocab * sizeof(float));
    int* tokens = malloc(rows * sizeof(int));
    int* seq_ids = malloc(rows * sizeof(int));
    int* positions = malloc(rows * sizeof(int));
    int* output = malloc((size_t)B * o.max_new * sizeof(int));
    int* produced = calloc((size_t)B, sizeof(int));
    int* done = calloc((size_t)B, sizeof(int));
    uint64_t* rngs = malloc((size_t)B * sizeof(uint64_t));
    prob_entry* scratch = malloc((size_t)vocab * sizeof(prob_entry));
    if (!logits || !tokens || !seq_ids || !positions || !output || !produced || !done || !rngs || !scratch)
        die("out of memory");
    for (int b = 0; b < B; b++) {
        rngs[b] = o.seed + (uint64_t)b;
        for (int p = 0; p < n_prompt; p++) {
            tokens[b * n_prompt + p] = prompt[p];
            seq_ids[b * n_prompt + p] = b;
            positions[b * n_prompt + p] = p;
        }
    }
    if (!o.quiet) {
        fprintf(stderr, "prompt: %d tokens%s\n", n_prompt, o.chat ? " (chat template)" : "");
        if (!o.chat) printf("%s", o.prompt);
    }
    double t0 = seconds_now();
    runner_forward(&r, tokens, seq_ids, positions, (int)rows, logits);
    double t_prompt = seconds_now() - t0;
    /* the prompt's last row of each sequence predicts its first new token */
    for (int b = 0; b < B; b++) {
        const float* row = logits + ((size_t)b * n_prompt + n_prompt - 1) * vocab;
        tokens[b] = sample_token(row, vocab, o.temperature, o.top_p, &rngs[b], scratch);
    }
    double t1 = seconds_now();
    int decode_steps = 0, total_new = 0;
    for (int step = 0; step < o.max_new; step++) {
        int active = 0;
        for (int b = 0; b < B; b++) {
            if (done[b]) continue;
            int t = tokens[b];
            if (t == stop_ids[0] || t == stop_ids[1] || t == stop_ids[2]) {
                done[b] = 1;
                continue;
            }
            output[b * o.max_new + produced[b]++] = t;
            total_new++;
            if (b == 0 && !o.quiet) {
                char piece[512] = "";
                llama_tokenizer_decode_token(tok, t, piece, sizeof(piece));
                printf("%s", piece);
                fflush(stdout);
            }
            active++;
        }
        if (active == 0 || step + 1 == o.max_new) break;
        /* one decode step for every sequence (finished ones too, keeps the batch shape) */
        for (int b = 0; b < B; b++) {
            seq_ids[b] = b;
            positions[b] = n_prompt + step;
        }
        runner_forward(&r, tokens, seq_ids, positions, B, logits);
        decode_steps++;
        for (int b = 0; b < B; b++)
            tokens[b] = sample_token(logits + (size_t)b * vocab, vocab, o.temperature, o.top_p, &rngs[b], scratch);
    }
    double t_decode = seconds_now() - t1;
    printf("\n");
    for (int b = 1; b < B && !o.quiet; b++) {
        printf("--- sequence %d ---\n", b);
        for (int i = 0; i < produced[b]; i++) {
            char piece[512] = "";
            llama_tokenizer_decode_token(tok, output[b * o.max_new + i], piece, sizeof(piece));
            printf("%s", piece);
        }
        printf("\n");
    }
    printf("generate: %d new tokens (batch %d, %d decode steps) on the %s backend: prompt %d tokens in %.2f s, "
           "decode %.1f tokens/s\n",
           total_new, B, decode_steps, r.on_gpu ? "GPU" : "CPU", n_prompt, t_prompt,
           t_decode > 0 ? (double)decode_steps * B / t_decode : 0.0);
    if (o.quiet) { /* the ids of sequence 0, for scripts and tests */
        printf("ids:");
        for (int i = 0; i < produced[0]; i++) printf(" %d", output[i]);
        printf("\n");
    }
    runner_free(&r);
    free(logits); free(tokens); free(seq_ids); free(positions); free(output); free(produced); free(done);
    free(rngs); free(scratch); free(prompt); free(text);
    llama_model_free(&model);
    return 0;
}

/* ----------------------------------------------------------- quantize -- */

static void usage_quantize(void) {
    printf("usage: marlin-llama quantize --model M --out FILE [--method gptq|rtn] [--group-size 128]\n"
           "                             [--calib FILE]... [--calib-seqs 16] [--calib-len 256] [--threads N]\n"
           "Quantizes the 4 linear layers of every block (qkv, out, gate+up, down) to int4 Marlin and\n"
           "writes a marlin-llama checkpoint (magic MLQ4) that generate, ppl and info load.\n"
           "rtn: round-to-nearest, no calibration. gptq (default): GPTQ layer by layer on the CPU,\n"
           "each layer's Hessian from --calib-seqs windows of --calib-len tokens taken evenly from the\n"
           "--calib text files, propagated through the already-quantized layers before it.\n"
           "--group-size: 32, 64, 128 or -1 (one scale per column). Embeddings and head stay fp32.\n");
}

static int cmd_quantize(int argc, char** argv) {
    options o = {0};
    o.method = "gptq";
    o.group_size = 128;
    o.calib_seqs = 16;
    o.calib_len = 256;
    parse_options(argc, argv, " --model --out --method --group-size --calib --calib-seqs --calib-len --threads ", &o,
                  usage_quantize);
    if (!o.out) die("--out is required (see --help)");
    llama_quantize_options q;
    memset(&q, 0, sizeof(q));
    if (!strcmp(o.method, "rtn")) q.method = LLAMA_QUANTIZE_RTN;
    else if (!strcmp(o.method, "gptq")) q.method = LLAMA_QUANTIZE_GPTQ;
    else die("--method must be gptq or rtn");
    if (o.group_size != -1 && o.group_size != 32 && o.group_size != 64 && o.group_size != 128)
        die("--group-size must be 32, 64, 128 or -1");
    if (q.method == LLAMA_QUANTIZE_GPTQ && o.n_calib == 0) die("gptq needs calibration text: --calib FILE");
    llama_model model;
    load_model(o.model, &model);
    if (model.layers[0].qkv.group_size) die("'%s' is already quantized", o.model);
    int* calib = NULL;
    int n_calib = 0;
    for (int i = 0; i < o.n_calib; i++) {
        size_t length;
        char* text = read_text_file(o.calib[i], &length);
        int n;
        int* ids = tokenize_or_die(&model, text, length, 0, &n);
        int* grown = realloc(calib, ((size_t)n_calib + n + 1) * sizeof(int));
        if (!grown) die("out of memory");
        calib = grown;
        memcpy(calib + n_calib, ids, (size_t)n * sizeof(int));
        n_calib += n;
        free(ids);
        free(text);
    }
    q.group_size = o.group_size;
    q.calib_tokens = calib;
    q.n_calib_tokens = n_calib;
    q.n_seqs = o.calib_seqs;
    q.seq_len = o.calib_len;
    marlin_gptq_default_options(&q.gptq);
    q.verbose = 1;
    if (q.method == LLAMA_QUANTIZE_GPTQ)
        fprintf(stderr, "quantize: GPTQ, group %d, %d calibration tokens from %d file(s), %d windows of %d\n",
                o.group_size, n_calib, o.n_calib, o.calib_seqs, o.calib_len);
    llama_thread_pool* pool = llama_thread_pool_create(o.threads);
    if (!pool) die("out of memory");
    fprintf(stderr, "quantize: CPU, %d threads\n", llama_thread_pool_size(pool));
    char error[1024];
    double t0 = seconds_now();
    if (llama_quantize_model(&model, &q, pool, error, sizeof(error)) != 0) die("%s", error);
    if (llama_checkpoint_save(&model, o.out, error, sizeof(error)) != 0) die("%s", error);
    printf("quantize: wrote %s (%s, group %d) in %.1f s\n", o.out, o.method, o.group_size, seconds_now() - t0);
    llama_thread_pool_free(pool);
    free(calib);
    llama_model_free(&model);
    return 0;
}

/* -------------------------------------------------------------- bench -- */

static void usage_bench(void) {
    printf("usage: marlin-llama bench [--config llama2-7b] [--batches 1,8,16,32] [--steps 64]\n"
           "                          [--context 128] [--group-size 128] [--graphs 1] [--breakdown]\n"
           "                          [--backend auto|cpu|gpu] [--threads N] [--attention-warps 0]\n"
           "                          [--fused-norms 1]\n"
           "Decode speed on synthetic random weights with the shapes of a named config\n"
           "(smollm2-135m, llama2-7b, llama3-8b, llama2-13b): each batch size decodes --steps\n"
           "tokens per sequence after --context cached positions; tokens/s = batch x steps / time.\n"
           "On the GPU: fp16 (cuBLAS) and int4 (Marlin) weights, and the int4 speedup. On the CPU:\n"
           "the fp32 path only (the CPU backend computes int4 layers from dequantized weights).\n"
           "--graphs 1 (default) replays each decode step as one CUDA graph; 0 launches every kernel.\n"
           "--breakdown (GPU): also times steps that run only the linear layers (the four GEMMs of\n"
           "every block and the output head, same shapes and order, no other kernel) and reports\n"
           "the time outside them (norms, attention, SwiGLU, embedding, launch gaps) per format.\n"
           "--attention-warps (GPU, for tuning): warps per head and row of the attention kernel,\n"
           "8, 16 or 32; 0 (default) chooses by the batch size.\n"
           "--fused-norms (GPU int4): 1 (default) folds the RMSNorms into the multiplies up to 8\n"
           "rows (marlin_matmul_residual / marlin_matmul_rms_scaled); 0 runs norm kernels instead.\n");
}

/* Seconds for `steps` decode steps of B sequences, one row each, at
 * positions context, context + 1, ...; three warm-up steps before (the
 * first captures the step's graph) are not counted. */
static double time_gpu_steps(llama_gpu* gpu, int vocab, int B, int steps, int context, int* tokens, int* seq_ids,
                             int* positions, uint64_t* rng) {
    char error[1024];
    for (int b = 0; b < B; b++) seq_ids[b] = b;
    double t0 = 0;
    for (int s = -3; s < steps; s++) {
        if (s == 0) t0 = seconds_now();
        for (int b = 0; b < B; b++) {
            tokens[b] = (int)(rng_uniform(rng) * vocab);
            positions[b] = context + (s < 0 ? 0 : s);
        }
        if (llama_gpu_forward(gpu, tokens, seq_ids, positions, B, NULL, error, sizeof(error)) != 0)
            die("GPU forward: %s", error);
    }
    return seconds_now() - t0;
}

static int cmd_bench(int argc, char** argv) {
    options o = {0};
    o.config = "llama2-7b";
    o.steps = 64;
    o.context = 128;
    o.group_size = 128;
    o.graphs = 1;
    snprintf(o.batches, sizeof(o.batches), "1,8,16,32");
    o.fused_norms = 1;
    parse_options(argc, argv, " --config --batches --steps --context --group-size --graphs --breakdown --backend --threads --attention-warps --fused-norms ",
                  &o, usage_bench);
    if (!llama_gpu_attention_warps_supported(o.attention_warps))
        die("--attention-warps: expected 0, 8, 16 or 32, got %d", o.attention_warps);
    llama_config config;
    if (llama_config_preset(o.config, &config) != 0)
        die("unknown --config '%s' (smollm2-135m, llama2-7b, llama3-8b, llama2-13b)", o.config);
    int batches[16], n_batches = 0, max_batch = 1;
    for (char* p = o.batches; *p && n_batches < 16;) {
        char* end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 1 || b > 256) die("--batches: expected a comma-separated list of 1..256");
        batches[n_batches++] = (int)b;
        if (b > max_batch) max_batch = (int)b;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') die("--batches: expected a comma-separated list of 1..256");
    }
    int max_ctx = o.context + o.steps + 4;
    const char* choice = o.backend ? o.backend : "auto";
    int devices = strcmp(choice, "cpu") ? llama_gpu_device_count() : 0;
    if (!strcmp(choice, "gpu") && devices == 0) die("--backend gpu: no CUDA device found");
    int* tokens = malloc((size_t)max_batch * sizeof(int));
    int* seq_ids = malloc((size_t)max_batch * sizeof(int));
    int* positions = malloc((size_t)max_batch * sizeof(int));
    if (!tokens || !seq_ids || !positions) die("out of memory");
    uint64_t rng = 12345;
    printf("bench: %s (%d layers, dim %d, ffn %d, %d/%d heads, vocab %d), %lld linear parameters, context %d, %d steps\n",
           o.config, config.n_layers, config.dim, config.ffn_dim, config.n_heads, config.n_kv_heads, config.vocab_size,
           (long long)llama_linear_parameters(&config), o.context, o.steps);
    if (devices > 0) {
        char name[256];
        llama_gpu_device_name(name, sizeof(name));
        printf("backend: GPU (%s)\n", name);
        double speed[2][16], step_ms[2][16], linear_ms[2][16];
        for (int format = 0; format < 2; format++) {
            char error[1024];
            llama_gpu* gpu = llama_gpu_create_synthetic(&config, format, o.group_size, max_batch, max_batch, max_ctx,
                                                        error, sizeof(error));
            if (!gpu) die("GPU: %s", error);
            llama_gpu_set_graphs(gpu, o.graphs);
            if (llama_gpu_set_attention_warps(gpu, o.attention_warps) != 0) die("--attention-warps %d refused", o.attention_warps);
            llama_gpu_set_fused_norms(gpu, o.fused_norms);
            for (int i = 0; i < n_batches; i++) {
                int B = batches[i];
                double elapsed = time_gpu_steps(gpu, config.vocab_size, B, o.steps, o.context, tokens, seq_ids,
                                                positions, &rng);
                speed[format][i] = (double)B * o.steps / elapsed;
                step_ms[format][i] = 1e3 * elapsed / o.steps;
                printf("  %-5s batch %3d: %9.1f tokens/s  (%.3f ms per step, weights %.2f GB -> %.0f GB/s, graphs %s)\n",
                       format ? "int4" : "fp16", B, speed[format][i], step_ms[format][i],
                       llama_gpu_weight_bytes(gpu) / 1e9, llama_gpu_weight_bytes(gpu) * o.steps / elapsed / 1e9,
                       llama_gpu_graphs_enabled(gpu) && B <= 64 ? "on" : "off");
                if (o.breakdown) {
                    llama_gpu_set_linear_only(gpu, 1);
                    double linear = time_gpu_steps(gpu, config.vocab_size, B, o.steps, o.context, tokens, seq_ids,
                                                   positions, &rng);
                    llama_gpu_set_linear_only(gpu, 0);
                    linear_ms[format][i] = 1e3 * linear / o.steps;
                    printf("        linear layers only: %.3f ms per step; outside them: %.3f ms (%.0f%% of the step)\n",
                           linear_ms[format][i], step_ms[format][i] - linear_ms[format][i],
                           100.0 * (step_ms[format][i] - linear_ms[format][i]) / step_ms[format][i]);
                }
                fflush(stdout);
            }
            llama_gpu_free(gpu);
        }
        printf("| config | batch | fp16 tokens/s | int4 tokens/s | int4 / fp16 |\n|---|---|---|---|---|\n");
        for (int i = 0; i < n_batches; i++)
            printf("| %s | %d | %.1f | %.1f | %.2fx |\n", o.config, batches[i], speed[0][i], speed[1][i],
                   speed[1][i] / speed[0][i]);
        if (o.breakdown) {
            printf("\n| config | batch | format | ms per step | linear layers only (ms) | outside them (ms) | outside |\n"
                   "|---|---|---|---|---|---|---|\n");
            for (int i = 0; i < n_batches; i++)
                for (int format = 0; format < 2; format++)
                    printf("| %s | %d | %s | %.3f | %.3f | %.3f | %.0f%% |\n", o.config, batches[i],
                           format ? "int4" : "fp16", step_ms[format][i], linear_ms[format][i],
                           step_ms[format][i] - linear_ms[format][i],
                           100.0 * (step_ms[format][i] - linear_ms[format][i]) / step_ms[format][i]);
        }
    } else {
        double bytes = (double)llama_linear_parameters(&config) * 4 + 2.0 * config.vocab_size * config.dim * 4;
        if (bytes > 8e9) die("%s needs %.0f GB of fp32 weights: too large for the CPU bench", o.config, bytes / 1e9);
        llama_model model;
        if (llama_model_allocate(&model, &config) != 0) die("out of memory");
        /* random weights of a plausible scale; norms of one */
        uint64_t wr = 99;
        size_t e = (size_t)config.vocab_size * config.dim;
        for (size_t i = 0; i < e; i++) model.embedding[i] = (float)(rng_uniform(&wr) - 0.5) * 0.1f;
        for (int i = 0; i < config.dim; i++) model.output_norm[i] = 1.0f;
        for (int l = 0; l < config.n_layers; l++) {
            llama_layer* L = &model.layers[l];
            llama_linear* ls[4] = {&L->qkv, &L->out, &L->gate_up, &L->down};
            for (int i = 0; i < config.dim; i++) L->attn_norm[i] = L->ffn_norm[i] = 1.0f;
            for (int j = 0; j < 4; j++)
                for (size_t i = 0; i < (size_t)ls[j]->n * ls[j]->k; i++)
                    ls[j]->weight[i] = (float)(rng_uniform(&wr) - 0.5) * 0.05f;
        }
        llama_thread_pool* pool = llama_thread_pool_create(o.threads);
        llama_cpu_state st;
        if (!pool || llama_cpu_state_init(&st, &model, pool, max_batch, max_batch, max_ctx) != 0) die("out of memory");
        printf("backend: CPU, %d threads (fp32 weights)%s\n", llama_thread_pool_size(pool),
               o.breakdown ? "; --breakdown applies to the GPU only" : "");
        float* logits = malloc((size_t)max_batch * config.vocab_size * sizeof(float));
        if (!logits) die("out of memory");
        for (size_t i = 0; i < (size_t)config.n_layers * max_batch * max_ctx * config.n_kv_heads * config.head_dim; i++) {
            st.key_cache[i] = (float)(rng_uniform(&wr) - 0.5);
            st.value_cache[i] = (float)(rng_uniform(&wr) - 0.5);
        }
        for (int i = 0; i < n_batches; i++) {
            int B = batches[i];
            for (int b = 0; b < B; b++) seq_ids[b] = b;
            double t0 = seconds_now();
            for (int s = 0; s < o.steps; s++) {
                for (int b = 0; b < B; b++) {
                    tokens[b] = (int)(rng_uniform(&rng) * config.vocab_size);
                    positions[b] = o.context + s;
                }
                llama_cpu_forward(&st, tokens, seq_ids, positions, B, logits);
            }
            double elapsed = seconds_now() - t0;
            printf("  fp32  batch %3d: %9.1f tokens/s  (%.2f ms per step)\n", B, (double)B * o.steps / elapsed,
                   1e3 * elapsed / o.steps);
            fflush(stdout);
        }
        free(logits);
        llama_cpu_state_free(&st);
        llama_thread_pool_free(pool);
        llama_model_free(&model);
    }
    free(tokens);
    free(seq_ids);
    free(positions);
    return 0;
}

/* ------------------------------------------------------ info, tokenize -- */

static void usage_info(void) {
    printf("usage: marlin-llama info --model M\nPrints the model's config, its linear layers' format and its tokenizer.\n");
}

static int cmd_info(int argc, char** argv) {
    options o = {0};
    parse_options(argc, argv, " --model ", &o, usage_info);
    llama_model model;
    load_model(o.model, &model);
    const llama_config* c = &model.config;
    printf("layers %d\ndim %d\nffn_dim %d\nheads %d\nkv_heads %d\nhead_dim %d\nrope_dim %d\nrope_base %g\n"
           "norm_eps %g\nvocab %d\ncontext %d\ntied_embeddings %d\nlinear %s (group %d)\nlinear_parameters %lld\n",
           c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->rope_dim, c->rope_base,
           c->norm_eps, c->vocab_size, c->max_context, c->tied_embeddings,
           model.layers[0].qkv.group_size ? "int4" : "fp32", model.layers[0].qkv.group_size,
           (long long)llama_linear_parameters(c));
    if (model.has_tokenizer)
        printf("tokenizer: %d tokens, %d merges, %d special, bos %d, eos %d\n", model.tokenizer.n_vocab,
               model.tokenizer.n_merges, model.tokenizer.n_special, model.tokenizer.bos_id, model.tokenizer.eos_id);
    llama_model_free(&model);
    return 0;
}

static void usage_tokenize(void) {
    printf("usage: marlin-llama tokenize --model M --text TEXT [--chat]\n"
           "Prints the token ids of TEXT and each token's bytes; --chat parses special tokens.\n");
}

static int cmd_tokenize(int argc, char** argv) {
    options o = {0};
    parse_options(argc, argv, " --model --text --chat ", &o, usage_tokenize);
    if (!o.text) die("--text is required");
    llama_model model;
    load_model(o.model, &model);
    int n;
    int* ids = tokenize_or_die(&model, o.text, strlen(o.text), o.chat, &n);
    for (int i = 0; i < n; i++) {
        char piece[512] = "";
        llama_tokenizer_decode_token(&model.tokenizer, ids[i], piece, sizeof(piece));
        printf("%d\t'%s'\n", ids[i], piece);
    }
    free(ids);
    llama_model_free(&model);
    return 0;
}

static void usage(void) {
    printf("marlin-llama: Llama-architecture models on 4-bit Marlin weights (libmarlin %d.%d.%d)\n\n"
           "usage: marlin-llama COMMAND [options]   (COMMAND --help for its options)\n"
           "  generate   generate text from a prompt; prints tokens/s\n"
           "  ppl        perplexity of a text file\n"
           "  quantize   GPTQ or RTN int4 quantization into a marlin-llama checkpoint\n"
           "  bench      decode tokens/s on synthetic weights (fp16 vs int4 on the GPU)\n"
           "  info       model config\n"
           "  tokenize   token ids of a text\n\n"
           "Models: GGUF (F32/F16/BF16/Q4_0/Q4_1/Q8_0 tensors, dequantized on load), marlin-llama\n"
           "checkpoints (from quantize), or safetensors + config.json (a directory or a file).\n"
           "Backends: --backend auto (GPU when there is one), cpu or gpu.\n",
           MARLIN_VERSION_MAJOR, MARLIN_VERSION_MINOR, MARLIN_VERSION_PATCH);
}

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 1 : 0;
    }
    const char* command = argv[1];
    if (!strcmp(command, "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(command, "ppl")) return cmd_ppl(argc - 2, argv + 2);
    if (!strcmp(command, "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(command, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(command, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(command, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    usage();
    fprintf(stderr, "marlin-llama: error: unknown command '%s'\n", command);
    return 1;
}
