#!/usr/bin/env bash
# On the GPU machine: build a tuning library (MARLIN_VARIANT=i forces entry i of
# the variant table in src/matmul.cu) and time each listed variant with marlin-bench.
# Usage: OUT=dir bash scripts/gpu_tune.sh "0 1 2" [marlin-bench args...]
set -uo pipefail
out=${OUT:-/tmp/marlin-out}; mkdir -p "$out"
variants=$1; shift
cmake -S . -B build-tune -DCMAKE_CUDA_ARCHITECTURES=90a -DMARLIN_TUNING=ON >"$out/tune-cmake.log" 2>&1 || { tail "$out/tune-cmake.log"; exit 1; }
cmake --build build-tune -j16 --target marlin-bench >"$out/tune-build.log" 2>&1 || { grep error -A3 "$out/tune-build.log" | head -30; exit 1; }
for v in $variants; do
  echo "=== variant $v"
  MARLIN_VARIANT=$v ./build-tune/tools/bench/marlin-bench "$@" --csv "$out/tune-$v.csv" 2>&1 | grep -E "^ +[0-9]+ |^== " 
done
