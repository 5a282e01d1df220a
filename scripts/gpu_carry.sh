#!/usr/bin/env bash
# On this machine (no GPU needed): build the GPU tests and tools for sm_90a and
# copy them, flat, into DIR (default .carry/bin; list it in .git/info/exclude),
# so a device call carries DIR and runs `BIN=DIR bash scripts/gpu_check.sh`
# without building there. With TUNING=1 also a MARLIN_TUNING marlin-bench,
# copied as DIR/marlin-bench-tune.
# Usage: bash scripts/gpu_carry.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.carry/bin}
targets="test_api test_gpu_matmul test_gptq_gpu test_llama_gpu marlin-bench marlin-llama gptq_bench"
cmake -S . -B build-wg -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null
cmake --build build-wg -j "$(nproc)" --target $targets
mkdir -p "$dir"
for t in $targets; do cp "$(find build-wg/tests build-wg/tools -name "$t" -type f -perm -u+x | head -1)" "$dir/"; done
if [ "${TUNING:-0}" = 1 ]; then
  cmake -S . -B build-tune -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DMARLIN_TUNING=ON >/dev/null
  cmake --build build-tune -j "$(nproc)" --target marlin-bench
  cp build-tune/tools/bench/marlin-bench "$dir/marlin-bench-tune"
fi
du -sh "$dir"; echo "gpu_carry: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes') built into $dir"
