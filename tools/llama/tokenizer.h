/*
 * tokenizer.h: GPT-2 style byte-level BPE, as stored in GGUF files
 * (tokenizer.ggml.model = "gpt2").
 *
 * Encoding: (1) optionally cut out special tokens written literally in the
 * text (e.g. "<|im_start|>"); (2) pre-tokenize each remaining span: every
 * digit alone (the "smollm" pre-tokenizer), then the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (3) map each byte of a piece to its printable stand-in character
 * (bytes_to_unicode), (4) merge adjacent symbols, always the pair of lowest
 * merge rank first, until no adjacent pair has a merge rule.
 * Unicode classes are approximated: ASCII letters and every non-ASCII code
 * point except the Unicode spaces count as letters, only 0-9 as digits.
 * Decoding maps the stand-in characters back to bytes.
 */
#ifndef LLAMA_TOKENIZER_H
#define LLAMA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* GGUF token types. */
enum { TOKEN_TYPE_NORMAL = 1, TOKEN_TYPE_UNKNOWN = 2, TOKEN_TYPE_CONTROL = 3,
       TOKEN_TYPE_USER_DEFINED = 4, TOKEN_TYPE_UNUSED = 5, TOKEN_TYPE_BYTE = 6 };

typedef struct llama_tokenizer {
    int n_vocab;
    char** tokens;          /* n_vocab NUL-terminated strings (stand-in characters) */
    int* token_lengths;     /* n_vocab */
    int* token_types;       /* n_vocab, TOKEN_TYPE_* */
    int n_merges;
    int* merge_left;        /* n_merges: ids of the pair merged at rank r */
    int* merge_right;       /* n_merges */
    int bos_id, eos_id;     /* -1 when absent */
    /* hash tables (open addressing), sizes are powers of two */
    int* vocab_table;       /* token string -> id, -1 empty */
    size_t vocab_table_size;
    int64_t* merge_keys;    /* (left << 32 | right), -1 empty */
    int* merge_values;      /* rank of the pair */
    size_t merge_table_size;
    int byte_token[256];    /* id of the single-byte token of each byte, -1 if absent */
    int* special_ids;       /* control / user-defined tokens, longest first */
    int n_special;
} llama_tokenizer;

/*
 * Builds a tokenizer from strings (not NUL-terminated; copied).
 *   tokens/token_lengths/token_types: n_vocab entries (token_types may be NULL: all normal)
 *   merges/merge_lengths: n_merges entries "left right" in rank order
 * Returns 0, or -1 with a message (e.g. a merge naming an unknown token).
 */
int llama_tokenizer_init(llama_tokenizer* tok, int n_vocab, const char* const* tokens,
                         const uint64_t* token_lengths, const int* token_types, int n_merges,
                         const char* const* merges, const uint64_t* merge_lengths, int bos_id,
                         int eos_id, char* error, size_t error_bytes);
void llama_tokenizer_free(llama_tokenizer* tok);

/* Token id of an exact token string, -1 if none. */
int llama_tokenizer_find(const llama_tokenizer* tok, const char* text, size_t length);

/* Rank of the merge rule for the adjacent pair (left, right), -1 if none. */
int llama_tokenizer_merge_rank(const llama_tokenizer* tok, int left, int right);

/*
 * Encodes `length` bytes of text. With parse_special, literal special-token
 * strings become their ids. Writes at most max_ids ids; returns the number of
 * tokens the text needs (may exceed max_ids: call again with more room), or -1
 * on allocation failure.
 */
int llama_tokenizer_encode(const llama_tokenizer* tok, const char* text, size_t length,
                           int parse_special, int* ids, int max_ids);

/*
 * Bytes of one token appended to `out` (capacity out_bytes, NUL-terminated);
 * special tokens give their literal text. Returns the bytes written.
 */
size_t llama_tokenizer_decode_token(const llama_tokenizer* tok, int id, char* out, size_t out_bytes);

/* Splits text into pre-tokens; calls emit(begin, end, context) for each piece. */
void llama_pretokenize(const char* text, size_t length,
                       void (*emit)(const char* begin, size_t bytes, void* context), void* context);

#endif /* LLAMA_TOKENIZER_H */
