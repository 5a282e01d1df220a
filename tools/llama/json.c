/*
 * json.c: recursive-descent JSON parser (see json.h). Every read checks the
 * position against the end; depth is limited so hostile input cannot
 * exhaust the stack.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char* text;
    size_t length, pos;
    char* error;
    size_t error_bytes;
    int failed;
} parser;

static void fail(parser* p, const char* what) {
    if (p->failed) return;
    p->failed = 1;
    snprintf(p->error, p->error_bytes, "JSON: %s at byte %zu", what, p->pos);
}

static void skip_space(parser* p) {
    while (p->pos < p->length && strchr(" \t\r\n", p->text[p->pos]) && p->text[p->pos]) p->pos++;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser* p, unsigned* out) {
    if (p->length - p->pos < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p->text[p->pos + i]);
        if (h < 0) return -1;
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned cp, char* out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at p->pos (which is at the opening quote). */
static char* parse_string(parser* p, size_t* out_length) {
    p->pos++; /* the quote */
    /* decoded text is never longer than the escaped source */
    size_t start = p->pos, end = start;
    while (end < p->length && p->text[end] != '"') end += p->text[end] == '\\' ? 2 : 1;
    if (end >= p->length) {
        fail(p, "unterminated string");
        return NULL;
    }
    char* s = malloc(end - start + 1);
    if (!s) {
        fail(p, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (p->pos < end) {
        char c = p->text[p->pos++];
        if (c != '\\') {
            s[n++] = c;
            continue;
        }
        char e = p->text[p->pos++];
        switch (e) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(p, &cp) != 0) { fail(p, "bad \\u escape"); free(s); return NULL; }
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->text[p->pos] == '\\' && p->text[p->pos + 1] == 'u') {
                unsigned low;
                p->pos += 2;
                if (read_hex4(p, &low) != 0 || low < 0xDC00 || low > 0xDFFF) { fail(p, "bad surrogate pair"); free(s); return NULL; }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            /* 6 source bytes always cover the at most 4 output bytes */
            n += put_utf8(cp, s + n);
            break;
        }
        default: fail(p, "bad escape"); free(s); return NULL;
        }
    }
    p->pos = end + 1;
    s[n] = 0;
    *out_length = n;
    return s;
}

static void parse_value(parser* p, json_value* v, int depth);

static void append(parser* p, json_value* v, int* capacity, char* key) {
    if (v->count == *capacity) {
        *capacity = *capacity ? *capacity * 2 : 8;
        json_value* items = realloc(v->items, (size_t)*capacity * sizeof(json_value));
        char** keys = v->type == JSON_OBJECT ? realloc(v->keys, (size_t)*capacity * sizeof(char*)) : NULL;
        if (!items || (v->type == JSON_OBJECT && !keys)) {
            if (items) v->items = items;
            if (keys) v->keys = keys;
            fail(p, "out of memory");
            free(key);
            return;
        }
        v->items = items;
        if (keys) v->keys = keys;
    }
    memset(&v->items[v->count], 0, sizeof(json_value));
    if (v->type == JSON_OBJECT) v->keys[v->count] = key;
    v->count++;
}

static void parse_value(parser* p, json_value* v, int depth) {
    memset(v, 0, sizeof(*v));
    skip_space(p);
    if (depth > 64) { fail(p, "nesting too deep"); return; }
    if (p->pos >= p->length) { fail(p, "unexpected end"); return; }
    char c = p->text[p->pos];
    if (c == '{' || c == '[') {
        v->type = c == '{' ? JSON_OBJECT : JSON_ARRAY;
        char close = c == '{' ? '}' : ']';
        int capacity = 0;
        p->pos++;
        skip_space(p);
        if (p->pos < p->length && p->text[p->pos] == close) { p->pos++; return; }
        while (!p->failed) {
            char* key = NULL;
            if (v->type == JSON_OBJECT) {
                skip_space(p);
                if (p->pos >= p->length || p->text[p->pos] != '"') { fail(p, "expected a key"); return; }
                size_t key_length;
                key = parse_string(p, &key_length);
                if (!key) return;
                skip_space(p);
                if (p->pos >= p->length || p->text[p->pos] != ':') { free(key); fail(p, "expected ':'"); return; }
                p->pos++;
            }
            append(p, v, &capacity, key);
            if (p->failed) return;
            parse_value(p, &v->items[v->count - 1], depth + 1);
            skip_space(p);
            if (p->failed) return;
            if (p->pos < p->length && p->text[p->pos] == ',') { p->pos++; continue; }
            if (p->pos < p->length && p->text[p->pos] == close) { p->pos++; return; }
            fail(p, "expected ',' or a closing bracket");
        }
        return;
    }
    if (c == '"') {
        v->type = JSON_STRING;
        v->string = parse_string(p, &v->string_length);
        return;
    }
    static const char* words[3] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t len = strlen(words[w]);
        if (p->length - p->pos >= len && memcmp(p->text + p->pos, words[w], len) == 0) {
            v->type = w == 2 ? JSON_NULL : JSON_BOOL;
            v->number = w == 0;
            p->pos += len;
            return;
        }
    }
    /* a number: copy the candidate characters to a bounded buffer for strtod */
    char buf[64];
    size_t n = 0;
    while (p->pos + n < p->length && n < sizeof(buf) - 1 && strchr("+-0123456789.eE", p->text[p->pos + n]) &&
           p->text[p->pos + n])
        n++;
    if (n == 0) { fail(p, "unexpected character"); return; }
    memcpy(buf, p->text + p->pos, n);
    buf[n] = 0;
    char* end;
    v->type = JSON_NUMBER;
    v->number = strtod(buf, &end);
    if (end == buf) { fail(p, "bad number"); return; }
    p->pos += (size_t)(end - buf);
}

int json_parse(const char* text, size_t length, json_value* out, char* error, size_t error_bytes) {
    parser p = {text, length, 0, error, error_bytes, 0};
    parse_value(&p, out, 0);
    skip_space(&p);
    if (!p.failed && p.pos != length) fail(&p, "trailing characters");
    if (p.failed) {
        json_free(out);
        return -1;
    }
    return 0;
}

void json_free(json_value* v) {
    if (!v) return;
    for (int i = 0; i < v->count; i++) {
        json_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    memset(v, 0, sizeof(*v));
}

const json_value* json_get(const json_value* object, const char* key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0) return &object->items[i];
    return NULL;
}

double json_get_number(const json_value* object, const char* key, double fallback) {
    const json_value* v = json_get(object, key);
    return v && (v->type == JSON_NUMBER || v->type == JSON_BOOL) ? v->number : fallback;
}
