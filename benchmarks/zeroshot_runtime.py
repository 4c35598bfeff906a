#!/usr/bin/env python
"""Zero-shot at 512 px in each runtime: where the time goes (encoder, transform, decoder, refinement).

For each ``--runtimes`` value (``eager``, ``openvino``, ``openvino_bf16``, ``auto``) the shipped zero-shot model
with ``--painting`` stylizes ``--photo`` (longest side ``--size``): median ms of the VGG encoder, the
whitening-colouring transform and the decoder alone, of a whole ``stylize()`` with the default refinement steps
(which run eager: they take gradients through VGG-19) and without them, and the mean absolute difference of the
result to the first runtime's. Prints one JSON line per runtime.

    OMP_NUM_THREADS=1 nice python benchmarks/zeroshot_runtime.py --runtimes eager openvino openvino_bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from nst_lightning.cpu_features import reported_flags
from nst_lightning.image import load_image
from nst_lightning.inference import prepare_model, stylize
from nst_lightning.inference.feature_transforms import transform
from nst_lightning.inference.zeroshot import ZeroShotModel, load_zeroshot


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median ms of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def main() -> None:
    data = Path(os.environ.get("NST_DATA_DIR", "data"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=data / "content" / "tubingen.jpg")
    parser.add_argument("--painting", type=Path, default=data / "styles" / "the_wave.jpg")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runtimes", nargs="+", default=["eager", "openvino", "openvino_bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "1")))
    photo = load_image(args.photo, args.size)
    refining = load_zeroshot(args.painting)
    plain = load_zeroshot(args.painting, refine_steps=0)
    first = None
    for runtime in args.runtimes:
        row, out = measure(runtime, refining, plain, photo, args.repeats)
        first = out if first is None else first
        row["mean_abs_diff_vs_first"] = float((out - first).abs().mean())
        row["cpu_flags"] = reported_flags()
        row["load_average"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)


@torch.inference_mode()
def measure(
    runtime: str, refining: ZeroShotModel, plain: ZeroShotModel, photo: torch.Tensor, repeats: int
) -> tuple[dict, torch.Tensor]:  # fmt: skip
    """One row of figures for ``runtime`` and its stylized ``photo`` (1×3×H×W)."""
    runner, bare = prepare_model(refining, runtime=runtime), prepare_model(plain, runtime=runtime)
    model = runner.module
    level = model.levels[0]
    encode, decode = model.part(level)
    features = encode(photo)
    stats = model.style.levels[level]
    moved = transform(features[0], model.method, stats, None).unsqueeze(0)
    row = {
        "runtime": runtime,
        "ran": runner.runtime,
        "size": list(photo.shape[-2:]),
        "refine_steps": model.refine_steps,
        "threads": torch.get_num_threads(),
        "encode_ms": median_ms(lambda: encode(photo), repeats),
        "transform_ms": median_ms(lambda: transform(features[0], model.method, stats, None), repeats),
        "decode_ms": median_ms(lambda: decode(moved), repeats),
        "stylize_ms": median_ms(lambda: stylize(photo, runner, input_noise=0.0), repeats),
        "stylize_no_refine_ms": median_ms(lambda: stylize(photo, bare, input_noise=0.0), repeats),
    }
    return row, stylize(photo, runner, input_noise=0.0)


if __name__ == "__main__":
    main()
