/*
 * matmul.cu: the host side of marlin_matmul and marlin_matmul_swiglu:
 * argument checks, the table of kernel variants (each compiled with the plain
 * and the SwiGLU epilogue), the choice of variant and grid for a shape, the
 * workspace layout, the copy-engine descriptors (sm_90), and the launches
 * (one per 64- or 128-row chunk of A, or several 16-row chunks side by side).
 */
#include <cudaTypedefs.h> /* PFN_cuTensorMapEncodeTiled */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "marlin.h"
#include "marlin_kernel.cuh"
#include "plan_internal.h"

namespace {

using marlin::Int4Symmetric;
using marlin::KernelArgs;
using marlin::TileConfig;

constexpr int kMinItersPerBlock = 4;
/* Cluster mode (sm_90): at most 8 blocks per cluster (the portable size), and
 * at least 2 k steps per block (no global reduction to amortize, but a block
 * still fills its pipeline). The pre-sm_90 test build keeps the striped path. */
constexpr int kMaxClusterSplit = 8, kMinClusterIters = 2;
#ifdef MARLIN_NO_COPY_ENGINE
constexpr bool kClusterMode = false;
#else
constexpr bool kClusterMode = true;
#endif
/* Whether the library holds sm_90a code (warpgroup MMA); CMake defines
 * MARLIN_HAVE_SM90A when 90a is among the CUDA architectures. */
#ifdef MARLIN_HAVE_SM90A
constexpr bool kHaveSm90a = true;
#else
constexpr bool kHaveSm90a = false;
#endif
constexpr int kMaxChunkRows = 128; /* rows of A one block row covers at most (M_BLOCKS <= 8) */
/* The workspace starts with one arrival counter per possible 64-column slice
 * of the largest n (a launch of several row chunks uses chunks x slices of
 * them, never more), so the counters sit at the same place for every shape and
 * partial tiles of one call never land on counters of another. */
constexpr int kCounterCount = MARLIN_MAX_DIMENSION / 64;
constexpr size_t kCounterRegionBytes = sizeof(int) * kCounterCount;
/* marlin_workspace_size scans every row count up to this one (then m). */
constexpr int kWorkspaceScanRows = 256;
/* Layers under this many weights (k * n: 2 MB packed) are "tiny": see split_rows. */
constexpr long long kTinyLayer = 4ll << 20;

using KernelFn = void (*)(const KernelArgs);

using marlin::Epilogue; /* what a launch stores: see marlin_kernel.cuh */
using marlin::kPlainEpilogue;
using marlin::kSwigluEpilogue;
using marlin::kRowScaledEpilogue;
using marlin::kRowScaledSwigluEpilogue;
using marlin::kResidualEpilogue;
using marlin::kEpilogueCount;

/* One instantiated kernel and the facts the host needs about it. */
struct KernelVariant {
    int m_blocks, n_tiles, k_tiles, stages, blocks_per_sm;
    bool warpgroup_mma; /* sm_90a only: needs a library built for 90a */
    int min_rows;       /* serves launches of min_rows .. max_rows rows */
    int max_rows;       /* 16 * m_blocks, or 8 for an 8-row variant */
    int min_n;          /* ... whose n is at least this */
    long long max_weights; /* ... and whose k * n is below this (0: any) */
    int smem_bytes;
    int slot_floats;
    KernelFn kernels[kEpilogueCount]; /* the kernel of each Epilogue (NULL: the RMSNorm ones from 17 rows) */
};

/* The kernel of one variant and epilogue; NULL for an RMSNorm epilogue the
 * tile shape lacks (see has_rms_epilogues). */
template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, int BLOCKS_PER_SM, bool WARPGROUP_MMA, bool EIGHT_ROWS,
          int EPILOGUE>
KernelFn kernel_of() {
    if constexpr (marlin::rms_epilogue(EPILOGUE) &&
                  !marlin::has_rms_epilogues<M_BLOCKS, N_TILES, K_TILES, STAGES, WARPGROUP_MMA>())
        return nullptr;
    else
        return marlin::marlin_gemm_kernel<Int4Symmetric, M_BLOCKS, N_TILES, K_TILES, STAGES, BLOCKS_PER_SM,
                                          WARPGROUP_MMA, EIGHT_ROWS, EPILOGUE>;
}

template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES, int BLOCKS_PER_SM = 1, bool WARPGROUP_MMA = false,
          bool EIGHT_ROWS = false>
KernelVariant make_variant(int min_n = 0, int min_rows = 16 * (M_BLOCKS - 1) + 1, long long max_weights = 0) {
    using Cfg = TileConfig<M_BLOCKS, N_TILES, K_TILES, STAGES, marlin::k_groups(M_BLOCKS, N_TILES, WARPGROUP_MMA)>;
#define MARLIN_KERNEL_OF(E) kernel_of<M_BLOCKS, N_TILES, K_TILES, STAGES, BLOCKS_PER_SM, WARPGROUP_MMA, EIGHT_ROWS, E>()
    return {M_BLOCKS, N_TILES, K_TILES, STAGES, BLOCKS_PER_SM, WARPGROUP_MMA, min_rows, EIGHT_ROWS ? 8 : 16 * M_BLOCKS,
            min_n, max_weights, Cfg::kSmemBytes, Cfg::kSlotFloats,
            {MARLIN_KERNEL_OF(kPlainEpilogue), MARLIN_KERNEL_OF(kSwigluEpilogue), MARLIN_KERNEL_OF(kRowScaledEpilogue),
             MARLIN_KERNEL_OF(kRowScaledSwigluEpilogue), MARLIN_KERNEL_OF(kResidualEpilogue)}};
#undef MARLIN_KERNEL_OF
}
/* 1..8 rows (mma.sync with the weights as the M operand, 8-row accumulators). */
template <int N_TILES, int K_TILES, int STAGES, int BLOCKS_PER_SM>
KernelVariant make_eight_row_variant() {
    return make_variant<1, N_TILES, K_TILES, STAGES, BLOCKS_PER_SM, false, true>(0, 1);
}
template <int M_BLOCKS, int N_TILES, int K_TILES, int STAGES>
KernelVariant make_warpgroup_variant(int min_n, int min_rows, long long max_weights = 0) {
    return make_variant<M_BLOCKS, N_TILES, K_TILES, STAGES, 1, true>(min_n, min_rows, max_weights);
}

/* Every variant the library ships, in order of preference: plan_launch
 * takes the first that serves the launch's rows and n, fits the device, and
 * whose tile width divides n, else the first that serves and fits. Measured
 * on the H100 (bench/NOTES.md): for up to 16 rows 256-column tiles, whose
 * 16-row strips are 2 KB contiguous in memory, and two blocks per SM stream
 * weights fastest; from 17 rows warpgroup MMA (sm_90a) wins, with 256-column
 * tiles where n >= 8192 (32+ column slices) and 128-column tiles below
 * (narrower layers need more slices, and their partial tiles are half the
 * size to sum), and up to 32 rows 128-column tiles two blocks per SM on
 * layers under 84M weights; 128 rows take 128-column tiles up to 192M weights. The
 * mma.sync variants from 17 rows serve GPUs without sm_90a; the 4-stage
 * one-block variants fit the 99 KB of sm_86 / sm_89. */
constexpr int kWideN = 8192;
constexpr long long kLargeLayer = 192ll << 20; /* weights (k * n): 96 MB packed */
constexpr long long kMidLayer = 84ll << 20;    /* weights (k * n): 42 MB packed */
const KernelVariant kVariants[] = {
    /* 1..16 rows; from 9 rows, layers under 192M weights (llama2-7b,
     * llama3-8b, llama2-70b's qkv and o) run faster with 128-column tiles
     * (llama3-8b m = 16: 80.5 vs 89.1 us); up to 8 rows, accumulators for 8
     * rows only (llama2-7b m = 1: 58.2 vs 55.2 us, bench/NOTES.md step 30) */
    make_variant<1, 2, 8, 6, 2>(0, 9, kLargeLayer), make_eight_row_variant<4, 8, 4, 2>(),
    make_variant<1, 4, 8, 4, 2>(), make_variant<1, 2, 8, 6, 2>(), make_variant<1, 1, 8, 8, 2>(),
    make_variant<1, 2, 8, 4>(), make_variant<1, 1, 8, 4>(),
    /* 17..32 rows; layers under 84M weights (llama2-70b's qkv and o and
     * smaller) run faster with 128-column tiles two blocks per SM
     * (bench/NOTES.md step 40: llama2-13b down at m = 17 30.1 -> 23.5 us);
     * from llama2-7b's gate_up (86M) on they lose (26.7 -> 28.0 us) */
    make_variant<2, 2, 8, 6, 2, true>(0, 17, kMidLayer),
    make_warpgroup_variant<2, 4, 8, 6>(kWideN, 17), make_warpgroup_variant<2, 2, 8, 8>(0, 17),
    make_variant<2, 4, 8, 4>(kWideN), make_variant<2, 2, 8, 4>(), make_variant<2, 4, 8, 4>(),
    make_variant<2, 4, 8, 3, 2>(), make_variant<2, 2, 8, 8>(), make_variant<2, 1, 8, 8>(), make_variant<2, 1, 8, 4>(),
    /* 33..64 rows */
    make_warpgroup_variant<4, 4, 8, 6>(kWideN, 33), make_warpgroup_variant<4, 2, 8, 8>(0, 33),
    /* 65..128 rows (sm_90a): one launch reads the weights once for 128 rows */
    make_warpgroup_variant<8, 2, 8, 5>(0, 65, kLargeLayer), make_warpgroup_variant<8, 4, 8, 4>(0, 65),
    make_warpgroup_variant<8, 4, 4, 8>(0, 65),
    /* 33..48 rows */
    make_variant<3, 4, 4, 6>(), make_variant<3, 4, 4, 4>(), make_variant<3, 2, 4, 4>(), make_variant<3, 1, 8, 3>(),
    /* 49..64 rows */
    make_variant<4, 4, 8, 4>(kWideN), make_variant<4, 2, 4, 4>(), make_variant<4, 4, 8, 4>(),
    make_variant<4, 4, 4, 6>(), make_variant<4, 4, 4, 4>(), make_variant<4, 1, 8, 3>(),
};

/* The device facts planning reads (plan_internal.h, which tests fill in by hand). */
typedef marlin_device_facts DeviceInfo;

struct LaunchPlan {
    const KernelVariant* variant;
    int grid;          /* striped partition: blocks */
    int iters_per_block;
    int slices;
    int cluster_split; /* > 1: blocks per cluster in cluster mode (grid: slices x cluster_split) */
};

/* Device facts are fixed for the life of the process, so they are read once
 * per device and cached; the entries are written whole and only ever with the
 * same values, so concurrent first calls from several threads are harmless. */
constexpr int kMaxDevices = 64;
struct CachedDeviceInfo {
    int ready; /* 0: not read yet; 1: ready */
    DeviceInfo info;
};
CachedDeviceInfo device_cache[kMaxDevices];

marlin_status query_device(DeviceInfo* info, int* device_out) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        cudaGetLastError(); /* clear the "no device" error */
        return MARLIN_STATUS_NO_DEVICE;
    }
    CachedDeviceInfo entry{};
    if (device < kMaxDevices && __atomic_load_n(&device_cache[device].ready, __ATOMIC_ACQUIRE))
        entry = device_cache[device];
    else {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
            cudaGetLastError();
            return MARLIN_STATUS_NO_DEVICE;
        }
        if (cudaDeviceGetAttribute(&entry.info.major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
            cudaDeviceGetAttribute(&entry.info.sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
            cudaDeviceGetAttribute(&entry.info.smem_per_block_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                   device) != cudaSuccess ||
            cudaDeviceGetAttribute(&entry.info.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                                   device) != cudaSuccess)
            return MARLIN_STATUS_CUDA_ERROR;
        if (device < kMaxDevices) {
            device_cache[device].info = entry.info;
            __atomic_store_n(&device_cache[device].ready, 1, __ATOMIC_RELEASE);
        }
    }
    if (entry.info.major < 8) return MARLIN_STATUS_UNSUPPORTED_ARCH;
    *info = entry.info;
    if (device_out) *device_out = device;
    return MARLIN_STATUS_SUCCESS;
}

