/*
 * json.h: a small, bounds-checked JSON reader for config.json, safetensors
 * headers and tokenizer.json. Parses into a tree (objects keep key order);
 * nesting deeper than 64 levels is refused. Strings are decoded (escapes,
 * \uXXXX with surrogate pairs, to UTF-8) and NUL-terminated.
 */
#ifndef LLAMA_JSON_H
#define LLAMA_JSON_H

#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

typedef struct json_value {
    enum json_type type;
    double number;              /* JSON_NUMBER; JSON_BOOL: 0 or 1 */
    char* string;               /* JSON_STRING (owned, NUL-terminated) */
    size_t string_length;       /* bytes, without the NUL (a string may contain \u0000) */
    int count;                  /* JSON_ARRAY / JSON_OBJECT: number of items */
    struct json_value* items;   /* count values (owned) */
    char** keys;                /* JSON_OBJECT: count keys (owned) */
} json_value;

/* 0, or -1 + error (with the byte offset). */
int json_parse(const char* text, size_t length, json_value* out, char* error, size_t error_bytes);
void json_free(json_value* value);
/* Member of an object, NULL when absent or `object` is not an object. */
const json_value* json_get(const json_value* object, const char* key);
/* Number member as int / double; returns `fallback` when absent or not a number. */
double json_get_number(const json_value* object, const char* key, double fallback);

#endif /* LLAMA_JSON_H */
