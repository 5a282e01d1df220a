/*
 * tokenizer.c: byte-level BPE encode/decode (see tokenizer.h for the rules).
 *
 * Merging is the textbook loop: within one pre-token piece, find the adjacent
 * pair with the lowest rank, merge it, repeat. Pieces are words, so the
 * quadratic loop costs little; ranks come from a hash table keyed by the pair
 * of token ids.
 */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char* s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}
static uint64_t hash_pair(int64_t key) {
    uint64_t z = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return z ^ (z >> 29);
}
static size_t table_size_for(size_t n) {
    size_t size = 16;
    while (size < 2 * n) size *= 2;
    return size;
}

int llama_tokenizer_find(const llama_tokenizer* tok, const char* text, size_t length) {
    size_t mask = tok->vocab_table_size - 1;
    for (size_t slot = hash_bytes(text, length) & mask;; slot = (slot + 1) & mask) {
        int id = tok->vocab_table[slot];
        if (id < 0) return -1;
        if ((size_t)tok->token_lengths[id] == length && memcmp(tok->tokens[id], text, length) == 0) return id;
    }
}

int llama_tokenizer_merge_rank(const llama_tokenizer* tok, int left, int right) {
    int64_t key = ((int64_t)left << 32) | (uint32_t)right;
    size_t mask = tok->merge_table_size - 1;
    for (size_t slot = hash_pair(key) & mask;; slot = (slot + 1) & mask) {
        if (tok->merge_keys[slot] == -1) return -1;
        if (tok->merge_keys[slot] == key) return tok->merge_values[slot];
    }
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others
 * are shifted to code points 256, 257, ... in byte order. */
static int byte_to_codepoint(int byte) {
    if ((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255)) return byte;
    int shifted = 0;
    for (int b = 0; b < byte; b++)
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) shifted++;
    return 256 + shifted;
}

static int utf8_encode(int cp, char* out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* Decodes one UTF-8 code point; an invalid byte counts as one code point of its own value. */
static int utf8_decode(const unsigned char* s, size_t n, int* bytes) {
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || (size_t)len > n) { *bytes = 1; return (int)c; }
    int cp = len == 1 ? (int)c : (int)(c & (0x7F >> len));
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *bytes = 1; return (int)c; }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *bytes = len;
    return cp;
}

void llama_tokenizer_free(llama_tokenizer* tok) {
    if (!tok) return;
    if (tok->tokens)
        for (int i = 0; i < tok->n_vocab; i++) free(tok->tokens[i]);
    free(tok->tokens);
    free(tok->token_lengths);
    free(tok->token_types);
    free(tok->merge_left);
    free(tok->merge_right);
    free(tok->vocab_table);
    free(tok->merge_keys);
    free(tok->merge_values);
    free(tok->special_ids);
    memset(tok, 0, sizeof(*tok));
}

static const llama_tokenizer* special_sort_tokenizer; /* qsort has no context argument */
static int compare_special_length(const void* a, const void* b) {
    int la = special_sort_tokenizer->token_lengths[*(const int*)a];
    int lb = special_sort_tokenizer->token_lengths[*(const int*)b];
    return lb - la;
}