/* Raises the dynamic shared-memory limit of a variant's kernel for an
 * epilogue once per device. */
constexpr int kVariantCount = sizeof(kVariants) / sizeof(kVariants[0]);
unsigned char smem_limit_raised[kMaxDevices][kVariantCount][kEpilogueCount];

marlin_status raise_smem_limit(const KernelVariant& v, Epilogue epilogue, int device) {
    int index = (int)(&v - kVariants);
    if (device < kMaxDevices && __atomic_load_n(&smem_limit_raised[device][index][epilogue], __ATOMIC_ACQUIRE))
        return MARLIN_STATUS_SUCCESS;
    if (cudaFuncSetAttribute(v.kernels[epilogue], cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem_bytes) !=
        cudaSuccess)
        return MARLIN_STATUS_CUDA_ERROR;
    if (device < kMaxDevices) __atomic_store_n(&smem_limit_raised[device][index][epilogue], 1, __ATOMIC_RELEASE);
    return MARLIN_STATUS_SUCCESS;
}

/* The most runs of `iters` consecutive iterations (the striped partition's
 * blocks) that one slice of k_iters iterations meets: the partial tiles its
 * last arriver sums. A slice that starts r iterations into a run meets
 * (r + k_iters - 1) / iters + 1 of them, and the starts advance by k_iters
 * mod iters from slice to slice: no division per slice (it runs per call). */
