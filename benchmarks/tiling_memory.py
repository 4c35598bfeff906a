#!/usr/bin/env python
"""Peak memory and seams of tiled inference: one JSON line per run, then a summary JSON line.

    python benchmarks/tiling_memory.py                      # 4096×4096 with 1024 px tiles, 2048 px untiled/tiled
    python benchmarks/tiling_memory.py --runs 4096:1024     # only the 4096×4096 run (SIZE:TILE, TILE 0 = untiled)
    python benchmarks/tiling_memory.py --fidelity 768:256   # also: tiled vs untiled difference at 768 px

Each run is a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own: the Python process with torch, the
shipped ``starry_night`` network (Johnson, instance norm), the decoded image and the output included. The image
is a content photo (``$NST_DATA_DIR/content/chicago.jpg``) upscaled to SIZE×SIZE, or a synthetic one without it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def test_image(size: int) -> Image.Image:
    photo = Path(os.environ.get("NST_DATA_DIR", "data")) / "content" / "chicago.jpg"
    if photo.exists():
        return Image.open(photo).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(40 * xx * yy)], axis=-1)
    img[size // 4 : size // 2, size // 3 : 2 * size // 3] = (0.9, 0.2, 0.1)
    return Image.fromarray((img * 255).astype(np.uint8))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(size: int, tile: int) -> dict:
    import torch

    from nst_lightning.image import pil_to_tensor
    from nst_lightning.inference import auto_overlap, load_model, stylize
    from nst_lightning.inference.tiling import seam_metric

    model = load_model("starry_night", "cpu")
    image = test_image(size)
    before = rss_mb()
    start = time.perf_counter()
    out = stylize(image, model, tile_size=tile or None)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "size": size, "tile_size": tile or None, "device": "cpu", "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1), "rss_before_mb": round(before), "peak_rss_mb": round(peak),
    }  # fmt: skip
    if tile and size > tile:
        overlap = auto_overlap(tile, None)
        result |= {"tile_overlap": overlap, "seam_metric": round(seam_metric(pil_to_tensor(out), tile, overlap), 4)}
    return result


def fidelity(size: int, tile: int) -> dict:
    """Tiled vs untiled at a size where both run: whole-image statistics (downscaled pass / exact) vs per tile."""
    import torch

    from nst_lightning.image import pil_to_tensor
    from nst_lightning.inference import auto_overlap, load_model, prepare_model
    from nst_lightning.inference.tiling import GlobalNormStats, seam_metric, stylize_tiled

    model = load_model("starry_night", "cpu")
    x = pil_to_tensor(test_image(size)).unsqueeze(0)
    run = prepare_model(model)
    overlap = auto_overlap(tile, None)
    with torch.inference_mode():
        ref = run(x)
        variants = {
            "global_stats_downscaled": dict(norm_stats=GlobalNormStats(model.net)),
            "global_stats_full_res": dict(norm_stats=GlobalNormStats(model.net), stats_size=size),
            "per_tile_stats": dict(norm_stats=None),
            "per_tile_stats_no_overlap": dict(norm_stats=None, overlap=0),
        }
        result: dict = {"size": size, "tile_size": tile, "tile_overlap": overlap,
                        "untiled_seam_metric": round(seam_metric(ref, tile, overlap), 4)}  # fmt: skip
        for name, kw in variants.items():
            ov = kw.pop("overlap", overlap)
            out = stylize_tiled(run, x, tile, ov, **kw)
            diff = (out - ref).abs()
            result[name] = {
                "mean_abs_diff_vs_untiled": round(diff.mean().item(), 4),
                "p99_abs_diff_vs_untiled": round(diff.flatten().quantile(0.99).item(), 4),
                "seam_metric": round(seam_metric(out, tile, ov), 4),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=["4096:1024", "2048:0", "2048:512"], help="SIZE:TILE")
    parser.add_argument("--fidelity", default=None, help="SIZE:TILE for the tiled-vs-untiled comparison")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, size, tile = args.worker.split(":")
        fn = run_one if kind == "run" else fidelity
        print(json.dumps(fn(int(size), int(tile))), flush=True)
        return
    jobs = [f"run:{r}" for r in args.runs] + ([f"fidelity:{args.fidelity}"] if args.fidelity else [])
    results = []
    for job in jobs:
        proc = subprocess.run([sys.executable, __file__, "--worker", job], capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"job": job, "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    runs = [r for r in results if "peak_rss_mb" in r]
    print(json.dumps({"runs": runs, "fidelity": [r for r in results if "global_stats_downscaled" in r],
                      "max_peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=None)}))  # fmt: skip


if __name__ == "__main__":
    main()
