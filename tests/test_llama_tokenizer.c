/*
 * test_llama_tokenizer.c: byte-level BPE of marlin-llama on a synthetic
 * vocabulary built here (the real SmolLM2 vocabulary is checked by
 * test_llama_model).
 *
 * Checks: the pre-tokenizer's splits (words with their leading space,
 * contractions, single digits, whitespace runs that leave the last space to
 * the next word); merges applied by rank, not by position; special tokens cut
 * out of the text only when asked; decode(encode(x)) == x for random byte
 * strings, invalid UTF-8 included; a merge naming an unknown token refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tokenizer.h"

/* GPT-2's stand-in character of a byte, as UTF-8. */
static int stand_in(int byte, char* out) {
    int printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
    int cp = byte;
    if (!printable) {
        int shifted = 0;
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) shifted++;
        cp = 256 + shifted;
    }
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

typedef struct vocab {
    char* tokens[400];
    uint64_t lengths[400];
    int types[400];
    int n;
} vocab;

static int add_token(vocab* v, const char* s, int type) {
    v->tokens[v->n] = strdup(s);
    v->lengths[v->n] = strlen(s);
    v->types[v->n] = type;
    return v->n++;
}

/* 256 byte tokens + a few merged ones + 2 specials; merges in `merges`. */
static int build(llama_tokenizer* tok, const char* const* merges, int n_merges, char* error) {
    vocab v = {0};
    add_token(&v, "<|endoftext|>", TOKEN_TYPE_CONTROL);
    add_token(&v, "<|im_start|>", TOKEN_TYPE_CONTROL);
    for (int b = 0; b < 256; b++) {
        char s[4] = {0};
        stand_in(b, s);
        add_token(&v, s, TOKEN_TYPE_NORMAL);
    }
    const char* extra[] = {"he", "el", "ll", "hell", "hello", "\xC4\xA0w", "\xC4\xA0wo", "or", "\xC4\xA0wor",
                           "\xC4\xA0world", "lo", "hel"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) add_token(&v, extra[i], TOKEN_TYPE_NORMAL);
    uint64_t merge_lengths[32];
    for (int i = 0; i < n_merges; i++) merge_lengths[i] = strlen(merges[i]);
    int rc = llama_tokenizer_init(tok, v.n, (const char* const*)v.tokens, v.lengths, v.types, n_merges, merges,
                                  merge_lengths, -1, 0, error, 256);
    for (int i = 0; i < v.n; i++) free(v.tokens[i]);
    return rc;
}

static int encode_strings(const llama_tokenizer* tok, const char* text, int special, char* joined, size_t bytes) {
    int ids[256];
    int n = llama_tokenizer_encode(tok, text, strlen(text), special, ids, 256);
    joined[0] = 0;
    for (int i = 0; i < n && i < 256; i++) {
        if (i) strncat(joined, "|", bytes - strlen(joined) - 1);
        strncat(joined, tok->tokens[ids[i]], bytes - strlen(joined) - 1);
    }
    return n;
}

typedef struct pieces {
    char text[1024];
} pieces;

static void collect(const char* begin, size_t bytes, void* context) {
    pieces* p = context;
    if (p->text[0]) strncat(p->text, "|", sizeof(p->text) - strlen(p->text) - 1);
    size_t len = strlen(p->text);
    if (len + bytes < sizeof(p->text)) {
        memcpy(p->text + len, begin, bytes);
        p->text[len + bytes] = 0;
    }
}

static void check_split(const char* text, const char* expected) {
    pieces p = {{0}};
    llama_pretokenize(text, strlen(text), collect, &p);
    test_check(strcmp(p.text, expected) == 0, "pre-tokenize \"%s\" -> \"%s\" (want \"%s\")", text, p.text, expected);
}