int most_runs_per_slice(int slices, int k_iters, int iters) {
    const int advance = k_iters % iters;
    int start = 0, latest_start = 0;
    for (int s = 0; s < slices; s++) {
        if (start > latest_start) latest_start = start;
        start += advance;
        if (start >= iters) start -= iters;
    }
    return (latest_start + k_iters - 1) / iters + 1;
}

/* Picks the variant and the striped grid for `rows` (1..128) rows of A,
 * slices cut at most max_split ways in cluster mode. */
marlin_status plan_launch(int rows, int n, int k, const DeviceInfo& device, LaunchPlan* plan,
                          int max_split = kMaxClusterSplit) {
    /* Whether v can run this launch on this device, and (measured rules)
     * whether it should. */
    auto can_run = [&](const KernelVariant& v) {
        if (v.warpgroup_mma && !(device.major == 9 && kHaveSm90a)) return false;
        return v.min_rows <= rows && rows <= v.max_rows && v.smem_bytes <= device.smem_per_block_optin &&
               v.blocks_per_sm * (v.smem_bytes + 1024) <= device.smem_per_sm; /* 1 KB: per-block reserve */
    };
    auto fits = [&](const KernelVariant& v) {
        return can_run(v) && n >= v.min_n && (v.max_weights == 0 || (long long)k * n < v.max_weights);
    };
    const KernelVariant* best = nullptr;
    for (const KernelVariant& v : kVariants) {
        if (!fits(v)) continue;
        if (n % (64 * v.n_tiles) == 0) {
            best = &v;
            break;
        }
        if (!best) best = &v;
    }
#ifdef MARLIN_TUNING
    /* Tuning builds only: MARLIN_VARIANT=i forces table entry i where it fits. */
    if (const char* forced = getenv("MARLIN_VARIANT")) {
        int i = atoi(forced);
        if (i >= 0 && i < kVariantCount && can_run(kVariants[i])) best = &kVariants[i];
    }
#endif
    if (!best) return MARLIN_STATUS_UNSUPPORTED_ARCH; /* too little shared memory for any variant */
    const int block_n = 64 * best->n_tiles, block_k = 16 * best->k_tiles;
    const int slices = (n + block_n - 1) / block_n;
    const int k_iters = (k + block_k - 1) / block_k;
    const int total = slices * k_iters;
    int slots_per_sm = best->blocks_per_sm;
#ifdef MARLIN_TUNING
    /* Tuning builds only: MARLIN_SLOTS_PER_SM=s sizes the striped grid for s blocks per SM. */
    if (const char* forced = getenv("MARLIN_SLOTS_PER_SM")) slots_per_sm = atoi(forced) > 0 ? atoi(forced) : 1;
#endif
    const int block_slots = device.sm_count * slots_per_sm;
    /* Equal runs for all block slots, but no shorter than kMinItersPerBlock: a
     * run of one or two steps is all pipeline fill and reduction. */
    int iters_per_block = (total + block_slots - 1) / block_slots;
    int min_iters = kMinItersPerBlock;
#ifdef MARLIN_TUNING
    if (const char* forced = getenv("MARLIN_MIN_ITERS")) min_iters = atoi(forced) > 0 ? atoi(forced) : 1;
#endif
    /* runs shorter than min_iters grow to it (to the whole layer if shorter) */
    auto at_least_min = [&](int iters) { return iters < min_iters ? (total < min_iters ? total : min_iters) : iters; };
    auto blocks_for = [&](int iters) { return (total + iters - 1) / iters; };
    iters_per_block = at_least_min(iters_per_block);
    /* Even split, from 9 rows: where the block slots hold every slice at
     * least once, cut each slice into block_slots / slices equal runs instead,
     * if that leaves fewer partial tiles for some slice to sum and keeps at
     * least 85% of the blocks (bench/NOTES.md step 57, H100: llama2-13b qkv
     * at m = 64 36.2 -> 29.8 us, llama2-70b down at m = 128 127 -> 110;
     * dropping more blocks lost: llama2-70b qkv at m = 128 48.9 -> 58.1 us on
     * 80 of 132 SMs). Not measured up to 8 rows. */
    int even_split = rows > 8, min_blocks_pct = 85;
#ifdef MARLIN_TUNING
    /* Tuning builds only: MARLIN_EVEN_SPLIT=0 never, 2 wherever the slots hold every slice;
     * MARLIN_EVEN_SPLIT_PCT=p: the share of the blocks it must keep. */
    if (const char* forced = getenv("MARLIN_EVEN_SPLIT")) even_split = atoi(forced);
    if (const char* forced = getenv("MARLIN_EVEN_SPLIT_PCT")) min_blocks_pct = atoi(forced);
#endif
    if (even_split && slices <= block_slots) {
        const int parts = block_slots / slices;
        const int even_iters = at_least_min((k_iters + parts - 1) / parts);
        if (even_split == 2 || (most_runs_per_slice(slices, k_iters, even_iters) <
                                    most_runs_per_slice(slices, k_iters, iters_per_block) &&
                                100 * blocks_for(even_iters) >= min_blocks_pct * blocks_for(iters_per_block)))
            iters_per_block = even_iters;
    }
    plan->variant = best;
    plan->iters_per_block = iters_per_block;
    plan->grid = blocks_for(iters_per_block);
    /* Cluster mode: each slice cut `split` ways inside a cluster, the partial
     * tiles summed through distributed shared memory. Measured on the H100
     * (bench/NOTES.md steps 20-21) it pays where the striped grid leaves most
     * of the device idle (layers too short in k for kMinItersPerBlock steps
     * per block: smollm2 27.9 -> 19.2 us at m = 1) and for 128-row tiles cut
     * 2 ways (ideal m = 128: 230 -> 208 us; llama2-70b o 47.5 -> 37.7 us), as
     * long as it runs no fewer blocks; elsewhere the striped partition is as
     * fast or faster (llama2-7b m = 1: 63 vs 84 us; llama3-8b down at
     * m = 128, cut 4 ways: 44.5 vs 63.6 us). Up to 8 rows, slices that the
     * device holds exactly twice over (cut 2 ways) run as clusters even
     * with fewer blocks than striped (step 42: llama3-8b gate_up at m = 8
     * 28.2 -> 25.7 us, llama2-13b's 33.0 -> 30.8); cut 3 or more ways they
     * lose (llama2-7b gate_up 21.3 -> 28.3 us at m = 1). */
    int split = block_slots / slices;
    if (split > max_split) split = max_split;
    if (split > k_iters / kMinClusterIters) split = k_iters / kMinClusterIters;
    bool use_cluster = (rows <= 8 && split == 2) ||
                       (((rows > kMaxChunkRows / 2 && split == 2) || 4 * plan->grid <= block_slots) &&
                        slices * split >= plan->grid);
#ifdef MARLIN_TUNING
    if (const char* forced = getenv("MARLIN_CLUSTER")) { /* 0 or 1: striped only; c: clusters of at most c */
        split = atoi(forced) < split ? atoi(forced) : split;
        use_cluster = true;
    }
#endif
    plan->slices = slices;
    plan->cluster_split = kClusterMode && device.major >= 9 && use_cluster && split >= 2 ? split : 1;
    return MARLIN_STATUS_SUCCESS;
}

