#!/usr/bin/env bash
# On the GPU machine: build for sm_90, run the GPU tests (library, GPTQ,
# Llama), compute-sanitizer on the quick cases, then marlin-bench with the
# given arguments. Logs go to OUT (few files: the device tool returns 8 at most).
# Usage: OUT=dir bash scripts/gpu_check.sh [--no-tests] [marlin-bench args...]
#   BIN=dir      use binaries built here by scripts/gpu_carry.sh (carry dir; no
#                build on the device, which saves its time)
#   RECORD=1     also write the full benchmark to OUT/h100.csv and OUT/h100.txt
set -uo pipefail
out=${OUT:-/tmp/marlin-out}
mkdir -p "$out"
log=$out/tests.log
run_tests=1
[ "${1:-}" = "--no-tests" ] && { run_tests=0; shift; }
{ date -u; git log -1 --format='commit %H' 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader; } | tee "$log"
if [ -n "${BIN:-}" ]; then
  test_dir=$BIN; bench=$BIN/marlin-bench; llama=$BIN/marlin-llama; gptq_bench=$BIN/gptq_bench
else
  cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90a >/tmp/cmake.log 2>&1 || { tail -30 /tmp/cmake.log; exit 1; }
  cmake --build build-gpu -j16 --target test_api test_gpu_matmul marlin-bench test_gptq_gpu gptq_bench test_llama_gpu marlin-llama >/tmp/build.log 2>&1 ||
    { grep -E "error" -A3 /tmp/build.log | head -40; exit 1; }
  test_dir=build-gpu/tests; bench=build-gpu/tools/bench/marlin-bench
  llama=build-gpu/tools/llama/marlin-llama; gptq_bench=build-gpu/tools/gptq_bench/gptq_bench
fi
run() { # name, command...: appends the output to tests.log, prints the verdict
  local name=$1; shift
  echo "===== $name: $*" >>"$log"
  local start=$(date +%s)
  "$@" >>"$log" 2>&1; local rc=$?
  echo "$name rc=$rc ($(( $(date +%s) - start )) s): $(tail -1 "$log")"
}
if [ $run_tests = 1 ]; then
  # timeouts keep one hung test from eating the device call (H100: test_gpu_matmul ~274 s)
  run test_api timeout 60 "$test_dir/test_api"
  run memcheck timeout 120 compute-sanitizer --tool memcheck "$test_dir/test_gpu_matmul" --quick
  [ -x "$test_dir/test_gptq_gpu" ] && run test_gptq_gpu timeout 120 "$test_dir/test_gptq_gpu"
  run test_llama_gpu timeout 90 "$test_dir/test_llama_gpu"
  run test_gpu_matmul timeout 380 "$test_dir/test_gpu_matmul"
  grep -E '^FAIL|ERROR SUMMARY' "$log" | head -20
fi
if [ "${LLAMA_BENCH:-0}" = 1 ]; then
  timeout 200 "$llama" bench --config llama2-7b --batches 1,8,16,32 --steps 64 >"$out/llama_bench.log" 2>&1
  echo "marlin-llama bench rc=$?"; tail -12 "$out/llama_bench.log"
fi
if [ "${GPTQ_BENCH:-0}" = 1 ]; then
  timeout 200 "$gptq_bench" >"$out/gptq_bench.log" 2>&1; echo "gptq_bench rc=$?"
  grep -v "7B model: block" "$out/gptq_bench.log" | tail -12
fi
if [ "${RECORD:-0}" = 1 ]; then
  timeout 330 "$bench" --csv "$out/h100.csv" >"$out/h100.txt" 2>&1
  echo "record rc=$?"; grep -E "^== |^ +[0-9]+ |copy bandwidth" "$out/h100.txt"
fi
if [ $# -gt 0 ]; then
  "$bench" "$@" >"$out/bench.log" 2>&1
  echo "marlin-bench rc=$?"; grep -E "^== |^ +[0-9]+ |copy bandwidth" "$out/bench.log"
fi
