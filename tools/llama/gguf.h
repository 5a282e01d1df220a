/*
 * gguf.h: a bounds-checked reader of GGUF (version 2 and 3) files.
 *
 * The whole file is read into memory; every length, count, offset and tensor
 * extent is checked against the bytes actually present before it is used, so
 * a truncated or corrupted file gives an error message, never a crash.
 * Values point into the file buffer (strings are NOT NUL-terminated).
 * Tensors of type F32, F16, BF16, Q4_0, Q4_1 and Q8_0 dequantize to fp32.
 */
#ifndef LLAMA_GGUF_H
#define LLAMA_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12, GGUF_TYPE_COUNT = 13
};

enum gguf_tensor_type {
    GGUF_TENSOR_F32 = 0, GGUF_TENSOR_F16 = 1, GGUF_TENSOR_Q4_0 = 2, GGUF_TENSOR_Q4_1 = 3,
    GGUF_TENSOR_Q8_0 = 8, GGUF_TENSOR_BF16 = 30
};

typedef struct gguf_string {
    const char* ptr; /* into the file buffer, not NUL-terminated */
    uint64_t len;
} gguf_string;

typedef struct gguf_value {
    uint32_t type;         /* enum gguf_value_type */
    union {
        uint64_t u;        /* unsigned integers and bool */
        int64_t i;         /* signed integers */
        double f;          /* float32 / float64 */
    } scalar;
    gguf_string string;    /* GGUF_TYPE_STRING */
    uint32_t array_type;   /* GGUF_TYPE_ARRAY: element type (never ARRAY) */
    uint64_t array_count;  /* GGUF_TYPE_ARRAY: number of elements */
    const uint8_t* array_data;    /* numeric arrays: array_count packed little-endian elements */
    gguf_string* array_strings;   /* string arrays: array_count strings (owned) */
} gguf_value;

typedef struct gguf_kv {
    gguf_string key;
    gguf_value value;
} gguf_kv;

typedef struct gguf_tensor {
    gguf_string name;
    uint32_t n_dims;       /* 1..4 */
    uint64_t dims[4];      /* dims[0] is the innermost (contiguous) dimension */
    uint32_t type;         /* enum gguf_tensor_type */
    uint64_t n_elements;
    uint64_t n_bytes;
    const uint8_t* data;   /* into the file buffer; n_bytes bytes, checked */
} gguf_tensor;

typedef struct gguf_file {
    uint8_t* buffer;       /* the whole file (owned) */
    size_t size;
    uint32_t version;
    uint64_t n_kv;
    gguf_kv* kv;           /* n_kv entries (owned) */
    uint64_t n_tensors;
    gguf_tensor* tensors;  /* n_tensors entries (owned) */
} gguf_file;

/* Parses `size` bytes (takes ownership of `buffer`, freed by gguf_free even on
 * failure). Returns 0 on success, -1 with a message in `error`. */
int gguf_parse(uint8_t* buffer, size_t size, gguf_file* out, char* error, size_t error_bytes);
/* Reads the file at `path` and parses it. */
int gguf_open(const char* path, gguf_file* out, char* error, size_t error_bytes);
void gguf_free(gguf_file* file);

/* NULL when absent. `key` is a NUL-terminated string. */
const gguf_value* gguf_find(const gguf_file* file, const char* key);
const gguf_tensor* gguf_find_tensor(const gguf_file* file, const char* name);
/* Integer / float value of a numeric key; returns -1 when absent or not numeric. */
int gguf_get_int(const gguf_file* file, const char* key, int64_t* value);
int gguf_get_float(const gguf_file* file, const char* key, double* value);
/* Element `index` of a numeric array as int64 (array bounds checked by the caller). */
int64_t gguf_array_int(const gguf_value* array, uint64_t index);
/* 1 when `s` equals the NUL-terminated `text`. */
int gguf_string_equals(gguf_string s, const char* text);

/* Dequantizes a tensor into `out` (n_elements floats). Returns -1 for an
 * unsupported type or a row length that is not a multiple of the block. */
int gguf_tensor_to_f32(const gguf_tensor* tensor, float* out, char* error, size_t error_bytes);
/* Name of a tensor type, e.g. "Q4_1"; "unknown" for others. */
const char* gguf_tensor_type_name(uint32_t type);

#endif /* LLAMA_GGUF_H */