/* The launch attribute for clusters of `split` blocks along x. */
cudaLaunchAttribute cluster_attribute(int split) {
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = (unsigned)split, attribute.val.clusterDim.y = 1, attribute.val.clusterDim.z = 1;
    return attribute;
}

/* Whether the device can hold a cluster of `split` blocks of variant v (its
 * shared-memory limit raised), asked once per device, variant and size, of
 * the plain kernel (both epilogues take the same resources: registers capped
 * by __launch_bounds__, the same shared memory). */
unsigned char cluster_answers[kMaxDevices][kVariantCount][kMaxClusterSplit + 1]; /* 0 unknown, 1 yes, 2 no */

bool cluster_fits(const KernelVariant& v, int split, int device) {
    const int index = (int)(&v - kVariants);
    unsigned char* answer = device < kMaxDevices ? &cluster_answers[device][index][split] : nullptr;
    if (answer && __atomic_load_n(answer, __ATOMIC_ACQUIRE)) return *answer == 1;
    cudaLaunchAttribute attribute = cluster_attribute(split);
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(split);
    config.blockDim = dim3(marlin::kThreads);
    config.dynamicSmemBytes = v.smem_bytes;
    config.attrs = &attribute;
    config.numAttrs = 1;
    int clusters = 0;
    const bool fits =
        cudaOccupancyMaxActiveClusters(&clusters, v.kernels[kPlainEpilogue], &config) == cudaSuccess && clusters >= 1;
    if (!fits) cudaGetLastError();
    if (answer) __atomic_store_n(answer, (unsigned char)(fits ? 1 : 2), __ATOMIC_RELEASE);
    return fits;
}

