#!/usr/bin/env python
"""Seconds per image of zero-shot stylization (shipped decoders) at several sizes, and the style pass itself.

Per size: one warm-up call, then ``--repeats`` timed calls of ``stylize`` on a square photo crop (whole image,
and tiled at ``--tile`` px when the image is larger). Prints one JSON line per row.

    nice python benchmarks/zeroshot.py --photo PHOTO.jpg --painting PAINTING.jpg --sizes 512 1024
    nice python benchmarks/zeroshot.py --picture docs/images/zeroshot_unseen.jpg --lbfgs 50 \\
        --photo $NST_DATA_DIR/content/brad_pitt.jpg --paintings $NST_DATA_DIR/eval/styles/*.jpg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from nst_lightning.baseline.optimize import OptimizeSettings, optimize_image
from nst_lightning.image import pil_to_tensor, tensor_to_pil
from nst_lightning.inference import stylize
from nst_lightning.inference.zeroshot import STYLE_SIZE, load_zeroshot
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import set_style_targets


def timed(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def picture(photo: Image.Image, paintings: list[Path], path: Path, lbfgs: int = 0, height: int = 256,
            gap: int = 4) -> None:  # fmt: skip
    """A JPEG: the photo, then the photo stylized zero-shot with each painting (paintings not shown); with
    ``lbfgs`` > 0 a second row of per-image L-BFGS after that many iterations on the same objective (the photo's
    cell left white). Prints each cell's objective and seconds as JSON lines."""
    small = photo.resize((round(photo.width * height / photo.height), height), Image.Resampling.LANCZOS)
    content = pil_to_tensor(small)[None]
    model = load_zeroshot()
    rows = [[small], [None]] if lbfgs else [[small]]
    for painting in paintings:
        loss = PerceptualLoss(LossConfig())
        set_style_targets(loss, [(painting, STYLE_SIZE)])
        styled = model.with_style(painting)
        start = time.perf_counter()
        cell = stylize(small, styled)
        cells = [("zero-shot", cell, time.perf_counter() - start)]
        if lbfgs:
            start = time.perf_counter()
            result = optimize_image(loss, content, content.clone(), lbfgs, OptimizeSettings(), progress=False)
            cells.append((f"L-BFGS@{lbfgs}", tensor_to_pil(result.image), time.perf_counter() - start))
        for row, (name, image, seconds) in zip(rows, cells, strict=False):
            objective = float(loss(pil_to_tensor(image)[None], content)["objective"])
            print(json.dumps({"painting": painting.stem, "method": name, "size": list(small.size),
                              "objective": round(objective, 3), "seconds": round(seconds, 2)}), flush=True)  # fmt: skip
            row.append(image)
    width = small.width + gap
    canvas = Image.new("RGB", (len(rows[0]) * width - gap, len(rows) * (height + gap) - gap), "white")
    for r, row in enumerate(rows):
        for i, cell in enumerate(row):
            if cell is not None:
                canvas.paste(cell, (i * width, r * (height + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85)


def main() -> None:
    data = Path(os.environ.get("NST_DATA_DIR", "data"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=data / "content" / "tubingen.jpg")
    parser.add_argument("--painting", type=Path, default=data / "styles" / "the_wave.jpg")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--methods", nargs="+", default=["wct", "adain"])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--picture", type=Path, default=None, help="write photo | stylized with each --paintings")
    parser.add_argument("--paintings", type=Path, nargs="*", default=[])
    parser.add_argument("--lbfgs", type=int, default=0, help="with --picture: a row of L-BFGS after this many steps")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "1")))
    photo = Image.open(args.photo).convert("RGB")
    if args.picture:
        picture(photo, args.paintings, args.picture, args.lbfgs)
        return
    for method in args.methods:
        base = load_zeroshot(method=method)
        start = time.perf_counter()
        model = base.with_style(args.painting)
        style_s = time.perf_counter() - start
        print(json.dumps({"method": method, "levels": model.levels, "style_statistics_s": round(style_s, 2)}))
        for size in args.sizes:
            image = photo.resize((size, size), Image.Resampling.LANCZOS)
            for tile in [None] + ([args.tile] if size > args.tile else []):
                times = timed(lambda im=image, t=tile, m=model: stylize(im, m, tile_size=t), args.repeats)
                row = {"method": method, "size": size, "tile_size": tile, "seconds": round(statistics.median(times), 2),
                       "threads": torch.get_num_threads()}  # fmt: skip
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