int llama_tokenizer_init(llama_tokenizer* tok, int n_vocab, const char* const* tokens,
                         const uint64_t* token_lengths, const int* token_types, int n_merges,
                         const char* const* merges, const uint64_t* merge_lengths, int bos_id,
                         int eos_id, char* error, size_t error_bytes) {
    memset(tok, 0, sizeof(*tok));
    if (n_vocab <= 0 || n_merges < 0) {
        snprintf(error, error_bytes, "tokenizer: empty vocabulary");
        return -1;
    }
    tok->n_vocab = n_vocab;
    tok->bos_id = bos_id >= 0 && bos_id < n_vocab ? bos_id : -1;
    tok->eos_id = eos_id >= 0 && eos_id < n_vocab ? eos_id : -1;
    tok->tokens = calloc((size_t)n_vocab, sizeof(char*));
    tok->token_lengths = calloc((size_t)n_vocab, sizeof(int));
    tok->token_types = calloc((size_t)n_vocab, sizeof(int));
    tok->vocab_table_size = table_size_for((size_t)n_vocab);
    tok->vocab_table = malloc(tok->vocab_table_size * sizeof(int));
    tok->special_ids = calloc((size_t)n_vocab, sizeof(int));
    if (!tok->tokens || !tok->token_lengths || !tok->token_types || !tok->vocab_table || !tok->special_ids)
        goto out_of_memory;
    memset(tok->vocab_table, 0xFF, tok->vocab_table_size * sizeof(int));
    for (int i = 0; i < n_vocab; i++) {
        if (token_lengths[i] > 4096) {
            snprintf(error, error_bytes, "tokenizer: token %d is %llu bytes long", i, (unsigned long long)token_lengths[i]);
            llama_tokenizer_free(tok);
            return -1;
        }
        tok->token_lengths[i] = (int)token_lengths[i];
        tok->tokens[i] = malloc(token_lengths[i] + 1);
        if (!tok->tokens[i]) goto out_of_memory;
        memcpy(tok->tokens[i], tokens[i], token_lengths[i]);
        tok->tokens[i][token_lengths[i]] = 0;
        tok->token_types[i] = token_types ? token_types[i] : TOKEN_TYPE_NORMAL;
        if (llama_tokenizer_find(tok, tok->tokens[i], token_lengths[i]) >= 0) continue; /* keep the first of duplicates */
        size_t mask = tok->vocab_table_size - 1;
        size_t slot = hash_bytes(tok->tokens[i], token_lengths[i]) & mask;
        while (tok->vocab_table[slot] >= 0) slot = (slot + 1) & mask;
        tok->vocab_table[slot] = i;
        if ((tok->token_types[i] == TOKEN_TYPE_CONTROL || tok->token_types[i] == TOKEN_TYPE_USER_DEFINED) &&
            token_lengths[i] > 0)
            tok->special_ids[tok->n_special++] = i;
    }
    special_sort_tokenizer = tok;
    qsort(tok->special_ids, (size_t)tok->n_special, sizeof(int), compare_special_length);
    for (int b = 0; b < 256; b++) {
        char buf[4];
        int n = utf8_encode(byte_to_codepoint(b), buf);
        tok->byte_token[b] = llama_tokenizer_find(tok, buf, (size_t)n);
    }
    tok->n_merges = n_merges;
    tok->merge_left = malloc(((size_t)n_merges + 1) * sizeof(int));
    tok->merge_right = malloc(((size_t)n_merges + 1) * sizeof(int));
    tok->merge_table_size = table_size_for((size_t)n_merges);
    tok->merge_keys = malloc(tok->merge_table_size * sizeof(int64_t));
    tok->merge_values = malloc(tok->merge_table_size * sizeof(int));
    if (!tok->merge_left || !tok->merge_right || !tok->merge_keys || !tok->merge_values) goto out_of_memory;
    memset(tok->merge_keys, 0xFF, tok->merge_table_size * sizeof(int64_t));
    for (int r = 0; r < n_merges; r++) {
        const char* m = merges[r];
        size_t len = merge_lengths[r];
        /* "left right": the separator is the first space after position 0 (a
         * token never starts with a plain space in byte-level BPE). */
        size_t split = 1;
        while (split < len && m[split] != ' ') split++;
        int left = split < len ? llama_tokenizer_find(tok, m, split) : -1;
        int right = split < len ? llama_tokenizer_find(tok, m + split + 1, len - split - 1) : -1;
        int merged = -1;
        if (left >= 0 && right >= 0) {
            /* the pair's concatenation must itself be a token */
            char joined[8200];
            size_t ll = (size_t)tok->token_lengths[left], rl = (size_t)tok->token_lengths[right];
            memcpy(joined, tok->tokens[left], ll);
            memcpy(joined + ll, tok->tokens[right], rl);
            merged = llama_tokenizer_find(tok, joined, ll + rl);
        }
        if (merged < 0) {
            snprintf(error, error_bytes, "tokenizer: merge %d ('%.*s') names a token not in the vocabulary", r,
                     (int)(len > 64 ? 64 : len), m);
            llama_tokenizer_free(tok);
            return -1;
        }
        tok->merge_left[r] = left;
        tok->merge_right[r] = right;
        if (llama_tokenizer_merge_rank(tok, left, right) >= 0) continue; /* the first (lowest) rank wins */
        int64_t key = ((int64_t)left << 32) | (uint32_t)right;
        size_t mask = tok->merge_table_size - 1;
        size_t slot = hash_pair(key) & mask;
        while (tok->merge_keys[slot] != -1) slot = (slot + 1) & mask;
        tok->merge_keys[slot] = key;
        tok->merge_values[slot] = r;
    }
    return 0;
out_of_memory:
    snprintf(error, error_bytes, "tokenizer: out of memory");
    llama_tokenizer_free(tok);
    return -1;
}