/* cuTensorMapEncodeTiled, looked up once through the runtime (so the
 * library needs no link to the driver library); NULL if the driver lacks it. */
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static PFN_cuTensorMapEncodeTiled_v12000 encoder = nullptr;
    static int looked_up = 0;
    if (__atomic_load_n(&looked_up, __ATOMIC_ACQUIRE)) return encoder;
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
        fn = nullptr, cudaGetLastError();
    encoder = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    __atomic_store_n(&looked_up, 1, __ATOMIC_RELEASE);
    return encoder;
}

/* One row-major tensor of `rank` dimensions (sizes innermost first; strides
 * in bytes for dimensions 1..rank-1) read in boxes of `box` elements,
 * zero-filled outside the tensor. */
bool encode_tensor_map(CUtensorMap* map, CUtensorMapDataType type, int rank, const void* base,
                       const cuuint64_t* sizes, const cuuint64_t* strides, const cuuint32_t* box,
                       CUtensorMapSwizzle swizzle, CUtensorMapL2promotion promotion) {
    PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    const cuuint32_t element_strides[3] = {1, 1, 1};
    return encode && encode(map, type, (cuuint32_t)rank, const_cast<void*>(base), sizes, strides, box,
                            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, promotion,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* The sm_90 kernel's three copy-engine descriptors (see KernelArgs). */
marlin_status encode_copy_descriptors(KernelArgs* args, const KernelVariant& v, int group_size) {
    const int block_m = 16 * v.m_blocks, block_n = 64 * v.n_tiles, block_k = 16 * v.k_tiles;
    const cuuint64_t n = (cuuint64_t)args->n, k = (cuuint64_t)args->k;
    const cuuint64_t a_sizes[2] = {k, (cuuint64_t)args->m}, a_strides[1] = {2 * k};
    const cuuint32_t a_box[2] = {64, (cuuint32_t)block_m};
    const cuuint64_t b_sizes[3] = {128, n / 64, k / 16}, b_strides[2] = {512, 512 * (n / 64)};
    const cuuint32_t b_box[3] = {128, (cuuint32_t)v.n_tiles, (cuuint32_t)v.k_tiles};
    const cuuint64_t s_sizes[2] = {n, (cuuint64_t)marlin_scale_rows(args->k, group_size)}, s_strides[1] = {2 * n};
    const cuuint32_t s_box[2] = {(cuuint32_t)block_n, (cuuint32_t)marlin::step_scale_rows(block_k, args->group_shift)};
    const bool ok = encode_tensor_map(&args->a_map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, args->A, a_sizes, a_strides,
                                      a_box, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B) &&
                    encode_tensor_map(&args->b_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, args->B, b_sizes, b_strides,
                                      b_box, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B) &&
                    encode_tensor_map(&args->s_map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, args->scales, s_sizes,
                                      s_strides, s_box, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
    return ok ? MARLIN_STATUS_SUCCESS : MARLIN_STATUS_CUDA_ERROR;
}

/* Blocks of one row chunk of a launch. */
int chunk_blocks(const LaunchPlan& plan) {
    return plan.cluster_split > 1 ? plan.slices * plan.cluster_split : plan.grid;
}

/* How an m-row call is cut: launches of up to `chunks` row chunks of
 * chunk_rows rows each, the chunks of a launch side by side (gridDim.y). */
struct RowSplit {
    int chunk_rows;
    int chunks;    /* per launch */
    int max_split; /* cluster mode: slices cut at most this many ways (see plan_launch) */
};

/* One chunk per launch, of 128 rows where a variant serves 128 rows (warpgroup
 * MMA), else 64; but layers under kTinyLayer weights, which one chunk leaves
 * mostly idle (smollm2's: 9-27 blocks), run 16-row chunks side by side, as
 * many per launch as the device holds at once; where that takes more than
 * one launch, their slices are cut fewer ways in cluster mode if that holds
 * every chunk in one launch. */
marlin_status split_rows(int m, int n, int k, const DeviceInfo& device, RowSplit* split) {
    LaunchPlan plan;
    split->chunk_rows = plan_launch(kMaxChunkRows, n, k, device, &plan) == MARLIN_STATUS_SUCCESS &&
                                plan.variant->m_blocks == 8
                            ? kMaxChunkRows
                            : kMaxChunkRows / 2;
    split->chunks = 1;
    split->max_split = kMaxClusterSplit;
    int tiny_rows = 16; /* rows per chunk of a tiny layer */
#ifdef MARLIN_TUNING
    /* Tuning builds only: MARLIN_TINY_ROWS=r cuts tiny layers into chunks of r rows; only 16, 32
     * and 64 are taken, the row counts of the variants plan_launch picks for them (the kernel
     * places chunk blockIdx.y at its own row count), anything else is ignored. */
    if (const char* forced = getenv("MARLIN_TINY_ROWS")) {
        const int rows = atoi(forced);
        if (rows == 16 || rows == 32 || rows == 64) tiny_rows = rows;
    }
#endif
    if (m > tiny_rows && (long long)k * n < kTinyLayer) {
        marlin_status status = plan_launch(tiny_rows, n, k, device, &plan);
        if (status != MARLIN_STATUS_SUCCESS) return status;
        auto chunks_that_fit = [&](const LaunchPlan& p) {
            return device.sm_count * p.variant->blocks_per_sm / chunk_blocks(p);
        };
        int chunks = (m + tiny_rows - 1) / tiny_rows;
        for (int cap = plan.cluster_split - 1; chunks_that_fit(plan) < chunks && cap >= 1; cap--) {
            LaunchPlan fewer;
            if (plan_launch(tiny_rows, n, k, device, &fewer, cap) != MARLIN_STATUS_SUCCESS) break;
            if (chunks_that_fit(fewer) >= chunks) plan = fewer, split->max_split = cap;
        }
        const int fit = chunks_that_fit(plan);
        if (chunks > fit) chunks = fit;
        if (chunks > kCounterCount / plan.slices) chunks = kCounterCount / plan.slices;
        if (chunks >= 2) split->chunk_rows = tiny_rows, split->chunks = chunks;
    }
    return MARLIN_STATUS_SUCCESS;
}

/* A whole m-row call: its row split, the plan of its full launches
 * (launch_rows rows each) and of the last, shorter one (rows m % launch_rows,
 * if any), and the workspace they need: counters, then 2 slots per block and
 * row chunk. */
struct CallPlan {
    RowSplit split;
    int launch_rows;
    LaunchPlan full, rest;
    size_t workspace_bytes;
};

marlin_status plan_call(int m, int n, int k, const DeviceInfo& device, CallPlan* call) {
    marlin_status status = split_rows(m, n, k, device, &call->split);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    const RowSplit& split = call->split;
    call->launch_rows = split.chunk_rows * split.chunks;
    const int launch_sizes[2] = {m < call->launch_rows ? m : call->launch_rows, m % call->launch_rows};
    LaunchPlan* plans[2] = {&call->full, &call->rest};
    size_t partial_bytes = 0;
    for (int i = 0; i < 2; i++) {
        const int rows = launch_sizes[i];
        if (rows == 0) continue;
        if (i == 1 && rows == launch_sizes[0]) { /* one launch of m < launch_rows rows: already planned */
            call->rest = call->full;
            continue;
        }
        status = plan_launch(rows < split.chunk_rows ? rows : split.chunk_rows, n, k, device, plans[i],
                             split.max_split);
        if (status != MARLIN_STATUS_SUCCESS) return status;
        const size_t chunks = (size_t)(rows + split.chunk_rows - 1) / split.chunk_rows;
        const size_t need = sizeof(float) * 2 * chunks * (size_t)plans[i]->grid * (size_t)plans[i]->variant->slot_floats;
        if (need > partial_bytes) partial_bytes = need;
    }
    call->workspace_bytes = kCounterRegionBytes + partial_bytes;
    return MARLIN_STATUS_SUCCESS;
}

/* Scale row of k-index i is i >> shift: log2 of a power-of-two group size; a
 * single group (group_size == k, any k <= 2^20) maps every row to 0. */
int group_shift(int k, int group_size) {
    if (group_size == k && (k & (k - 1)) != 0) return 30;
    int shift = 0;
    while ((1 << shift) < group_size) shift++;
    return shift;
}

bool aligned(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) % MARLIN_ALIGNMENT) == 0; }

marlin_status check_shape(int m, int n, int k, int group_size) {
    if (m < 1) return MARLIN_STATUS_UNSUPPORTED_SHAPE;
    return marlin_check_weight_shape(k, n, group_size);
}

#ifdef MARLIN_TRACE
/* Tracing builds (trace.h): launches since marlin_trace_reset and their grids. */
int traced_launches = 0;
int traced_grids[MARLIN_TRACE_LAUNCHES];

/* The record slot of the next launch (-1 once the slots are used up). */
int record_traced_launch(int grid) {
    if (traced_launches >= MARLIN_TRACE_LAUNCHES) return -1;
    traced_grids[traced_launches] = grid;
    return traced_launches++;
}
#endif

}  // namespace

