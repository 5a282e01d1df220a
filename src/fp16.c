/* fp16.c: IEEE half <-> float on the host, round-to-nearest-even, no hardware support needed. */
#include <string.h>

#include "marlin.h"

uint16_t marlin_fp16_from_float(float value) {
    uint32_t x;
    memcpy(&x, &value, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs_bits = x & 0x7FFFFFFFu;
    if (abs_bits > 0x7F800000u) return (uint16_t)(sign | 0x7E00u); /* NaN stays NaN */
    if (abs_bits >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* >= 65520 rounds to Inf */
    if (abs_bits < 0x33000000u) return (uint16_t)sign;             /* below 2^-25: rounds to 0 */
    uint32_t result, remainder, halfway;
    if (abs_bits < 0x38800000u) {
        /* Subnormal half: value / 2^-24, rounded. */
        uint32_t mantissa = (abs_bits & 0x7FFFFFu) | 0x800000u;
        int shift = 126 - (int)(abs_bits >> 23);
        result = mantissa >> shift;
        remainder = mantissa & ((1u << shift) - 1);
        halfway = 1u << (shift - 1);
    } else {
        /* Normal: rebias the exponent (127 -> 15) and drop 13 mantissa bits; a carry
         * out of the mantissa correctly bumps the exponent. */
        result = (abs_bits - 0x38000000u) >> 13;
        remainder = abs_bits & 0x1FFFu;
        halfway = 0x1000u;
    }
    if (remainder > halfway || (remainder == halfway && (result & 1u))) result++;
    return (uint16_t)(sign | result);
}

float marlin_fp16_to_float(uint16_t bits) {
    uint32_t sign = (uint32_t)(bits & 0x8000u) << 16;
    uint32_t exponent = (bits >> 10) & 0x1Fu;
    uint32_t mantissa = bits & 0x3FFu;
    uint32_t out;
    if (exponent == 0) {
        float magnitude = (float)mantissa * (1.0f / 16777216.0f); /* subnormal: m * 2^-24 */
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) out = sign | 0x7F800000u | (mantissa << 13);
    else out = sign | ((exponent + 112) << 23) | (mantissa << 13);
    float value;
    memcpy(&value, &out, sizeof value);
    return value;
}