/* ------------------------------------------------------ pre-tokenizer -- */

enum char_class { CLASS_LETTER, CLASS_DIGIT, CLASS_SPACE, CLASS_OTHER };

static enum char_class classify(int cp) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CLASS_LETTER;
    if (cp >= '0' && cp <= '9') return CLASS_DIGIT;
    if (cp == ' ' || (cp >= 9 && cp <= 13) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
        (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
        cp == 0x3000)
        return CLASS_SPACE;
    if (cp >= 0x80 && cp <= 0xBF) return CLASS_OTHER; /* stray bytes / Latin-1 punctuation */
    if (cp >= 0xC0) return CLASS_LETTER;
    return CLASS_OTHER;
}

/* Class and byte length of the code point at s[0..n). */
static enum char_class class_at(const char* s, size_t n, int* bytes) {
    return classify(utf8_decode((const unsigned char*)s, n, bytes));
}

/* Length in bytes of the run of `cls` characters starting at s. */
static size_t run_length(const char* s, size_t n, enum char_class cls, int negate_all) {
    size_t i = 0;
    while (i < n) {
        int b;
        enum char_class c = class_at(s + i, n - i, &b);
        int match = negate_all ? (c == CLASS_OTHER) : (c == cls);
        if (!match) break;
        i += (size_t)b;
    }
    return i;
}

/* The GPT-2 pattern on a span that contains no digits split off yet. */
static void gpt2_split(const char* s, size_t n, void (*emit)(const char*, size_t, void*), void* context) {
    size_t i = 0;
    while (i < n) {
        const char* p = s + i;
        size_t left = n - i;
        size_t take = 0;
        if (p[0] == '\'' && left >= 2) {
            if (strchr("stmd", p[1])) take = 2;
            else if (left >= 3 && ((p[1] == 'r' && p[2] == 'e') || (p[1] == 'v' && p[2] == 'e') ||
                                   (p[1] == 'l' && p[2] == 'l')))
                take = 3;
        }
        if (!take) {
            size_t lead = p[0] == ' ' ? 1 : 0;
            int b = 0;
            enum char_class c = lead < left ? class_at(p + lead, left - lead, &b) : CLASS_SPACE;
            if (lead < left && c == CLASS_LETTER) take = lead + run_length(p + lead, left - lead, CLASS_LETTER, 0);
            else if (lead < left && c == CLASS_DIGIT) take = lead + run_length(p + lead, left - lead, CLASS_DIGIT, 0);
            else if (lead < left && c == CLASS_OTHER) take = lead + run_length(p + lead, left - lead, CLASS_OTHER, 1);
        }
        if (!take) {
            /* whitespace: \s+(?!\S) keeps the last space for the next word */
            size_t run = run_length(p, left, CLASS_SPACE, 0);
            if (run == 0) { /* cannot happen: every class is covered; be safe */
                int b;
                class_at(p, left, &b);
                run = (size_t)b;
            }
            if (run < left) {
                /* back off one code point if the run has more than one */
                size_t last = 0, j = 0;
                while (j < run) {
                    int b;
                    class_at(p + j, left - j, &b);
                    last = j;
                    j += (size_t)b;
                }
                take = last > 0 ? last : run;
            } else {
                take = run;
            }
        }
        emit(p, take, context);
        i += take;
    }
}

void llama_pretokenize(const char* text, size_t length,
                       void (*emit)(const char* begin, size_t bytes, void* context), void* context) {
    size_t start = 0, i = 0;
    while (i < length) {
        if (text[i] >= '0' && text[i] <= '9') {
            if (i > start) gpt2_split(text + start, i - start, emit, context);
            emit(text + i, 1, context);
            start = i + 1;
        }
        i++;
    }
    if (length > start) gpt2_split(text + start, length - start, emit, context);
}

/* ------------------------------------------------------------- encode -- */

typedef struct encode_state {
    const llama_tokenizer* tok;
    int* ids;
    int max_ids;
    int count;
    int* symbols;  /* scratch for one piece */
    size_t symbols_capacity;
    int failed;
} encode_state;

static void push_id(encode_state* st, int id) {
    if (st->count < st->max_ids) st->ids[st->count] = id;
    st->count++;
}

