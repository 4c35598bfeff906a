#!/usr/bin/env python
"""Make the multi-style README figure: one photo in every style of a multi-style network, then a blend row.

Row 1: the photo, then the photo in each style (``stylize(..., style=NAME)``). Row 2: blends of the first two
styles (``style_mix``) from all of the first to all of the second. Each picture is labelled.

python scripts/multistyle_figure.py --ckpt PATH [--photo PATH] [--out docs/images/multistyle.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from nst_lightning.image import open_rgb, resize_to_long_side
from nst_lightning.inference import load_model, stylize
from nst_lightning.inference.checkpoint import style_names_of_meta

GAP = 6


def labelled(img: Image.Image, text: str, height: int) -> Image.Image:
    """``img`` scaled to ``height`` with ``text`` on a white band under it."""
    img = img.resize((round(img.width * height / img.height), height), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (img.width, height + 18), "white")
    tile.paste(img, (0, 0))
    ImageDraw.Draw(tile).text((4, height + 3), text, fill="black")
    return tile


def strip(tiles: list[Image.Image]) -> Image.Image:
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + GAP * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a multi-style checkpoint or export")
    parser.add_argument("--photo", default=None, help="default: scikit-image's bundled coffee photo")
    parser.add_argument("--out", default="docs/images/multistyle.jpg")
    parser.add_argument("--size", type=int, default=384, help="longest side of the stylized photo")
    parser.add_argument("--height", type=int, default=150, help="height of each picture in the figure")
    parser.add_argument("--blends", type=int, default=5, help="pictures in the blend row (ends included)")
    args = parser.parse_args()

    if args.photo:
        photo = open_rgb(args.photo)
    else:
        from skimage import data

        photo = Image.fromarray(data.coffee())
    photo = resize_to_long_side(photo, args.size)
    model = load_model(args.ckpt)
    names = style_names_of_meta(model.meta)
    if len(names) < 2:
        raise SystemExit(f"error: {args.ckpt} holds one style ({names[0]}); the figure needs a multi-style network")
    net = model.net.eval()
    top = [labelled(photo, "photo", args.height)]
    top += [labelled(stylize(photo, net, style=name), name, args.height) for name in names]
    a, b = names[:2]
    bottom = []
    for i in range(args.blends):
        w = i / (args.blends - 1)
        mix = {a: 1 - w, b: w}
        text = f"{a} {1 - w:.2f} / {b} {w:.2f}"
        bottom.append(labelled(stylize(photo, net, style_mix=mix), text, args.height))
    rows = [strip(top), strip(bottom)]
    figure = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + GAP), "white")
    figure.paste(rows[0], (0, 0))
    figure.paste(rows[1], (0, rows[0].height + GAP))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, quality=88)
    print(f"wrote {args.out} ({figure.width}×{figure.height}): styles {', '.join(names)}")


if __name__ == "__main__":
    main()
