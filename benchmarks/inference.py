#!/usr/bin/env python
"""Inference speed of each network under each runtime: ms per image at 512, 1024 and 2048 px (square, batch 1).

Networks get random weights (speed does not depend on them; pretrained encoders cannot be downloaded here).
Each runtime is built the way the service builds it (``runtime_from_model``: the graph captured in memory)
and first checked against the eager network on two small sizes (``max_abs_diff``). Per cell: one warm-up
call, then up to ``--repeats`` timed calls, fewer once ``--budget-s`` seconds are spent (a cell whose warm-up
alone takes longer than the budget reports that one call). Prints one JSON line per cell, then a table, then
one JSON object as the last line.

    python benchmarks/inference.py                                   # everything, CPU (+ CUDA if present)
    nice python benchmarks/inference.py --networks johnson --sizes 512 1024 --repeats 5
    python benchmarks/inference.py --devices cuda --runtimes eager torch_export
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from nst_lightning.cpu_features import reported_flags
from nst_lightning.errors import NSTError
from nst_lightning.export import PARITY_SIZES, RUNTIMES, Runtime, check_gate, check_parity, runtime_from_model
from nst_lightning.export.quantize import CALIBRATION_COUNT, training_photos
from nst_lightning.inference import LoadedModel, load_model
from nst_lightning.models import create_model

NETWORKS = ("johnson", "mobilenetv3", "resnet50")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cell(runtime: Runtime, size: int, repeats: int, budget_s: float) -> dict[str, Any]:
    """Warm-up call, then timed calls: ms per image (median and min) and how many calls were timed."""
    images = torch.rand(1, 3, size, size, device=runtime.device)
    sync(runtime.device)
    start = time.perf_counter()
    runtime(images)
    sync(runtime.device)
    warmup_s = time.perf_counter() - start
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent + times[-1] <= budget_s) and warmup_s <= budget_s:
        start = time.perf_counter()
        runtime(images)
        sync(runtime.device)
        times.append(time.perf_counter() - start)
        spent += times[-1]
    timed = times or [warmup_s]
    return {
        "ms": round(1000 * statistics.median(timed), 1),
        "min_ms": round(1000 * min(timed), 1),
        "runs": len(times),
        "warmup_only": not times,
    }


def matmul_peak_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 3) -> float:
    """This machine's measured matmul rate in ``dtype`` (GFLOP/s, best of ``repeats`` n×n products): a yardstick of
    what the CPU does here and now (a busy sibling hyperthread lowers it), not its theoretical peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def network_gflop(loaded: LoadedModel, size: int) -> float:
    """GFLOP of one size×size image through the network (torch's FLOP counter on the eager module)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        loaded.net(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def build(network: str, seed: int = 0) -> LoadedModel:
    if not network.startswith(("johnson", "mobilenet", "resnet", "efficientnet")) or network == "starry_night":
        return load_model(network)  # a shipped model or a checkpoint
    torch.manual_seed(seed)
    net = create_model(network).eval().requires_grad_(False)
    return LoadedModel(net=net, model_name=network, model_kwargs={}, meta={"source": f"random {network}"})


def table(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    head = f"| device | network | runtime | max abs diff | {' | '.join(f'{s} px ms' for s in sizes)} |"
    lines = [head, "|" + " --- |" * (4 + len(sizes))]
    order = {name: i for i, name in enumerate(RUNTIMES)}
    keys = sorted({(r["device"], r["network"], r["runtime"]) for r in rows}, key=lambda k: (k[0], k[1], order[k[2]]))
    for device, network, runtime in keys:
        cells = {r["size"]: r for r in rows if (r["device"], r["network"], r["runtime"]) == (device, network, runtime)}
        diff = next(iter(cells.values())).get("max_abs_diff")
        values = []
        for s in sizes:
            cell = cells.get(s)
            if cell is None:
                values.append("—")
            elif "error" in cell:
                values.append("failed")
            else:
                values.append(f"{cell['ms']:.0f}" + ("*" if cell["warmup_only"] else ""))
        diff_text = "—" if diff is None else f"{diff:.1e}"
        lines.append(f"| {device} | {network} | {runtime} | {diff_text} | {' | '.join(values)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell after the warm-up")
    parser.add_argument("--budget-s", type=float, default=30.0, help="stop repeating a cell after this long")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    rows: list[dict[str, Any]] = []
    capture: dict[str, float] = {}
    for device_name in devices:
        device = torch.device(device_name)
        # Build every runtime first, then time size by size: the small sizes are complete before the slow ones.
        runtimes: list[tuple[dict[str, Any], Runtime, float]] = []
        for network in args.networks:
            loaded = build(network)
            reference = runtime_from_model(loaded, "eager", "cpu")
            for runtime_name in args.runtimes:
                base = {"device": device_name, "network": network, "runtime": runtime_name}
                try:
                    start = time.perf_counter()
                    runtime = runtime_from_model(loaded, runtime_name, device)
                    capture[f"{device_name}/{network}/{runtime_name}"] = round(time.perf_counter() - start, 1)
                    diff = max(check_parity(reference, runtime, PARITY_SIZES).values())
                    gate = check_gate(reference, runtime, training_photos(3, size=256, offset=CALIBRATION_COUNT))
                    base["gate"] = gate.as_dict()
                except NSTError as exc:
                    rows += [{**base, "size": s, "error": str(exc)} for s in args.sizes]
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                runtimes.append((base, runtime, diff))
                print(json.dumps({**base, "max_abs_diff": diff, "capture_s": capture[f"{device_name}/{network}/"
                                  f"{runtime_name}"]}), flush=True)  # fmt: skip
        for size in args.sizes:
            for base, runtime, diff in runtimes:
                try:
                    cell = time_cell(runtime, size, args.repeats, args.budget_s)
                except (RuntimeError, MemoryError) as exc:  # out of memory at the largest sizes
                    cell = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                rows.append({**base, "size": size, "max_abs_diff": diff, **cell})
                print(json.dumps(rows[-1]), flush=True)
        del runtimes
        if device.type == "cuda":
            torch.cuda.empty_cache()

    fastest: dict[str, dict[str, str]] = {}
    for r in rows:
        if "error" in r:
            continue
        key, best = f"{r['device']}/{r['network']}", fastest.setdefault(f"{r['device']}/{r['network']}", {})
        size = str(r["size"])
        current = next((c for c in rows if c.get("runtime") == best.get(size) and c["size"] == r["size"]
                        and f"{c['device']}/{c['network']}" == key), None)  # fmt: skip
        if current is None or r["ms"] < current["ms"]:
            best[size] = r["runtime"]
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    gflop = {size: network_gflop(build(args.networks[0]), size) for size in args.sizes}
    for r in rows:
        if "ms" in r and r["network"] == args.networks[0]:
            r["gflop"] = round(gflop[r["size"]], 1)
            r["gflops"] = round(gflop[r["size"]] / (r["ms"] / 1000), 1)
            peak = peaks["bf16" if r["runtime"].endswith("bf16") else "fp32"]
            r["of_matmul_rate"] = round(r["gflops"] / peak, 3)
            print(json.dumps(r), flush=True)
    print(table(rows, args.sizes), flush=True)
    print("(* one call only: its warm-up took longer than --budget-s)")
    summary = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": reported_flags(),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "capture_s": capture,
        "fastest": fastest,
        "results": rows,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
