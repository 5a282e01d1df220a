#!/usr/bin/env bash
# On the GPU machine: build for sm_90, run the GPU tests (library, GPTQ,
# Llama), compute-sanitizer on the quick cases, then marlin-bench with the
# given arguments. Logs go to OUT (few files: the device tool returns 8 at most).
# Usage: OUT=dir bash scripts/gpu_check.sh [--no-tests] [marlin-bench args...]
set -uo pipefail
out=${OUT:-/tmp/marlin-out}
mkdir -p "$out"
log=$out/tests.log
run_tests=1
[ "${1:-}" = "--no-tests" ] && { run_tests=0; shift; }
{ date -u; git log -1 --format='commit %H' 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader; } | tee "$log"
cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90a >/tmp/cmake.log 2>&1 || { tail -30 /tmp/cmake.log; exit 1; }
cmake --build build-gpu -j16 --target test_api test_gpu_matmul marlin-bench test_gptq_gpu gptq_bench test_llama_gpu marlin-llama >/tmp/build.log 2>&1 ||
  { grep -E "error" -A3 /tmp/build.log | head -40; exit 1; }
run() { # name, command...: appends the output to tests.log, prints the verdict
  local name=$1; shift
  echo "===== $name: $*" >>"$log"
  local start=$(date +%s)
  "$@" >>"$log" 2>&1; local rc=$?
  echo "$name rc=$rc ($(( $(date +%s) - start )) s): $(tail -1 "$log")"
}
if [ $run_tests = 1 ]; then
  run test_api ./build-gpu/tests/test_api
  run test_gpu_matmul ./build-gpu/tests/test_gpu_matmul
  run memcheck compute-sanitizer --tool memcheck ./build-gpu/tests/test_gpu_matmul --quick
  run test_gptq_gpu ./build-gpu/tests/test_gptq_gpu
  run test_llama_gpu ./build-gpu/tests/test_llama_gpu
  grep -E '^FAIL|ERROR SUMMARY' "$log" | head -20
fi
if [ "${LLAMA_BENCH:-0}" = 1 ]; then
  timeout 200 ./build-gpu/tools/llama/marlin-llama bench --config llama2-7b --batches 1,8,16,32 --steps 64 >"$out/llama_bench.log" 2>&1
  echo "marlin-llama bench rc=$?"; tail -12 "$out/llama_bench.log"
fi
if [ "${GPTQ_BENCH:-0}" = 1 ]; then
  timeout 200 ./build-gpu/tools/gptq_bench/gptq_bench >"$out/gptq_bench.log" 2>&1; echo "gptq_bench rc=$?"
  grep -v "7B model: block" "$out/gptq_bench.log" | tail -12
fi
if [ $# -gt 0 ]; then
  ./build-gpu/tools/bench/marlin-bench "$@" >"$out/bench.log" 2>&1
  echo "marlin-bench rc=$?"; grep -E "^== |^ +[0-9]+ |copy bandwidth" "$out/bench.log"
fi
