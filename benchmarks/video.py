#!/usr/bin/env python
"""Flicker and speed of video stylization: frame by frame against flow-based consistency.

A clip is cut from a still photo by a panning, zooming window (:func:`nst_lightning.inference.video.pan_zoom_clip`), so
the true motion between frames is known exactly. For each model (a shipped single-style network, the
zero-shot model with a painting) and each consistency mode it reports the flicker (mean warped absolute
difference between consecutive stylized frames, 0..255, over pixels visible in both) with the exact motion and
with Farneback flow, and seconds per frame (stylize + consistency, on this machine). The content clip's own
flicker is the floor (resampling only). Prints one JSON line per row, and writes a frame strip.

    nice python benchmarks/video.py --photo PHOTO.jpg --painting PAINTING.jpg --strip docs/images/video_strip.jpg
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nst_lightning.inference import prepare_model, stylize
from nst_lightning.inference.options import CONSISTENCY
from nst_lightning.inference.temporal import estimated_motion, flicker, pan_zoom_clip
from nst_lightning.inference.video import stylize_frames
from nst_lightning.inference.zeroshot import load_zeroshot


def strip(rows: list[list[np.ndarray]], path: Path, cell: int = 160, gap: int = 4) -> None:
    """Rows of H×W×3 uint8 frames → one JPEG, each frame scaled to ``cell`` px wide."""
    h = round(rows[0][0].shape[0] * cell / rows[0][0].shape[1])
    canvas = Image.new("RGB", (len(rows[0]) * (cell + gap) - gap, len(rows) * (h + gap) - gap), "white")
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            canvas.paste(
                Image.fromarray(frame).resize((cell, h), Image.Resampling.LANCZOS), (c * (cell + gap), r * (h + gap))
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85)


def main() -> None:
    data = Path(os.environ.get("NST_DATA_DIR", "data"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=data / "content" / "tubingen.jpg")
    parser.add_argument("--painting", type=Path, default=data / "styles" / "the_wave.jpg")
    parser.add_argument("--ckpt", default="starry_night")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), help="frame height width")
    parser.add_argument("--pan", type=float, nargs=2, default=(4.0, 1.5))
    parser.add_argument("--zoom", type=float, default=1.01)
    parser.add_argument("--strip", type=Path, default=None, help="write a frame strip (rows: input, flow, none)")
    parser.add_argument("--strip-frames", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "1")))

    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    clip = pan_zoom_clip(photo, args.frames, tuple(args.size), tuple(args.pan), args.zoom)
    est_flows, est_masks = estimated_motion(clip.frames)
    base = {"frames": args.frames, "size": list(args.size), "pan": list(args.pan), "zoom": args.zoom,
            "threads": torch.get_num_threads()}  # fmt: skip
    floor = {"model": "content (no stylization)", "consistency": "-",
             "flicker_exact": flicker(clip.frames, clip.flows, clip.masks),
             "flicker_farneback": flicker(clip.frames, est_flows, est_masks)}  # fmt: skip
    print(json.dumps({**base, **floor}), flush=True)
    models = {args.ckpt: prepare_model(args.ckpt, "cpu"),
              f"zero-shot ({args.painting.stem})": prepare_model(load_zeroshot(args.painting))}  # fmt: skip
    rows = [clip.frames[:: max(1, args.frames // args.strip_frames)][: args.strip_frames]]
    for name, runner in models.items():
        for mode in CONSISTENCY:
            start = time.perf_counter()
            styled = list(stylize_frames(iter(clip.frames), lambda x, r=runner: stylize(x, r), mode))
            seconds = (time.perf_counter() - start) / args.frames
            row = {"model": name, "consistency": mode, "seconds_per_frame": round(seconds, 3),
                   "flicker_exact": flicker(styled, clip.flows, clip.masks),
                   "flicker_farneback": flicker(styled, est_flows, est_masks)}  # fmt: skip
            print(json.dumps({**base, **row}), flush=True)
            if name == args.ckpt:
                rows.append(styled[:: max(1, args.frames // args.strip_frames)][: args.strip_frames])
    if args.strip:
        strip(rows, args.strip)


if __name__ == "__main__":
    main()
