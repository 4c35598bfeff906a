#!/usr/bin/env python
"""Results table of a style-preset sweep (``optimize.py -m style=... style.style_weight=... style.size=...``).

For every job folder of a Hydra multirun: the style, its weight and Gram size, SSIM of the result to the content
(is the content still recognisable?) and the share of the content photo's style distance that is left in the
result (does it look like the painting? 0 = the painting's Gram statistics exactly, 1 = no closer than the
photo), measured with the job's own loss. Prints a Markdown table and, per style, the chosen setting: among
those that leave at most --max-style-left of the photo's style distance (they look like the painting), the one
that keeps the content best (highest SSIM); if none does, the one with the least style distance left.

    python scripts/preset_sweep_table.py multirun/presets --max-style-left 0.07
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nst_lightning.cli.optimize import build_loss
from nst_lightning.evaluation.metrics import ssim
from nst_lightning.image import load_image


@torch.no_grad()
def score_job(job: Path) -> dict | None:
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    out = job / "optimized.png"  # output: ${paths.output_dir}/optimized.png, the job folder
    if not out.exists():
        return None
    result = load_image(out)
    content = load_image(cfg.content, int(cfg.size))
    loss = build_loss(cfg, torch.device("cpu"))  # the job's own loss and style targets, as optimize.py built them
    left = loss(result)["style"] / loss(content)["style"]
    return {
        "style": cfg.style.name,
        "style_weight": float(cfg.style.style_weight),
        "style_size": int(cfg.style.size),
        "ssim": float(ssim(result, content)[0]),
        "style_left": float(left),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--max-style-left", type=float, default=0.07)
    args = parser.parse_args()
    rows = [r for job in sorted(args.sweep_dir.iterdir(), key=lambda p: (len(p.name), p.name))
            if (job / ".hydra").is_dir() and (r := score_job(job))]  # fmt: skip
    print("| style | style_weight | style.size | SSIM to content | style distance left |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['style']} | {r['style_weight']:g} | {r['style_size']} | {r['ssim']:.3f} | {r['style_left']:.3f} |")
    print()
    for style in dict.fromkeys(r["style"] for r in rows):
        mine = [r for r in rows if r["style"] == style]
        styled = [r for r in mine if r["style_left"] <= args.max_style_left]
        best = max(styled, key=lambda r: r["ssim"]) if styled else min(mine, key=lambda r: r["style_left"])
        print(f"{style}: style_weight={best['style_weight']:g} style.size={best['style_size']} "
              f"(SSIM {best['ssim']:.3f}, style distance left {best['style_left']:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