static void bpe_piece(const char* piece, size_t bytes, void* context) {
    encode_state* st = context;
    const llama_tokenizer* tok = st->tok;
    if (bytes > st->symbols_capacity) {
        int* grown = realloc(st->symbols, bytes * sizeof(int));
        if (!grown) { st->failed = 1; return; }
        st->symbols = grown;
        st->symbols_capacity = bytes;
    }
    int* sym = st->symbols;
    size_t n = 0;
    for (size_t i = 0; i < bytes; i++) {
        int id = tok->byte_token[(uint8_t)piece[i]];
        sym[n++] = id; /* -1 if the vocabulary lacks the byte; never merged */
    }
    for (;;) {
        int best_rank = -1;
        size_t best = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (sym[i] < 0 || sym[i + 1] < 0) continue;
            int r = llama_tokenizer_merge_rank(tok, sym[i], sym[i + 1]);
            if (r >= 0 && (best_rank < 0 || r < best_rank)) { best_rank = r; best = i; }
        }
        if (best_rank < 0) break;
        /* the merged token is the concatenation of the two strings */
        int left = sym[best], right = sym[best + 1];
        size_t ll = (size_t)tok->token_lengths[left], rl = (size_t)tok->token_lengths[right];
        char* joined = malloc(ll + rl);
        if (!joined) { st->failed = 1; return; }
        memcpy(joined, tok->tokens[left], ll);
        memcpy(joined + ll, tok->tokens[right], rl);
        int merged = llama_tokenizer_find(tok, joined, ll + rl);
        free(joined);
        if (merged < 0) break; /* inconsistent merge table: stop merging */
        sym[best] = merged;
        memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof(int));
        n--;
    }
    for (size_t i = 0; i < n; i++) push_id(st, sym[i] >= 0 ? sym[i] : 0);
}

int llama_tokenizer_encode(const llama_tokenizer* tok, const char* text, size_t length,
                           int parse_special, int* ids, int max_ids) {
    encode_state st = {tok, ids, max_ids, 0, NULL, 0, 0};
    size_t start = 0, i = 0;
    while (i < length) {
        int matched = -1;
        if (parse_special) {
            for (int s = 0; s < tok->n_special; s++) {
                int id = tok->special_ids[s];
                size_t len = (size_t)tok->token_lengths[id];
                if (len <= length - i && memcmp(text + i, tok->tokens[id], len) == 0) { matched = id; break; }
            }
        }
        if (matched >= 0) {
            if (i > start) llama_pretokenize(text + start, i - start, bpe_piece, &st);
            push_id(&st, matched);
            i += (size_t)tok->token_lengths[matched];
            start = i;
        } else {
            i++;
        }
    }
    if (length > start) llama_pretokenize(text + start, length - start, bpe_piece, &st);
    free(st.symbols);
    return st.failed ? -1 : st.count;
}

/* ------------------------------------------------------------- decode -- */

static int codepoint_to_byte(int cp) {
    static int table[324];
    static int ready;
    if (!ready) { /* idempotent: concurrent first calls write the same values */
        for (int i = 0; i < 324; i++) table[i] = -1;
        for (int b = 0; b < 256; b++) table[byte_to_codepoint(b)] = b;
        ready = 1;
    }
    return cp >= 0 && cp < 324 ? table[cp] : -1;
}

size_t llama_tokenizer_decode_token(const llama_tokenizer* tok, int id, char* out, size_t out_bytes) {
    size_t used = strlen(out);
    if (id < 0 || id >= tok->n_vocab || out_bytes == 0) return 0;
    const char* s = tok->tokens[id];
    size_t n = (size_t)tok->token_lengths[id];
    size_t written = 0;
    int literal = tok->token_types[id] == TOKEN_TYPE_CONTROL || tok->token_types[id] == TOKEN_TYPE_USER_DEFINED;
    for (size_t i = 0; i < n;) {
        int b;
        int cp = utf8_decode((const unsigned char*)s + i, n - i, &b);
        int byte = literal ? -1 : codepoint_to_byte(cp);
        if (byte >= 0) {
            if (used + 1 >= out_bytes) break;
            out[used++] = (char)byte;
            written++;
        } else { /* not a stand-in character: copy its bytes as they are */
            if (used + (size_t)b >= out_bytes) break;
            memcpy(out + used, s + i, (size_t)b);
            used += (size_t)b;
            written += (size_t)b;
        }
        i += (size_t)b;
    }
    out[used] = 0;
    return written;
}
