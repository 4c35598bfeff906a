#!/usr/bin/env python
"""Ways to learn a new painting on a CPU, side by side in one process, at equal CPU minutes.

Every method starts from the same trained network (``--base``: a multi-style network, or a single-style one
whose style becomes style 0) extended by one style whose scales and shifts start from the mean of its styles,
and trains on the same random crops of the training photos against the painting's Grams (``LossConfig()``: the
``custom`` preset's weights):

* ``scales``: only the new style's instance-norm scales and shifts, at ``AdaptRecipe.lr`` (what
  :func:`nst_lightning.transfer.adapt.adapt_style` runs);
* ``frozen_encoder``: everything but the encoder (the new style's rows included) at ``optim.lr``;
* ``finetune``: every parameter at ``optim.lr``.

The methods take steps in turn, and each is charged the CPU time of its own steps (``time.thread_time``, one
thread), so a loaded machine slows them alike and the comparison stays at equal compute. At each of
``--minutes`` (CPU minutes per method) a method is scored on the validation photos (not charged): the mean
objective of the new style. Prints one JSON line per score and, last, a summary object (also ``--out``).

    NST_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/adapt.py --base starry_night \\
        --painting ../shared/data/eval/styles/mondrian.jpg --minutes 3 5 15 --out docs/results/adapt_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from nst_lightning.cpu_features import reported_flags
from nst_lightning.image import list_images, load_image
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import set_style_targets
from nst_lightning.models.conditional import num_styles, style_parameters
from nst_lightning.training.hparams import OptimGroup
from nst_lightning.transfer.adapt import PRECISIONS, AdaptRecipe, autocast, crops, extended
from nst_lightning.transfer.add_style import train_only_styles

METHODS = ("scales", "frozen_encoder", "finetune")


def trainable(net: torch.nn.Module, method: str) -> list[torch.nn.Parameter]:
    """The parameters ``method`` trains (the others get no gradient)."""
    new_style = num_styles(net) - 1
    if method == "scales":
        return train_only_styles(net, [new_style])
    net.requires_grad_(True)
    if method == "frozen_encoder":
        net.encoder.requires_grad_(False)
        for p in style_parameters(net, new_style):
            p.requires_grad_(True)
    return [p for p in net.parameters() if p.requires_grad]


@torch.no_grad()
def score(net: torch.nn.Module, loss: PerceptualLoss, photos: list[torch.Tensor]) -> float:
    """Mean objective of the new style over the validation photos."""
    net.eval()
    index = num_styles(net) - 1
    values = [float(loss(net(p, torch.tensor([index])).clamp(0, 1), p)["objective"]) for p in photos]
    net.train()
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="starry_night", help="trained network to start from")
    parser.add_argument("--painting", type=Path, required=True)
    parser.add_argument("--minutes", type=float, nargs="+", default=[3, 5, 15, 30], help="CPU minutes per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--crop", type=int, default=AdaptRecipe.crop)
    parser.add_argument("--batch", type=int, default=AdaptRecipe.batch)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--val-count", type=int, default=4)
    parser.add_argument("--precision", default=AdaptRecipe.precision, choices=PRECISIONS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(os.environ.get("NST_DATA_DIR", "data"))
    train_photos = [load_image(f)[0] for f in list_images(data / "train", recursive=False)]
    val = [load_image(f, long_side=args.val_size) for f in list_images(data / "eval" / "content", recursive=False)]
    val = val[: args.val_count]
    loss = PerceptualLoss(LossConfig())
    set_style_targets(loss, [(args.painting, AdaptRecipe.style_size)])
    lr = OptimGroup().lr
    lrs = {"scales": AdaptRecipe().lr, "frozen_encoder": lr, "finetune": lr}
    runs: dict[str, dict[str, Any]] = {}
    for m in args.methods:
        net = extended(args.base)[1].train()
        runs[m] = {"net": net, "opt": torch.optim.Adam(trainable(net, m), lr=lrs[m]), "cpu_s": 0.0, "steps": 0,
                   "rng": random.Random(0), "todo": sorted(args.minutes), "curve": []}  # fmt: skip
    start_objective = score(next(iter(runs.values()))["net"], loss, val)
    print(json.dumps({"method": "start", "minutes": 0, "val_objective": round(start_objective, 4)}), flush=True)
    while any(r["todo"] for r in runs.values()):
        for m, r in runs.items():
            if not r["todo"]:
                continue
            t0 = time.thread_time()
            batch = crops(train_photos, AdaptRecipe(crop=args.crop, batch=args.batch), r["rng"])
            index = num_styles(r["net"]) - 1
            with autocast(args.precision):
                objective = loss(r["net"](batch, torch.full((batch.shape[0],), index)), batch)["objective"]
            r["opt"].zero_grad(set_to_none=True)
            objective.backward()
            r["opt"].step()
            r["cpu_s"] += time.thread_time() - t0
            r["steps"] += 1
            if r["cpu_s"] >= 60 * r["todo"][0]:
                value = score(r["net"], loss, val)
                point = {"method": m, "minutes": r["todo"].pop(0), "steps": r["steps"], "cpu_s": round(r["cpu_s"], 1),
                         "val_objective": round(value, 4)}  # fmt: skip
                r["curve"].append(point)
                print(json.dumps(point), flush=True)
    summary = {
        "benchmark": "adapt", "base": args.base, "painting": args.painting.name, "crop": args.crop,
        "batch": args.batch, "val_photos": len(val), "val_size": args.val_size, "lr": lrs, "precision": args.precision,
        "start_val_objective": round(start_objective, 4), "threads": 1,
        "cpu_flags": reported_flags(),
        "curves": {m: r["curve"] for m, r in runs.items()},
        "best_at": {str(t): min(runs, key=lambda m: next(p["val_objective"] for p in runs[m]["curve"]
                                                         if p["minutes"] == t)) for t in args.minutes},
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
