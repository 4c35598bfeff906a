#!/usr/bin/env python
"""Flicker and speed of video stylization: frame by frame against flow-based consistency.

A clip is cut from a still photo by a panning, zooming window (:func:`nst_lightning.inference.video.pan_zoom_clip`), so
the true motion between frames is known exactly. For each model (a shipped single-style network, the
zero-shot model with a painting) and each consistency mode it reports the flicker (mean warped absolute
difference between consecutive stylized frames, 0..255, over pixels visible in both) with the exact motion and
with Farneback flow, and seconds per frame (stylize + consistency, on this machine). The content clip's own
flicker is the floor (resampling only). Prints one JSON line per row, and writes a frame strip.

    nice python benchmarks/video.py --photo PHOTO.jpg --painting PAINTING.jpg --strip docs/images/video_strip.jpg

``--profile`` instead times ``stylize.py input=clip.mp4`` end to end on a 640×360 clip (``--profile-size``) for
each ``--runtimes`` × ``--qualities`` × ``--flow-sizes`` with ``consistency=flow``: frames per second and the
time per frame in each stage (decode, network, flow, blend, encode), and the flicker of the decoded output
against the exact motion.

    OMP_NUM_THREADS=1 nice python benchmarks/video.py --profile --runtimes eager auto --qualities full fast
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

from nst_lightning.inference import StylizeOptions, prepare_model, stylize
from nst_lightning.inference.options import CONSISTENCY
from nst_lightning.inference.temporal import estimated_motion, flicker, pan_zoom_clip
from nst_lightning.inference.video import stylize_frames, stylize_video, write_video
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


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def profile(args: argparse.Namespace, photo: np.ndarray, base: dict) -> None:
    """End-to-end video timings per stage on a clip of ``--profile-size`` (see the module docstring)."""
    import tempfile

    clip = pan_zoom_clip(photo, args.frames, tuple(args.profile_size), tuple(args.pan), args.zoom)
    with tempfile.TemporaryDirectory() as folder:
        src = write_video(Path(folder) / "clip.mp4", clip.frames, rate=25)
        floor = flicker(decoded(src), clip.flows, clip.masks)
        print(json.dumps({**base, "size": list(args.profile_size), "model": "content (decoded)",
                          "flicker_exact": floor}), flush=True)  # fmt: skip
        for runtime in args.runtimes:
            for quality in args.qualities:
                for flow_size in args.flow_sizes:
                    options = StylizeOptions(runtime=runtime, quality=quality, consistency="flow",
                                             flow_size=None if flow_size <= 0 else flow_size)  # fmt: skip
                    stylize_video(src, Path(folder) / "warm.mp4", args.ckpt, options, device="cpu", progress=False,
                                  max_size=64)  # fmt: skip  # loads, converts (and calibrates) outside the timing
                    report = stylize_video(src, Path(folder) / "out.mp4", args.ckpt, options, device="cpu",
                                           progress=False)  # fmt: skip
                    per_frame = {k: round(1000 * v / report.frames, 1) for k, v in report.stages.items()}
                    row = {
                        "model": args.ckpt,
                        "runtime": runtime,
                        "ran": report.runtime,
                        "quality": quality,
                        "flow_size": options.flow_size,
                        "fps": round(report.fps, 2),
                        "seconds_per_frame": round(report.seconds_per_frame, 3),
                        "ms_per_frame": per_frame,
                        "flicker_exact": flicker(decoded(Path(folder) / "out.mp4"), clip.flows, clip.masks),
                    }
                    print(json.dumps({**base, "size": list(args.profile_size), **row}), flush=True)


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
    parser.add_argument("--profile", action="store_true", help="time the video path end to end per stage instead")
    parser.add_argument("--profile-size", type=int, nargs=2, default=(360, 640), help="frame height width")
    parser.add_argument("--runtimes", nargs="+", default=["eager"], help="--profile: StylizeOptions.runtime values")
    parser.add_argument("--qualities", nargs="+", default=["full"], help="--profile: full and/or fast")
    parser.add_argument("--flow-sizes", type=int, nargs="+", default=[320], help="flow_size values (0: full size)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "1")))

    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    if args.profile:
        profile(args, photo, {"frames": args.frames, "pan": list(args.pan), "zoom": args.zoom,
                              "threads": torch.get_num_threads()})  # fmt: skip
        return
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
