/*
 * gguf.c: bounds-checked GGUF parsing and dequantization (see gguf.h).
 *
 * Layout of a GGUF file (little-endian):
 *   "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   n_kv x  (string key, u32 type, value)          string = u64 len + bytes
 *   n_tensors x (string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset)
 *   padding to `general.alignment` (default 32), then the tensor data; each
 *   tensor's offset is relative to that start.
 * Every read goes through a cursor that refuses to step past the end, and
 * every count is checked against the bytes that remain before anything is
 * allocated for it, so a hostile header cannot make us allocate terabytes.
 */
#include "gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "marlin.h"

typedef struct cursor {
    const uint8_t* data;
    size_t size;
    size_t pos;
    char* error;
    size_t error_bytes;
    int failed;
} cursor;

static void fail(cursor* c, const char* fmt, ...) {
    if (c->failed) return; /* keep the first, most specific message */
    c->failed = 1;
    va_list args;
    va_start(args, fmt);
    vsnprintf(c->error, c->error_bytes, fmt, args);
    va_end(args);
}

static const uint8_t* take(cursor* c, uint64_t bytes, const char* what) {
    if (c->failed) return NULL;
    if (bytes > c->size - c->pos) {
        fail(c, "file truncated or corrupt: %s needs %llu bytes at offset %zu, only %zu remain",
             what, (unsigned long long)bytes, c->pos, c->size - c->pos);
        return NULL;
    }
    const uint8_t* p = c->data + c->pos;
    c->pos += (size_t)bytes;
    return p;
}

static uint64_t read_le(const uint8_t* p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t read_u32(cursor* c, const char* what) {
    const uint8_t* p = take(c, 4, what);
    return p ? (uint32_t)read_le(p, 4) : 0;
}
static uint64_t read_u64(cursor* c, const char* what) {
    const uint8_t* p = take(c, 8, what);
    return p ? read_le(p, 8) : 0;
}

static gguf_string read_string(cursor* c, const char* what) {
    gguf_string s = {NULL, 0};
    uint64_t len = read_u64(c, what);
    const uint8_t* p = take(c, len, what);
    if (p) {
        s.ptr = (const char*)p;
        s.len = len;
    }
    return s;
}

/* Size in bytes of one scalar of `type`, 0 for strings/arrays/unknown. */
static int scalar_bytes(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

static void decode_scalar(uint32_t type, const uint8_t* p, gguf_value* v) {
    int bytes = scalar_bytes(type);
    uint64_t raw = read_le(p, bytes);
    v->scalar.u = raw;
    switch (type) {
    case GGUF_TYPE_INT8: v->scalar.i = (int8_t)raw; break;
    case GGUF_TYPE_INT16: v->scalar.i = (int16_t)raw; break;
    case GGUF_TYPE_INT32: v->scalar.i = (int32_t)raw; break;
    case GGUF_TYPE_INT64: v->scalar.i = (int64_t)raw; break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, 4);
        v->scalar.f = f;
        break;
    }
    case GGUF_TYPE_FLOAT64: memcpy(&v->scalar.f, &raw, 8); break;
    default: break;
    }
}

static void read_value(cursor* c, uint32_t type, gguf_value* v) {
    v->type = type;
    if (type == GGUF_TYPE_STRING) {
        v->string = read_string(c, "string value");
    } else if (type == GGUF_TYPE_ARRAY) {
        v->array_type = read_u32(c, "array type");
        v->array_count = read_u64(c, "array length");
        if (c->failed) return;
        if (v->array_type == GGUF_TYPE_STRING) {
            /* Each string takes at least its 8-byte length: bound the count first. */
            if (v->array_count > (c->size - c->pos) / 8) {
                fail(c, "corrupt file: string array of %llu elements at offset %zu exceeds the file",
                     (unsigned long long)v->array_count, c->pos);
                return;
            }
            v->array_strings = calloc(v->array_count ? v->array_count : 1, sizeof(gguf_string));
            if (!v->array_strings) {
                fail(c, "out of memory reading a string array");
                return;
            }
            for (uint64_t i = 0; i < v->array_count && !c->failed; i++)
                v->array_strings[i] = read_string(c, "string array element");
        } else {
            int bytes = scalar_bytes(v->array_type);
            if (bytes == 0) {
                fail(c, "unsupported array element type %u (nested arrays are not supported)",
                     v->array_type);
                return;
            }
            if (v->array_count > (c->size - c->pos) / (uint64_t)bytes) {
                fail(c, "file truncated or corrupt: array of %llu elements at offset %zu exceeds the file",
                     (unsigned long long)v->array_count, c->pos);
                return;
            }
            v->array_data = take(c, v->array_count * (uint64_t)bytes, "array data");
        }
    } else {
        int bytes = scalar_bytes(type);
        if (bytes == 0) {
            fail(c, "unknown value type %u at offset %zu", type, c->pos);
            return;
        }
        const uint8_t* p = take(c, (uint64_t)bytes, "scalar value");
        if (p) decode_scalar(type, p, v);
    }
}

