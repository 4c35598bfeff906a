#!/usr/bin/env python
"""Phone formats beside the CPU runtimes: file size, parity and ms per image of each fixed-size export.

For one checkpoint (default the shipped ``starry_night``) and each size, writes the ``.pte`` (fp32, int8), the
``.tflite`` (fp32, fp16; only where litert-torch is installed) and the Core ML package (fp32, fp16: size only,
Core ML does not run on Linux), runs each by its own runtime on a 1×3×S×S image (one warm-up, then
``--repeats`` timed calls, median), and times eager PyTorch and ONNX Runtime on the same image in the same
process. Lower precisions also get the photo gate's mean absolute difference to eager fp32 (``--gate-photos``
training photos the int8 calibration did not see, resized to the export's size). One JSON line per cell.

    OMP_NUM_THREADS=1 nice python benchmarks/mobile.py --sizes 512 1024 --threads 1 > docs/results/mobile_cpu.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nst_lightning.cpu_features import reported_flags
from nst_lightning.errors import NSTError
from nst_lightning.export import check_gate, load_runtime, runtime_from_model
from nst_lightning.export.mobile import export_mobile
from nst_lightning.export.quantize import training_photos
from nst_lightning.export.runtime import EagerRuntime, Runtime
from nst_lightning.image import resize_tensor
from nst_lightning.inference import load_model

VARIANTS = [("executorch", "fp32"), ("executorch", "int8"), ("tflite", "fp32"), ("tflite", "fp16"),
            ("coreml", "fp32"), ("coreml", "fp16")]  # fmt: skip
SUFFIX = {"executorch": ".pte", "tflite": ".tflite", "coreml": ".mlpackage"}


def ms_per_image(runtime: Runtime, size: int, repeats: int) -> dict[str, float]:
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    runtime(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime(image)
        times.append(time.perf_counter() - start)
    return {"ms_median": 1000 * statistics.median(times), "ms_min": 1000 * min(times), "timed_calls": repeats}


def folder_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="starry_night")
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gate-photos", type=int, default=4, help="photos for the lower precisions' photo gate")
    parser.add_argument("--variants", nargs="+", default=None, help="format:precision, e.g. executorch:int8")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [tuple(v.split(":")) for v in args.variants] if args.variants else VARIANTS
    loaded = load_model(args.ckpt)
    eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta)
    common = {"ckpt": args.ckpt, "model": loaded.model_name, "threads": torch.get_num_threads(),
              "cpu_flags": reported_flags(), "torch": torch.__version__}  # fmt: skip
    photos = training_photos(count=args.gate_photos, offset=8)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            gate_photos = [resize_tensor(p, (size, size)).clamp(0, 1) for p in photos]
            for name in ("eager", "onnxruntime"):
                runtime = eager if name == "eager" else runtime_from_model(loaded, name)
                row = {
                    **common,
                    "size": size,
                    "runtime": name,
                    "precision": "fp32",
                    **ms_per_image(runtime, size, args.repeats),
                }
                print(json.dumps(row), flush=True)
            for fmt, precision in chosen:
                row: dict[str, Any] = {**common, "size": size, "format": fmt, "precision": precision}
                if fmt == "tflite" and importlib.util.find_spec("litert_torch") is None:
                    print(json.dumps({**row, "skipped": "litert-torch not installed"}), flush=True)
                    continue
                path = Path(tmp) / f"{fmt}_{precision}_{size}{SUFFIX[fmt]}"
                start = time.perf_counter()
                try:
                    export_mobile(loaded, fmt, path, size=(size, size), precision=precision)
                except NSTError as exc:
                    print(json.dumps({**row, "error": str(exc)}), flush=True)
                    continue
                row.update(export_s=round(time.perf_counter() - start, 1), bytes=folder_bytes(path))
                if fmt != "coreml":
                    runtime = load_runtime(path)
                    row["runtime"] = runtime.name
                    noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
                    row["max_abs_diff_noise"] = float((runtime(noise) - eager(noise)).abs().max())
                    if precision != "fp32":
                        gate = check_gate(eager, runtime, gate_photos)
                        row.update(photo_mean_abs_diff=gate.mean_abs_diff, photo_gate=gate.reason)
                    row.update(ms_per_image(runtime, size, args.repeats))
                else:
                    row["runtime"] = None
                    row["note"] = "Core ML runs on macOS/iOS only: size and structure here, no timing"
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
