#!/usr/bin/env python
"""Score sets of zero-shot decoders on the evaluation objective: each unseen painting × the first photos.

The objective is ``evaluate.py zeroshot=``'s: ``conf/loss/default.yaml`` with the ``custom`` preset's weights and
the painting's Grams (at 512 px), the zero-shot output scored against its photo at ``--size`` px. Each
``--set NAME=FILE[,FILE...]`` is one model (WCT coarse to fine over its decoders, then ``--refine-steps``
gradient steps on the objective). Prints one JSON line per
(set, painting) and a mean per set, with seconds per image.

    nice python benchmarks/zeroshot_decoders.py --size 256 --photos 2 \\
        --set shipped=nst_lightning/pretrained/zeroshot/relu3_1.pt,nst_lightning/pretrained/zeroshot/relu2_1.pt \\
        --set style=relu3_1_style.pt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from nst_lightning.cpu_features import reported_flags
from nst_lightning.evaluation.evaluate import eval_images, score
from nst_lightning.image import load_image
from nst_lightning.inference import stylize
from nst_lightning.inference.zeroshot import REFINE_STEPS, ZeroShotModel, read_decoder
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import set_style_targets

STYLE_SIZE = 512  # the custom preset's style.size: the Grams of the objective


def parse_args() -> argparse.Namespace:
    data = Path(os.environ.get("NST_DATA_DIR", "data")) / "eval"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, help="NAME=FILE[,FILE...] (repeatable)")
    parser.add_argument("--paintings", type=Path, default=data / "styles")
    parser.add_argument("--content", type=Path, default=data / "content")
    parser.add_argument("--photos", type=int, default=2, help="the first N evaluation photos")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refine-steps", type=int, default=REFINE_STEPS, help="gradient steps after decoding")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    photos = [load_image(p, args.size) for p in eval_images(args.content, args.photos)]
    paintings = eval_images(args.paintings)
    print(json.dumps({"cpu_flags": reported_flags(), "threads": args.threads, "size": args.size,
                      "photos": len(photos), "refine_steps": args.refine_steps}), flush=True)  # fmt: skip
    for spec in args.set:
        name, _, files = spec.partition("=")
        base = ZeroShotModel([read_decoder(Path(f)) for f in files.split(",")], refine_steps=args.refine_steps)
        objectives = []
        for painting in paintings:
            loss = PerceptualLoss(LossConfig())
            set_style_targets(loss, [(painting, STYLE_SIZE)])
            model = base.with_style(painting)
            rows, seconds = [], []
            for photo in photos:
                start = time.perf_counter()
                out = stylize(photo, model)
                seconds.append(time.perf_counter() - start)
                rows.append(score(loss, out, photo))
            mean = {k: statistics.mean(r[k] for r in rows) for k in ("objective", "content", "style")}
            objectives.append(mean["objective"])
            print(json.dumps({"set": name, "painting": painting.stem, **{k: round(v, 3) for k, v in mean.items()},
                              "s_per_image": round(statistics.mean(seconds), 2)}), flush=True)  # fmt: skip
        print(json.dumps({"set": name, "levels": base.levels, "mean_objective": round(statistics.mean(objectives), 3)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