#ifdef MARLIN_TRACE
extern "C" marlin_status marlin_trace_reset(void) {
    traced_launches = 0;
    void* records = nullptr;
    if (cudaDeviceSynchronize() != cudaSuccess || cudaGetSymbolAddress(&records, marlin::trace_records) != cudaSuccess ||
        cudaMemset(records, 0, sizeof(marlin::trace_records)) != cudaSuccess)
        return MARLIN_STATUS_CUDA_ERROR;
    return MARLIN_STATUS_SUCCESS;
}

extern "C" marlin_status marlin_trace_read(unsigned long long* stamps, int* grids, int* launches) {
    if (!stamps || !grids || !launches) return MARLIN_STATUS_NULL_POINTER;
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpyFromSymbol(stamps, marlin::trace_records, sizeof(marlin::trace_records)) != cudaSuccess)
        return MARLIN_STATUS_CUDA_ERROR;
    memcpy(grids, traced_grids, sizeof(traced_grids));
    *launches = traced_launches;
    return MARLIN_STATUS_SUCCESS;
}
#endif

extern "C" marlin_status marlin_workspace_size(int m, int n, int k, int group_size,
                                               size_t* workspace_bytes) {
    if (!workspace_bytes) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = check_shape(m, n, k, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    DeviceInfo device;
    status = query_device(&device, nullptr);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    /* Enough for every call of 1..m rows: the need is not monotonic in the
     * rows (at m = 1 wider tiles than at m = 16, and more blocks). A call of
     * more than 256 rows launches chunks of at most 128 rows (64 row chunks'
     * worth for tiny layers: its need grows with m), so rows 1..256 and m
     * itself cover every launch. */
    size_t most = 0;
    for (int rows = 1; rows <= m; rows = rows < kWorkspaceScanRows ? rows + 1 : (rows < m ? m : rows + 1)) {
        CallPlan call;
        status = plan_call(rows, n, k, device, &call);
        if (status != MARLIN_STATUS_SUCCESS) return status;
        if (call.workspace_bytes > most) most = call.workspace_bytes;
    }
    *workspace_bytes = most;
    return MARLIN_STATUS_SUCCESS;
}

/* Tests only (plan_internal.h). */
extern "C" marlin_status marlin_plan_for_device(int m, int n, int k, const marlin_device_facts* facts,
                                                marlin_plan_summary* out) {
    if (!facts || !out) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = check_shape(m, n, k, 128);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    CallPlan call;
    status = plan_call(m, n, k, *facts, &call);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    auto summarize = [&](const LaunchPlan& plan, int rows, marlin_launch_summary* s) {
        memset(s, 0, sizeof(*s));
        if (rows == 0) return;
        const KernelVariant& v = *plan.variant;
        s->rows = rows < call.split.chunk_rows ? rows : call.split.chunk_rows;
        s->grid = plan.grid, s->iters_per_block = plan.iters_per_block, s->slices = plan.slices;
        s->block_n = 64 * v.n_tiles, s->block_k = 16 * v.k_tiles;
        s->k_iters = (k + s->block_k - 1) / s->block_k;
        s->cluster_split = plan.cluster_split, s->blocks_per_sm = v.blocks_per_sm;
    };
    out->chunk_rows = call.split.chunk_rows, out->chunks = call.split.chunks, out->launch_rows = call.launch_rows;
    summarize(call.full, m < call.launch_rows ? m : call.launch_rows, &out->full);
    summarize(call.rest, m % call.launch_rows, &out->rest);
    out->workspace_bytes = call.workspace_bytes;
    return MARLIN_STATUS_SUCCESS;
}

namespace {

/* The RMSNorm epilogues' operands (see KernelArgs); zeros for the others. */
struct RmsOperands {
    float* residual;
    const float* norm_weight;
    float* sumsq_out;
    const float* sumsq_in;
    float eps;
};

/* The RMSNorm epilogues' own checks: their operands, and at most
 * MARLIN_RMS_MAX_ROWS rows. */
marlin_status check_rms_operands(const RmsOperands& rms, int m, Epilogue epilogue) {
    if (epilogue == kResidualEpilogue) {
        if (!rms.residual || !rms.norm_weight || !rms.sumsq_out) return MARLIN_STATUS_NULL_POINTER;
        if (!aligned(rms.residual) || !aligned(rms.norm_weight) || !aligned(rms.sumsq_out))
            return MARLIN_STATUS_MISALIGNED_POINTER;
    } else {
        if (!rms.sumsq_in) return MARLIN_STATUS_NULL_POINTER;
        if (!aligned(rms.sumsq_in)) return MARLIN_STATUS_MISALIGNED_POINTER;
        if (!(rms.eps >= 0.0f) || rms.eps == INFINITY) return MARLIN_STATUS_INVALID_VALUE;
    }
    return m <= MARLIN_RMS_MAX_ROWS ? MARLIN_STATUS_SUCCESS : MARLIN_STATUS_UNSUPPORTED_SHAPE;
}

/* Every marlin_matmul*, by its epilogue. */
marlin_status run_matmul(const void* A, const void* packed_b, const void* packed_scales, void* C, int m, int n, int k,
                         int group_size, void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         Epilogue epilogue, const RmsOperands& rms = RmsOperands{}) {
    if (!A || !packed_b || !packed_scales || !C || !workspace) return MARLIN_STATUS_NULL_POINTER;
    marlin_status status = check_shape(m, n, k, group_size);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    if (!aligned(A) || !aligned(packed_b) || !aligned(packed_scales) || !aligned(C) || !aligned(workspace))
        return MARLIN_STATUS_MISALIGNED_POINTER;
    const bool rms_kernel = marlin::rms_epilogue(epilogue);
    if (rms_kernel) {
        status = check_rms_operands(rms, m, epilogue);
        if (status != MARLIN_STATUS_SUCCESS) return status;
    }
    DeviceInfo device;
    int device_index = 0;
    status = query_device(&device, &device_index);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    CallPlan call;
    status = plan_call(m, n, k, device, &call);
    if (status != MARLIN_STATUS_SUCCESS) return status;
    if (workspace_bytes < call.workspace_bytes) return MARLIN_STATUS_WORKSPACE_TOO_SMALL;

    int* counters = static_cast<int*>(workspace);
    float* partials = reinterpret_cast<float*>(static_cast<char*>(workspace) + kCounterRegionBytes);
    const int launch_rows = call.launch_rows;
    for (int row0 = 0; row0 < m; row0 += launch_rows) {
        const int rows = m - row0 < launch_rows ? m - row0 : launch_rows;
        const int chunks = (rows + call.split.chunk_rows - 1) / call.split.chunk_rows;
        LaunchPlan plan = rows == launch_rows ? call.full : call.rest;
        KernelArgs args;
        memset(&args, 0, sizeof(args));
        args.A = static_cast<const int4*>(A) + (size_t)row0 * k / 8;
        args.B = static_cast<const int4*>(packed_b);
        args.scales = static_cast<const int4*>(packed_scales);
        args.C = static_cast<half2*>(C) + (size_t)row0 * (marlin::swiglu_epilogue(epilogue) ? n / 2 : n) / 2;
        /* the RMSNorm epilogues: one launch (m <= 16), so row0 = 0 */
        args.residual = rms.residual;
        args.norm_weight = rms.norm_weight;
        args.sumsq_out = rms.sumsq_out;
        args.sumsq_in = rms.sumsq_in;
        args.rms_eps = rms.eps;
        args.partials = partials;
        args.counters = counters;
        args.m = rows;
        args.n = n;
        args.k = k;
        args.group_shift = group_shift(k, group_size);
        args.iters_per_block = plan.iters_per_block;
        const KernelVariant& v = *plan.variant;
        if (!v.kernels[epilogue]) return MARLIN_STATUS_UNSUPPORTED_SHAPE; /* an RMSNorm epilogue past 16 rows */
        /* The RMSNorm epilogues sum squares over whole warps of a slice's
         * units, which cluster mode splits between blocks: striped only. */
        if (rms_kernel) plan.cluster_split = 1;
        if (device.major >= 9) {
            status = encode_copy_descriptors(&args, v, group_size);
            if (status != MARLIN_STATUS_SUCCESS) return status;
        }
        status = raise_smem_limit(v, epilogue, device_index);
        if (status != MARLIN_STATUS_SUCCESS) return status;
        if (plan.cluster_split > 1 && !cluster_fits(v, plan.cluster_split, device_index)) plan.cluster_split = 1;
        args.cluster_split = plan.cluster_split;
#ifdef MARLIN_TRACE
        args.trace_launch = record_traced_launch(chunk_blocks(plan));
#endif
        /* On sm_90, let this launch overlap the tail of the previous kernel on
         * the stream (programmatic dependent launch; the kernel waits for it
         * before touching A, C or the workspace): its blocks fetch their first
         * weight stages while the previous grid's last blocks still reduce.
         * Measured on the H100 it pays for up to 32 rows (llama2-70b,
         * m = 1..16: 2.5x -> 2.8x over fp16, bench/NOTES.md step 8) and for
         * the 64- and 128-row warpgroup tiles (step 56: llama2-7b m = 64
         * 117.8 -> 108.4 us, llama3-8b m = 128 151.5 -> 140.5), but cost the
         * 64-row mma.sync tiles ~15% (step 8), so those launch plainly. */
        cudaLaunchAttribute attributes[2];
        int attribute_count = 0;
        bool overlap_previous = v.m_blocks <= 2 || v.warpgroup_mma;
#ifdef MARLIN_TUNING
        /* Tuning builds only: MARLIN_PDL_M_BLOCKS=b launches tiles of up to b 16-row blocks with PDL, no others. */
        if (const char* forced = getenv("MARLIN_PDL_M_BLOCKS")) overlap_previous = v.m_blocks <= atoi(forced);
#endif
        if (device.major >= 9 && overlap_previous) {
            attributes[attribute_count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            attributes[attribute_count++].val.programmaticStreamSerializationAllowed = 1;
        }
        if (plan.cluster_split > 1) attributes[attribute_count++] = cluster_attribute(plan.cluster_split);
        cudaLaunchConfig_t config = {};
        config.gridDim = dim3(chunk_blocks(plan), chunks);
        config.blockDim = dim3(marlin::kThreads);
        config.dynamicSmemBytes = v.smem_bytes;
        config.stream = stream;
        config.attrs = attributes;
        config.numAttrs = attribute_count;
        if (cudaLaunchKernelEx(&config, v.kernels[epilogue], args) != cudaSuccess || cudaGetLastError() != cudaSuccess)
            return MARLIN_STATUS_CUDA_ERROR;
    }
    return MARLIN_STATUS_SUCCESS;
}

}  // namespace

extern "C" marlin_status marlin_matmul(const void* A, const void* packed_b, const void* packed_scales,
                                       void* C, int m, int n, int k, int group_size, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream) {
    return run_matmul(A, packed_b, packed_scales, C, m, n, k, group_size, workspace, workspace_bytes, stream,
                      kPlainEpilogue);
}

extern "C" marlin_status marlin_matmul_swiglu(const void* A, const void* packed_b, const void* packed_scales,
                                              void* H, int m, int n, int k, int group_size, void* workspace,
                                              size_t workspace_bytes, cudaStream_t stream) {
    return run_matmul(A, packed_b, packed_scales, H, m, n, k, group_size, workspace, workspace_bytes, stream,
                      kSwigluEpilogue);
}

extern "C" marlin_status marlin_matmul_residual(const void* A, const void* packed_b, const void* packed_scales,
                                                float* x, const float* norm_weight, void* C, float* sumsq_out,
                                                int m, int n, int k, int group_size, void* workspace,
                                                size_t workspace_bytes, cudaStream_t stream) {
    RmsOperands rms = {x, norm_weight, sumsq_out, nullptr, 0.0f};
    return run_matmul(A, packed_b, packed_scales, C, m, n, k, group_size, workspace, workspace_bytes, stream,
                      kResidualEpilogue, rms);
}

extern "C" marlin_status marlin_matmul_rms_scaled(const void* A, const void* packed_b, const void* packed_scales,
                                                  const float* sumsq_in, float eps, void* C, int m, int n, int k,
                                                  int group_size, void* workspace, size_t workspace_bytes,
                                                  cudaStream_t stream) {
    RmsOperands rms = {nullptr, nullptr, nullptr, sumsq_in, eps};
    return run_matmul(A, packed_b, packed_scales, C, m, n, k, group_size, workspace, workspace_bytes, stream,
                      kRowScaledEpilogue, rms);
}

extern "C" marlin_status marlin_matmul_rms_scaled_swiglu(const void* A, const void* packed_b,
                                                         const void* packed_scales, const float* sumsq_in, float eps,
                                                         void* H, int m, int n, int k, int group_size, void* workspace,
                                                         size_t workspace_bytes, cudaStream_t stream) {
    RmsOperands rms = {nullptr, nullptr, nullptr, sumsq_in, eps};
    return run_matmul(A, packed_b, packed_scales, H, m, n, k, group_size, workspace, workspace_bytes, stream,
                      kRowScaledSwigluEpilogue, rms);
}