/* Block geometry of a tensor type: elements per block and bytes per block. */
static int tensor_block(uint32_t type, uint64_t* block_elems, uint64_t* block_bytes) {
    switch (type) {
    case GGUF_TENSOR_F32: *block_elems = 1; *block_bytes = 4; return 0;
    case GGUF_TENSOR_F16: case GGUF_TENSOR_BF16: *block_elems = 1; *block_bytes = 2; return 0;
    case GGUF_TENSOR_Q4_0: *block_elems = 32; *block_bytes = 2 + 16; return 0;
    case GGUF_TENSOR_Q4_1: *block_elems = 32; *block_bytes = 2 + 2 + 16; return 0;
    case GGUF_TENSOR_Q8_0: *block_elems = 32; *block_bytes = 2 + 32; return 0;
    default: return -1;
    }
}

const char* gguf_tensor_type_name(uint32_t type) {
    switch (type) {
    case GGUF_TENSOR_F32: return "F32";
    case GGUF_TENSOR_F16: return "F16";
    case GGUF_TENSOR_BF16: return "BF16";
    case GGUF_TENSOR_Q4_0: return "Q4_0";
    case GGUF_TENSOR_Q4_1: return "Q4_1";
    case GGUF_TENSOR_Q8_0: return "Q8_0";
    default: return "unknown";
    }
}

void gguf_free(gguf_file* file) {
    if (!file) return;
    if (file->kv)
        for (uint64_t i = 0; i < file->n_kv; i++) free(file->kv[i].value.array_strings);
    free(file->kv);
    free(file->tensors);
    free(file->buffer);
    memset(file, 0, sizeof(*file));
}

