#!/usr/bin/env bash
# The checks of learnloop's GPU paths, as one script for a CUDA machine (none of it runs
# on the project's CPU machines): `bash benchmarks/gpu_check.sh [OUT]`, from the checkout,
# with the venv active and vLLM installed beside learnloop (`pip install vllm`).
#   1. the hot-swap test and tests/test_vllm_engine.py against the real vLLM;
#   2. one SFT cycle's trainer on the GPU (bf16) through `accelerate launch`, and the
#      two-process test (gloo on the CPU unless there are two GPUs: NCCL wants one each);
#   3. generation throughput of `serve --engine vllm` against `--engine transformers` on
#      the same GPU, at 1, 8 and 64 concurrent clients.
set -euo pipefail
OUT=${1:-/tmp/learnloop-gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
LEARNLOOP_TEST_VLLM=real python -m pytest -q -p no:cacheprovider \
  tests/test_hot_swap.py tests/test_vllm_engine.py -k "not without_vllm" | tee "$OUT/vllm-tests.txt"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  python -m pytest -q -p no:cacheprovider tests/test_processes.py | tee "$OUT/processes.txt"
else
  CUDA_VISIBLE_DEVICES="" python -m pytest -q -p no:cacheprovider tests/test_processes.py \
    | tee "$OUT/processes.txt"
fi
python -m benchmarks.train_processes --train "${TRAIN:-../shared/data/financial_phrasebank/train.jsonl}" --out "$OUT/train" --rows 256 --processes 1 | tee "$OUT/train.txt"
python -m benchmarks.serve_speed --out "$OUT/serve" --engines transformers vllm \
  --clients 1 8 64 --lengths 128 | tee "$OUT/serve.txt"
