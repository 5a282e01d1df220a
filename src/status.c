/* status.c: status strings and the shape rules every entry point shares. */
#include "marlin.h"

const char* marlin_status_string(marlin_status status) {
    switch (status) {
    case MARLIN_STATUS_SUCCESS: return "success";
    case MARLIN_STATUS_NULL_POINTER: return "a required pointer is NULL";
    case MARLIN_STATUS_MISALIGNED_POINTER: return "a device pointer is not 16-byte aligned";
    case MARLIN_STATUS_UNSUPPORTED_SHAPE: return "unsupported shape: need m >= 1 and k, n multiples of 64 in 64..1048576";
    case MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE: return "unsupported group size: need 32, 64, 128 or k";
    case MARLIN_STATUS_WORKSPACE_TOO_SMALL: return "workspace smaller than marlin_workspace_size()";
    case MARLIN_STATUS_INVALID_VALUE: return "invalid value (NaN/Inf, code out of range, or bad option)";
    case MARLIN_STATUS_NO_DEVICE: return "no CUDA device available";
    case MARLIN_STATUS_UNSUPPORTED_ARCH: return "CUDA device older than sm_80 (Ampere)";
    case MARLIN_STATUS_CUDA_ERROR: return "a CUDA call failed";
    case MARLIN_STATUS_NOT_POSITIVE_DEFINITE: return "Hessian not positive definite even after extra damping";
    case MARLIN_STATUS_OUT_OF_MEMORY: return "out of memory";
    }
    return "unknown status";
}

marlin_status marlin_check_weight_shape(int k, int n, int group_size) {
    if (k <= 0 || n <= 0 || k % MARLIN_SHAPE_MULTIPLE != 0 || n % MARLIN_SHAPE_MULTIPLE != 0 ||
        k > MARLIN_MAX_DIMENSION || n > MARLIN_MAX_DIMENSION)
        return MARLIN_STATUS_UNSUPPORTED_SHAPE;
    if (group_size != 32 && group_size != 64 && group_size != 128 && group_size != k)
        return MARLIN_STATUS_UNSUPPORTED_GROUP_SIZE;
    return MARLIN_STATUS_SUCCESS;
}

int marlin_scale_rows(int k, int group_size) { return (k + group_size - 1) / group_size; }

size_t marlin_packed_weight_bytes(int k, int n) { return (size_t)k * (size_t)n / 2; }

size_t marlin_scale_bytes(int k, int n, int group_size) {
    return 2 * (size_t)marlin_scale_rows(k, group_size) * (size_t)n;
}
