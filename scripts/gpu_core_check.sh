#!/usr/bin/env bash
# Builds the library for sm_90 and runs the GPU tests on the device machine.
# Usage (on the GPU machine, from the repo root): bash scripts/gpu_core_check.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-/tmp/marlin-out}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$out/gpu.txt"
cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 -DMARLIN_BUILD_TOOLS=OFF >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 --target test_api test_gpu_matmul >"$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
./build-gpu/tests/test_api >"$out/test_api.log" 2>&1; echo "test_api: $(tail -1 "$out/test_api.log")"
./build-gpu/tests/test_gpu_matmul >"$out/test_gpu_matmul.log" 2>&1; echo "test_gpu_matmul rc=$?"
grep -v '^PASS' "$out/test_gpu_matmul.log" | head -40
compute-sanitizer --tool memcheck ./build-gpu/tests/test_gpu_matmul --quick >"$out/memcheck.log" 2>&1; echo "memcheck rc=$?"
tail -5 "$out/memcheck.log"
