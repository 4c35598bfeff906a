#!/usr/bin/env python
"""Make the README figure: content photos that ship with scikit-image | style | stylized output.

python scripts/readme_figure.py --ckpt PATH --style PATH [--out docs/images/readme_demo.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from nst_lightning.image import open_rgb, pil_to_tensor, resize_to_long_side, tensor_to_pil
from nst_lightning.inference import load_model, stylize_tensor


def content_images() -> dict[str, Image.Image]:
    """scikit-image's bundled astronaut and coffee photos (no download)."""
    from skimage import data

    return {"astronaut": Image.fromarray(data.astronaut()), "coffee": Image.fromarray(data.coffee())}


def row(content: Image.Image, style: Image.Image, result: Image.Image, height: int, gap: int = 6) -> Image.Image:
    tiles = [im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS)
             for im in (content, style, result)]  # fmt: skip
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * 2, height), "white")
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + gap
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--style", required=True, help="the style image the network was trained on")
    parser.add_argument("--out", default="docs/images/readme_demo.jpg")
    parser.add_argument("--size", type=int, default=512, help="longest side of the stylized photos")
    parser.add_argument("--height", type=int, default=240, help="height of each row in the figure")
    args = parser.parse_args()

    net = load_model(args.ckpt).net
    style = open_rgb(args.style)
    rows = []
    for img in content_images().values():
        img = resize_to_long_side(img, args.size)
        with torch.inference_mode():
            out = tensor_to_pil(stylize_tensor(net, pil_to_tensor(img).unsqueeze(0)))
        rows.append(row(img, style, out, args.height))
    figure = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 6 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        figure.paste(r, (0, y))
        y += r.height + 6
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, quality=88)
    print(f"wrote {args.out} ({figure.width}×{figure.height})")


if __name__ == "__main__":
    main()
