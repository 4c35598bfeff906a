#!/usr/bin/env python
"""Seconds per image of zero-shot stylization (shipped decoders) at several sizes, and the style pass itself.

Per size: one warm-up call, then ``--repeats`` timed calls of ``stylize`` on a square photo crop (whole image,
and tiled at ``--tile`` px when the image is larger). Prints one JSON line per row.

    nice python benchmarks/zeroshot.py --photo PHOTO.jpg --painting PAINTING.jpg --sizes 512 1024
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

from nst_lightning.inference import stylize
from nst_lightning.inference.zeroshot import load_zeroshot


def timed(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def picture(photo: Image.Image, paintings: list[Path], path: Path, height: int = 256, gap: int = 4) -> None:
    """One JPEG row: the photo, then the photo stylized zero-shot with each painting (paintings not shown)."""
    small = photo.resize((round(photo.width * height / photo.height), height), Image.Resampling.LANCZOS)
    model = load_zeroshot()
    cells = [small] + [stylize(small, model.with_style(p)) for p in paintings]
    canvas = Image.new("RGB", (len(cells) * (small.width + gap) - gap, height), "white")
    for i, cell in enumerate(cells):
        canvas.paste(cell, (i * (small.width + gap), 0))
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
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "1")))
    photo = Image.open(args.photo).convert("RGB")
    if args.picture:
        picture(photo, args.paintings, args.picture)
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
