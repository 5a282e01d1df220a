#!/usr/bin/env bash
# On the GPU machine: build a tracing marlin-bench (-DMARLIN_TRACE=ON, src/trace.h)
# and record per-block launch timelines of back-to-back calls, then summarize them.
# Usage: OUT=dir bash scripts/gpu_trace.sh [marlin-bench args...]
#        (default args: --sets llama2-7b --m 1,16)
set -uo pipefail
out=${OUT:-/tmp/marlin-out}; mkdir -p "$out"
cmake -S . -B build-trace -DCMAKE_CUDA_ARCHITECTURES=90a -DMARLIN_TRACE=ON -DMARLIN_TUNING=ON \
  >"$out/trace-cmake.log" 2>&1 || { tail "$out/trace-cmake.log"; exit 1; }
cmake --build build-trace -j16 --target marlin-bench >"$out/trace-build.log" 2>&1 ||
  { grep error -A3 "$out/trace-build.log" | head -30; exit 1; }
[ $# -gt 0 ] || set -- --sets llama2-7b --m 1,16
./build-trace/tools/bench/marlin-bench "$@" --layers --trace "$out/trace.csv" >"$out/trace-bench.log" 2>&1
echo "marlin-bench rc=$?"
python3 scripts/trace_summary.py "$out/trace.csv" | tee "$out/trace-summary.txt"