int main(void) {
    test_seed("test_llama_tokenizer");
    check_split("Hello world", "Hello| world");
    check_split("I'm here, they're", "I|'m| here|,| they|'re");
    check_split("abc 123", "abc| |1|2|3");
    check_split("a  b\n\nc", "a| | b|\n|\n|c");
    check_split("end   ", "end|   ");
    check_split("x!!  ?", "x|!!| | ?");
    check_split("caf\xC3\xA9 na\xC3\xAFve", "caf\xC3\xA9| na\xC3\xAFve");

    char error[256] = "";
    llama_tokenizer tok;
    const char* merges_a[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or", "\xC4\xA0wor l", "e l"};
    /* "Ġwor l" names two tokens, but their concatenation "Ġworl" is not one: refused */
    test_check(build(&tok, merges_a, 9, error) != 0 && strstr(error, "merge"), "merge of an unknown token refused: %s", error);
    const char* merges_b[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or", "e l"};
    int rc = build(&tok, merges_b, 8, error);
    test_check(rc == 0, "synthetic tokenizer builds (%s)", error);
    if (rc != 0) return test_finish();
    char joined[1024];
    encode_strings(&tok, "hello world", 0, joined, sizeof(joined));
    test_check(strcmp(joined, "hello|\xC4\xA0wor|l|d") == 0, "\"hello world\" -> %s", joined);
    /* rank decides, not position: in "hel", (h,e) rank 0 beats (e,l) rank 7 */
    encode_strings(&tok, "hel", 0, joined, sizeof(joined));
    test_check(strcmp(joined, "he|l") == 0, "\"hel\" -> %s (rank 0 merge first)", joined);
    llama_tokenizer_free(&tok);
    const char* merges_c[] = {"e l", "h e", "l o"};
    build(&tok, merges_c, 3, error);
    encode_strings(&tok, "hel", 0, joined, sizeof(joined));
    test_check(strcmp(joined, "h|el") == 0, "\"hel\" with (e,l) ranked first -> %s", joined);
    encode_strings(&tok, "hello", 0, joined, sizeof(joined));
    /* (e,l) rank 0 -> h el l o; (h,el) has no rule; (l,o) rank 2 -> h el lo */
    test_check(strcmp(joined, "h|el|lo") == 0, "\"hello\" -> %s", joined);
    int ids[64];
    int n = llama_tokenizer_encode(&tok, "a<|im_start|>b", 14, 1, ids, 64);
    test_check(n == 3 && ids[1] == 1, "special token cut out when parse_special (%d tokens)", n);
    n = llama_tokenizer_encode(&tok, "a<|im_start|>b", 14, 0, ids, 64);
    test_check(n > 3, "special token text is plain text otherwise (%d tokens)", n);
    n = llama_tokenizer_encode(&tok, "hello", 5, 0, ids, 1);
    test_check(n == 3 && ids[0] == llama_tokenizer_find(&tok, "h", 1),
               "encode reports the needed count (%d) when the buffer is short, fills what fits", n);
    /* round trip on random bytes, invalid UTF-8 included */
    int round_trips = 0;
    for (int iter = 0; iter < 200; iter++) {
        char text[80];
        int len = 1 + test_rand_int(79);
        for (int i = 0; i < len; i++) {
            int pick = test_rand_int(4);
            text[i] = (char)(pick == 0 ? 1 + test_rand_int(255) : pick == 1 ? " helo\n1'"[test_rand_int(8)]
                                                                             : 'a' + test_rand_int(26));
        }
        int out_ids[256];
        int m = llama_tokenizer_encode(&tok, text, (size_t)len, 0, out_ids, 256);
        char decoded[512] = "";
        for (int i = 0; i < m && i < 256; i++) llama_tokenizer_decode_token(&tok, out_ids[i], decoded, sizeof(decoded));
        if (m <= 256 && strlen(decoded) == (size_t)len && memcmp(decoded, text, (size_t)len) == 0) round_trips++;
        else if (strlen(decoded) != (size_t)len && memchr(text, 0, (size_t)len) == NULL) {
            printf("  mismatch at iteration %d (length %d)\n", iter, len);
        }
    }
    test_check(round_trips == 200, "decode(encode(x)) == x for %d of 200 random byte strings", round_trips);
    llama_tokenizer_free(&tok);
    return test_finish();
}
