#!/usr/bin/env bash
# On the GPU machine: build a tuning library (MARLIN_VARIANT=i forces entry i of
# the variant table in src/matmul.cu) and time each listed variant with marlin-bench.
# Usage: OUT=dir bash scripts/gpu_tune.sh "0 1 2" [marlin-bench args...]
#   BIN=dir  use dir/marlin-bench-tune (TUNING=1 bash scripts/gpu_carry.sh dir) instead of building
#   KNOB=X   set MARLIN_X instead of MARLIN_VARIANT (e.g. KNOB=EVEN_SPLIT "0 1 2")
set -uo pipefail
out=${OUT:-/tmp/marlin-out}; mkdir -p "$out"
variants=$1; shift
knob=MARLIN_${KNOB:-VARIANT}
if [ -n "${BIN:-}" ]; then bench=$BIN/marlin-bench-tune
else
  cmake -S . -B build-tune -DCMAKE_CUDA_ARCHITECTURES=90a -DMARLIN_TUNING=ON >"$out/tune-cmake.log" 2>&1 || { tail "$out/tune-cmake.log"; exit 1; }
  cmake --build build-tune -j16 --target marlin-bench >"$out/tune-build.log" 2>&1 || { grep error -A3 "$out/tune-build.log" | head -30; exit 1; }
  bench=build-tune/tools/bench/marlin-bench
fi
for v in $variants; do
  echo "=== $knob=$v"
  env "$knob=$v" "$bench" "$@" --csv "$out/tune-$v.csv" 2>&1 | grep -E "^ +[0-9]+ |^== "
done
