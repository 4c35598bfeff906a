#!/usr/bin/env bash
# Measure the stability options of the seed on the same short run: none, gradient clipping, warm-up + cosine
# schedule, and batch norm instead of instance norm in the johnson network. Prints each run's final
# validation losses (one JSON line per variant). A CPU-sized run by default (experiment=quick, about 3 minutes
# each on 2 cores); pass other overrides to make it longer:  bash benchmarks/stability.sh trainer.max_steps=400
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${STABILITY_OUT:-outputs/stability}"
declare -A VARIANTS=(
  [default]=""
  [clip_1.0]="trainer.gradient_clip_val=1.0"
  [warmup_cosine]="optim.warmup_steps=20 optim.lr_schedule=cosine"
  [batch_norm]="model.norm=batch"
)
for name in default clip_1.0 warmup_cosine batch_norm; do
  # shellcheck disable=SC2086  # the variant's overrides are split on spaces on purpose
  python train.py experiment=quick seed=0 ${VARIANTS[$name]} "$@" "hydra.run.dir=$OUT/$name" \
    +trainer.enable_progress_bar=false callbacks.grid.every_n_steps=0 >"$OUT.$name.log" 2>&1
  python - "$name" "$OUT.$name.log" <<'PY'
import ast, json, re, sys
name, log = sys.argv[1], open(sys.argv[2]).read()
m = re.search(r"finished at step (\d+): (\{.*\})", log)
if not m:
    print(json.dumps({"variant": name, "failed": log[-500:]}))
else:
    metrics = ast.literal_eval(m.group(2))
    print(json.dumps({"variant": name, "steps": int(m.group(1)),
                      **{k: round(v, 4) for k, v in metrics.items() if k.startswith("val/")}}))
PY
done