int gguf_parse(uint8_t* buffer, size_t size, gguf_file* out, char* error, size_t error_bytes) {
    memset(out, 0, sizeof(*out));
    out->buffer = buffer;
    out->size = size;
    cursor c = {buffer, size, 0, error, error_bytes, 0};
    const uint8_t* magic = take(&c, 4, "magic");
    if (magic && memcmp(magic, "GGUF", 4) != 0) fail(&c, "not a GGUF file (bad magic number)");
    out->version = read_u32(&c, "version");
    if (!c.failed && (out->version < 2 || out->version > 3))
        fail(&c, "unsupported GGUF version %u (2 and 3 are supported)", out->version);
    out->n_tensors = read_u64(&c, "tensor count");
    out->n_kv = read_u64(&c, "metadata count");
    /* A key-value pair takes at least 8 + 4 + 1 bytes, a tensor entry 8 + 4 + 4 + 8. */
    if (!c.failed && out->n_kv > (size - c.pos) / 13)
        fail(&c, "corrupt file: %llu metadata entries cannot fit in %zu bytes",
             (unsigned long long)out->n_kv, size);
    if (!c.failed && out->n_tensors > (size - c.pos) / 24)
        fail(&c, "corrupt file: %llu tensors cannot fit in %zu bytes",
             (unsigned long long)out->n_tensors, size);
    if (!c.failed) {
        out->kv = calloc(out->n_kv ? out->n_kv : 1, sizeof(gguf_kv));
        out->tensors = calloc(out->n_tensors ? out->n_tensors : 1, sizeof(gguf_tensor));
        if (!out->kv || !out->tensors) fail(&c, "out of memory");
    }
    for (uint64_t i = 0; i < out->n_kv && !c.failed; i++) {
        out->kv[i].key = read_string(&c, "metadata key");
        uint32_t type = read_u32(&c, "metadata type");
        if (!c.failed) read_value(&c, type, &out->kv[i].value);
    }
    uint64_t alignment = 32;
    if (!c.failed) {
        int64_t a;
        if (gguf_get_int(out, "general.alignment", &a) == 0) {
            if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0) fail(&c, "invalid general.alignment %lld", (long long)a);
            else alignment = (uint64_t)a;
        }
    }
    uint64_t* offsets = c.failed ? NULL : calloc(out->n_tensors ? out->n_tensors : 1, sizeof(uint64_t));
    if (!c.failed && !offsets) fail(&c, "out of memory");
    for (uint64_t i = 0; i < out->n_tensors && !c.failed; i++) {
        gguf_tensor* t = &out->tensors[i];
        t->name = read_string(&c, "tensor name");
        t->n_dims = read_u32(&c, "tensor dimension count");
        if (c.failed) break;
        if (t->n_dims < 1 || t->n_dims > 4) {
            fail(&c, "tensor '%.*s' has %u dimensions (1..4 supported)", (int)t->name.len, t->name.ptr, t->n_dims);
            break;
        }
        t->n_elements = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            t->dims[d] = read_u64(&c, "tensor dimension");
            if (c.failed) break;
            if (t->dims[d] == 0 || t->dims[d] > size * 2 || t->n_elements > (UINT64_MAX / 4) / t->dims[d]) {
                fail(&c, "tensor '%.*s' has an invalid dimension %llu", (int)t->name.len, t->name.ptr,
                     (unsigned long long)t->dims[d]);
                break;
            }
            t->n_elements *= t->dims[d];
        }
        for (uint32_t d = t->n_dims; d < 4; d++) t->dims[d] = 1;
        t->type = read_u32(&c, "tensor type");
        offsets[i] = read_u64(&c, "tensor offset");
        if (c.failed) break;
        uint64_t block_elems, block_bytes;
        if (tensor_block(t->type, &block_elems, &block_bytes) != 0) {
            fail(&c, "tensor '%.*s' has unsupported type %u", (int)t->name.len, t->name.ptr, t->type);
            break;
        }
        if (t->dims[0] % block_elems != 0) {
            fail(&c, "tensor '%.*s' (%s): row length %llu is not a multiple of %llu", (int)t->name.len,
                 t->name.ptr, gguf_tensor_type_name(t->type), (unsigned long long)t->dims[0],
                 (unsigned long long)block_elems);
            break;
        }
        t->n_bytes = t->n_elements / block_elems * block_bytes;
    }
    if (!c.failed) {
        uint64_t data_start = (c.pos + alignment - 1) / alignment * alignment;
        if (data_start > size) fail(&c, "file truncated: tensor data section starts past the end");
        for (uint64_t i = 0; i < out->n_tensors && !c.failed; i++) {
            gguf_tensor* t = &out->tensors[i];
            uint64_t avail = size - data_start;
            if (offsets[i] > avail || t->n_bytes > avail - offsets[i]) {
                fail(&c, "file truncated or corrupt: tensor '%.*s' (%llu bytes at data offset %llu) "
                     "extends past the end of the file (%zu bytes)", (int)t->name.len, t->name.ptr,
                     (unsigned long long)t->n_bytes, (unsigned long long)offsets[i], size);
                break;
            }
            t->data = buffer + data_start + offsets[i];
        }
    }
    free(offsets);
    if (c.failed) {
        gguf_free(out);
        return -1;
    }
    return 0;
}

int gguf_open(const char* path, gguf_file* out, char* error, size_t error_bytes) {
    memset(out, 0, sizeof(*out));
    FILE* f = fopen(path, "rb");
    if (!f) {
        snprintf(error, error_bytes, "cannot open '%s'", path);
        return -1;
    }
    uint8_t* buffer = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snprintf(error, error_bytes, "cannot determine the size of '%s'", path);
        return -1;
    }
    buffer = malloc(size ? (size_t)size : 1);
    if (!buffer || fread(buffer, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buffer);
        snprintf(error, error_bytes, "cannot read '%s' (%ld bytes)", path, size);
        return -1;
    }
    fclose(f);
    char inner[512];
    if (gguf_parse(buffer, (size_t)size, out, inner, sizeof(inner)) != 0) {
        snprintf(error, error_bytes, "%s: %s", path, inner);
        return -1;
    }
    return 0;
}

