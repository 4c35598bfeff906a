#!/usr/bin/env bash
# Train the shipped starry_night model on one GPU with experiment=starry_night, export it to fp16 and
# evaluate it at 512 px against L-BFGS@{50,100,300} on $NST_DATA_DIR/eval/content.
#
#   NST_DATA_DIR=... bash scripts/gpu_ship.sh OUT_DIR [TRAIN_TIME=00:00:04:00] [EVAL_TIMEOUT_S=150]
#
# Writes OUT_DIR/starry_night.pt (fp16, what ships in nst_lightning/pretrained/), OUT_DIR/train.log,
# OUT_DIR/evaluate.log and OUT_DIR/ship.tgz (from WORK_DIR, default OUT_DIR: the run's config, TensorBoard events, grids, eval report and grid).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="$(realpath -m "${1:?usage: gpu_ship.sh OUT_DIR}")"
TRAIN_TIME="${TRAIN_TIME:-00:00:04:00}"
WORK_DIR="$(realpath -m "${WORK_DIR:-$OUT_DIR}")"  # where the run and evaluation folders go
mkdir -p "$OUT_DIR" "$WORK_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RUN="$WORK_DIR/run"

pack() {  # everything small the run made, in one file (the device tool returns at most 8 files)
  tar -czf "$OUT_DIR/ship.tgz" -C "$WORK_DIR" --exclude='*.ckpt' run eval 2>/dev/null || true
}

# shellcheck disable=SC2086  # TRAIN_ARGS / EVAL_ARGS: extra Hydra overrides, split on spaces on purpose
python train.py experiment=starry_night "trainer.max_time=$TRAIN_TIME" "hydra.run.dir=$RUN" +trainer.enable_progress_bar=false ${TRAIN_ARGS:-} 2>&1 \
  | grep -v -E "it/s\]|s/it\]" | tee "$OUT_DIR/train.log"
CKPT="$(ls "$RUN"/checkpoints/best-*.ckpt 2>/dev/null | tail -1)"
CKPT="${CKPT:-$RUN/checkpoints/last.ckpt}"
echo "exporting $CKPT"
python - "$CKPT" "$OUT_DIR/starry_night.pt" <<'PY'
import sys, torch
from nst_lightning.inference import export_model
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print("checkpoint step", ckpt.get("global_step"), {k: v for k, v in ckpt.get("callbacks", {}).items() if "Checkpoint" in k})
path = export_model(sys.argv[1], sys.argv[2], half=True)
print("exported", path, path.stat().st_size, "bytes")
PY
pack
timeout "${EVAL_TIMEOUT_S:-150}" python evaluate.py "ckpt=$OUT_DIR/starry_night.pt" size=512 \
  "output_dir=$WORK_DIR/eval" "hydra.run.dir=$WORK_DIR/eval" ${EVAL_ARGS:-} 2>&1 | tee "$OUT_DIR/evaluate.log"
pack
