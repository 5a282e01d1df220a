#!/usr/bin/env bash
# On the GPU machine: build for sm_90, run the GPU tests, compute-sanitizer on
# the quick cases, then marlin-bench with the given arguments. Logs go to OUT.
# Usage: OUT=dir bash scripts/gpu_check.sh [--no-tests] [marlin-bench args...]
set -uo pipefail
out=${OUT:-/tmp/marlin-out}
mkdir -p "$out"
run_tests=1
[ "${1:-}" = "--no-tests" ] && { run_tests=0; shift; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$out/gpu.txt"
cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
cmake --build build-gpu -j16 --target test_api test_gpu_matmul marlin-bench test_gptq_gpu gptq_bench >"$out/build.log" 2>&1 ||
  { grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
if [ $run_tests = 1 ]; then
  ./build-gpu/tests/test_api >"$out/test_api.log" 2>&1; echo "test_api: $(tail -1 "$out/test_api.log")"
  start=$(date +%s)
  ./build-gpu/tests/test_gpu_matmul >"$out/test_gpu_matmul.log" 2>&1
  echo "test_gpu_matmul rc=$? ($(( $(date +%s) - start )) s): $(tail -1 "$out/test_gpu_matmul.log")"
  grep -v '^PASS' "$out/test_gpu_matmul.log" | head -20
  compute-sanitizer --tool memcheck ./build-gpu/tests/test_gpu_matmul --quick >"$out/memcheck.log" 2>&1
  echo "memcheck rc=$?: $(grep 'ERROR SUMMARY' "$out/memcheck.log")"
  ./build-gpu/tests/test_gptq_gpu >"$out/test_gptq_gpu.log" 2>&1; echo "test_gptq_gpu rc=$?: $(tail -1 "$out/test_gptq_gpu.log")"
  grep -v '^PASS' "$out/test_gptq_gpu.log" | head -10
  timeout 240 ./build-gpu/tools/gptq_bench/gptq_bench >"$out/gptq_bench.log" 2>&1; echo "gptq_bench rc=$?"; tail -15 "$out/gptq_bench.log"
fi
if [ $# -gt 0 ]; then
  ./build-gpu/tools/bench/marlin-bench "$@" 2>&1 | tee "$out/bench.log"
fi
