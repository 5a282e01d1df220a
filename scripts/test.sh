#!/usr/bin/env bash
# The project's test command: builds (if needed), runs every test with ctest,
# then runs the CPU tests once more under AddressSanitizer + UBSan.
# GPU tests print "SKIPPED: no CUDA device" on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || bash scripts/setup.sh
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure

echo "== CPU tests under AddressSanitizer + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMARLIN_SANITIZE=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null
cmake --build build-asan -j "$(nproc)"
ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -LE gpu