int gguf_string_equals(gguf_string s, const char* text) {
    size_t n = strlen(text);
    return s.len == n && memcmp(s.ptr, text, n) == 0;
}

const gguf_value* gguf_find(const gguf_file* file, const char* key) {
    for (uint64_t i = 0; i < file->n_kv; i++)
        if (gguf_string_equals(file->kv[i].key, key)) return &file->kv[i].value;
    return NULL;
}

const gguf_tensor* gguf_find_tensor(const gguf_file* file, const char* name) {
    for (uint64_t i = 0; i < file->n_tensors; i++)
        if (gguf_string_equals(file->tensors[i].name, name)) return &file->tensors[i];
    return NULL;
}

int gguf_get_int(const gguf_file* file, const char* key, int64_t* value) {
    const gguf_value* v = gguf_find(file, key);
    if (!v) return -1;
    switch (v->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_BOOL:
        *value = (int64_t)v->scalar.u; return 0;
    case GGUF_TYPE_UINT64:
        if (v->scalar.u > INT64_MAX) return -1;
        *value = (int64_t)v->scalar.u; return 0;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        *value = v->scalar.i; return 0;
    default: return -1;
    }
}

int gguf_get_float(const gguf_file* file, const char* key, double* value) {
    const gguf_value* v = gguf_find(file, key);
    if (!v) return -1;
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) {
        *value = v->scalar.f;
        return 0;
    }
    int64_t i;
    if (gguf_get_int(file, key, &i) != 0) return -1;
    *value = (double)i;
    return 0;
}

int64_t gguf_array_int(const gguf_value* array, uint64_t index) {
    gguf_value element;
    memset(&element, 0, sizeof(element));
    int bytes = scalar_bytes(array->array_type);
    decode_scalar(array->array_type, array->array_data + index * (uint64_t)bytes, &element);
    switch (array->array_type) {
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        return element.scalar.i;
    case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: return (int64_t)element.scalar.f;
    default: return (int64_t)element.scalar.u;
    }
}

static float bf16_to_float(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int gguf_tensor_to_f32(const gguf_tensor* t, float* out, char* error, size_t error_bytes) {
    const uint8_t* p = t->data;
    uint64_t n = t->n_elements;
    switch (t->type) {
    case GGUF_TENSOR_F32:
        memcpy(out, p, n * 4);
        return 0;
    case GGUF_TENSOR_F16:
        for (uint64_t i = 0; i < n; i++) out[i] = marlin_fp16_to_float((uint16_t)read_le(p + 2 * i, 2));
        return 0;
    case GGUF_TENSOR_BF16:
        for (uint64_t i = 0; i < n; i++) out[i] = bf16_to_float((uint16_t)read_le(p + 2 * i, 2));
        return 0;
    case GGUF_TENSOR_Q4_0: /* block: fp16 d, 16 bytes; low nibbles = x[0..15], high = x[16..31] */
        for (uint64_t b = 0; b < n / 32; b++, p += 18) {
            float d = marlin_fp16_to_float((uint16_t)read_le(p, 2));
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = ((p[2 + j] & 0x0F) - 8) * d;
                out[b * 32 + j + 16] = ((p[2 + j] >> 4) - 8) * d;
            }
        }
        return 0;
    case GGUF_TENSOR_Q4_1: /* block: fp16 d, fp16 min, 16 bytes; x = q * d + min */
        for (uint64_t b = 0; b < n / 32; b++, p += 20) {
            float d = marlin_fp16_to_float((uint16_t)read_le(p, 2));
            float m = marlin_fp16_to_float((uint16_t)read_le(p + 2, 2));
            for (int j = 0; j < 16; j++) {
                out[b * 32 + j] = (p[4 + j] & 0x0F) * d + m;
                out[b * 32 + j + 16] = (p[4 + j] >> 4) * d + m;
            }
        }
        return 0;
    case GGUF_TENSOR_Q8_0: /* block: fp16 d, 32 int8 */
        for (uint64_t b = 0; b < n / 32; b++, p += 34) {
            float d = marlin_fp16_to_float((uint16_t)read_le(p, 2));
            for (int j = 0; j < 32; j++) out[b * 32 + j] = (int8_t)p[2 + j] * d;
        }
        return 0;
    default:
        snprintf(error, error_bytes, "tensor '%.*s': unsupported type %u", (int)t->name.len, t->name.ptr, t->type);
        return -1;
    }
}
