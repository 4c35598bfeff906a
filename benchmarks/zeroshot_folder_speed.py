#!/usr/bin/env python
"""Seconds per image of zero-shot stylization inside a folder (``stylize_paths``, as ``stylize.py input=FOLDER``)
with 0, 1 and 2 refinement steps, after one warm-up image. Prints one dict per setting.

    python benchmarks/zeroshot_folder_speed.py THREADS PAINTING FOLDER
"""

import sys
import time
from pathlib import Path

import torch

from nst_lightning.image import list_images
from nst_lightning.inference import StylizeOptions, stylize_paths
from nst_lightning.inference.zeroshot import load_zeroshot


def main() -> None:
    threads, painting, folder = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    torch.set_num_threads(threads)
    first = list_images(folder, recursive=False)[0]
    for steps in (0, 1, 2):
        model = load_zeroshot(painting, refine_steps=steps)
        stylize_paths(model, first, Path("/tmp") / f"warm_{first.name}", StylizeOptions(), device="cpu")
        start = time.perf_counter()
        report = stylize_paths(model, folder, Path("/tmp") / f"zeroshot_speed_{steps}", StylizeOptions(), device="cpu")
        seconds = round((time.perf_counter() - start) / len(report.written), 2)
        print({"threads": threads, "refine_steps": steps, "images": len(report.written), "s_per_image": seconds},
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
