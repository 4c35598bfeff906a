#!/usr/bin/env python
"""Loss curves of the real training pipeline in several precisions on the same data.

Trains ``model=johnson`` through ``nst_lightning.cli.train.run`` (Lightning, Hydra config) for N steps per
precision from the same seed, on the same photos in the same order (no shuffle, centre crops), and prints one
JSON object: each precision's objective per step, its largest per-step relative gap to fp32, the relative gap
of the mean over the run, and whether any loss was NaN/inf.

    python benchmarks/precision_parity.py --precisions 32-true bf16-mixed 16-mixed --steps 50   # on a GPU
    python benchmarks/precision_parity.py --precisions 32-true bf16-mixed --steps 20 --size 64 \\
        --model johnson_tiny                                                                # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.train import run as train


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def curve(precision: str, args: argparse.Namespace, out: str) -> list[float]:
    overrides = [
        f"model={args.model}", f"trainer.precision={precision}", f"trainer.max_steps={args.steps}",
        f"data.image_size={args.size}", f"data.batch_size={args.batch}", "data.shuffle=false", "data.augment=false",
        "data.val_count=0", "trainer.val_check_interval=null", "~callbacks", "~logger",
        f"data.num_workers={args.workers}", f"paths.output_dir={out}/{precision}", "seed=0",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_checkpointing = False
    recorder = Recorder()
    train(cfg, extra_callbacks=[recorder])
    return recorder.values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", default="johnson")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        curves = {p: curve(p, args, out) for p in args.precisions}
    ref = curves[args.precisions[0]]
    report: dict = {"steps": args.steps, "size": args.size, "batch": args.batch, "model": args.model, "runs": {}}
    for p, values in curves.items():
        report["runs"][p] = {
            "finite": all(math.isfinite(v) for v in values),
            "max_step_rel_gap": max(abs(a - b) / abs(a) for a, b in zip(ref, values, strict=True)),
            "mean_rel_gap": abs(sum(values) - sum(ref)) / abs(sum(ref)),
            "first": values[0],
            "last": values[-1],
            "objective": [round(v, 5) for v in values],
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
