#!/usr/bin/env bash
# On the GPU machine: build for sm_90, run the GPU tests (library, GPTQ,
# Llama), compute-sanitizer on the quick cases, then marlin-bench with the
# given arguments. Logs go to OUT (few files: the device tool returns 8 at most).
# Usage: OUT=dir bash scripts/gpu_check.sh [--no-tests] [marlin-bench args...]
#   BIN=dir      use binaries built elsewhere by scripts/gpu_carry.sh dir (carry
#                dir; no build on the device, which saves its time)
#   RECORD=1     also write the full benchmark to OUT/record.csv and OUT/record.txt
set -uo pipefail
out=${OUT:-/tmp/marlin-out}
mkdir -p "$out"
log=$out/tests.log
run_tests=1
[ "${1:-}" = "--no-tests" ] && { run_tests=0; shift; }
{ date -u; git log -1 --format='commit %H' 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader; } | tee "$log"
if [ -z "${BIN:-}" ]; then # build here, the same binaries gpu_carry.sh makes elsewhere
  BIN=build-wg/bin
  bash scripts/gpu_carry.sh "$BIN" >/tmp/build.log 2>&1 || { grep -E "error" -A3 /tmp/build.log | head -40; exit 1; }
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
  run test_api timeout 60 "$BIN/test_api"
  run memcheck timeout 120 compute-sanitizer --tool memcheck "$BIN/test_gpu_matmul" --quick
  run test_gptq_gpu timeout 120 "$BIN/test_gptq_gpu"
  run test_llama_gpu timeout 90 "$BIN/test_llama_gpu"
  run test_gpu_matmul timeout 380 "$BIN/test_gpu_matmul"
  grep -E '^FAIL|ERROR SUMMARY' "$log" | head -20
fi
if [ "${LLAMA_BENCH:-0}" = 1 ]; then
  timeout 200 "$BIN/marlin-llama" bench --config llama2-7b --batches 1,8,16,32 --steps 64 >"$out/llama_bench.log" 2>&1
  echo "marlin-llama bench rc=$?"; tail -12 "$out/llama_bench.log"
fi
if [ "${GPTQ_BENCH:-0}" = 1 ]; then
  timeout 200 "$BIN/gptq_bench" >"$out/gptq_bench.log" 2>&1; echo "gptq_bench rc=$?"
  grep -v "7B model: block" "$out/gptq_bench.log" | tail -12
fi
if [ "${RECORD:-0}" = 1 ]; then
  timeout 330 "$BIN/marlin-bench" --csv "$out/record.csv" >"$out/record.txt" 2>&1
  echo "record rc=$?"; grep -E "^GPU|^== |^ +[0-9]+ |copy bandwidth" "$out/record.txt"
fi
if [ $# -gt 0 ]; then
  "$BIN/marlin-bench" "$@" >"$out/bench.log" 2>&1
  echo "marlin-bench rc=$?"; grep -E "^== |^ +[0-9]+ |copy bandwidth" "$out/bench.log"
fi
