#!/usr/bin/env python
"""Training throughput of the transformation networks against the VGG-19 perceptual loss.

Measures one optimisation step (network forward, loss, backward, Adam step) per configuration and prints one
JSON object per line; the last line is the summary for the first configuration asked for, with the keys
``images_per_s``, ``baseline_images_per_s`` and ``speedup``.

The *baseline* is the plain recipe of pytorch/examples' fast_neural_style: the same network and loss in fp32,
NCHW, not compiled, with one full VGG pass per input (the content batch is run through the whole loss network
separately). Ours: the content batch stops at the content layer without autograd, plus the requested
precision, memory format and compilation.

``--precision auto`` measures what ``trainer.precision=auto`` (and ``model.channels_last=auto``,
``model.allocator=auto``) picks on this machine (:func:`nst_lightning.training.precision.resolve_precision`)
against our own fp32 NCHW step with the system allocator (the old default), and adds ``auto_precision``,
``auto_channels_last``, ``auto_allocator``, ``auto_reason``, ``fp32_images_per_s`` and ``speedup_vs_fp32`` to its
line. Every line has ``sys_s_per_step`` and ``page_faults_per_step`` (the kernel time the allocator saves).

    python benchmarks/train_throughput.py --models johnson --sizes 256 --batch 4 --precision 32
    python benchmarks/train_throughput.py --models johnson mobilenetv3 resnet50 --sizes 256 512 \\
        --precision bf16-mixed --compile --device cuda
    python benchmarks/train_throughput.py --data real   # time the real data loader against in-memory data
    python benchmarks/train_throughput.py --precision auto --no-baseline --sizes 128 --steps 3   # auto vs fp32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from nst_lightning.losses import PerceptualLoss
from nst_lightning.losses import functional as LF
from nst_lightning.models import create_model
from nst_lightning.training.allocator import use_allocator
from nst_lightning.training.precision import AUTO, resolve_precision

DTYPES = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """Measured dense matmul rate on this device (GFLOP/s): the practical peak to compare against."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def baseline_loss(loss: PerceptualLoss, generated: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """pytorch/examples style: one full VGG pass per input, fp32, same layers and weights."""
    fy, fx = loss.vgg(generated), loss.vgg(content)
    c = sum(LF.content_loss(fy[n], fx[n]) for n in loss.content_layers)
    grams = loss.target_grams
    s = sum(
        w * loss._balance[n] * LF.style_loss(LF.gram_matrix(fy[n]), grams[n])
        for n, w in zip(loss.style_layers, loss.style_layer_weights, strict=True)
    )
    return loss.content_weight * c + loss.style_weight * s


def make_step(
    model: str, size: int, batch: int, device: torch.device, precision: str, channels_last: bool,
    compile_: bool, checkpointing: bool, baseline: bool, compile_mode: str = "default",
) -> tuple[Callable[[torch.Tensor], None], torch.nn.Module, PerceptualLoss]:  # fmt: skip
    torch.manual_seed(0)
    kwargs = {"checkpointing": checkpointing} if checkpointing else {}
    net = create_model(model, **kwargs).to(device)
    loss = PerceptualLoss().to(device)
    loss.set_style_images([torch.rand(1, 3, 256, 256, device=device)])
    if channels_last:
        net.to(memory_format=torch.channels_last)
        loss.vgg.to(memory_format=torch.channels_last)
    if compile_:
        net.compile(mode=compile_mode)
        loss.vgg.compile(mode=compile_mode)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step(x: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = net(x)
            objective = baseline_loss(loss, y, x) if baseline else loss(y, x)["objective"]
        scaler.scale(objective).backward()
        scaler.step(opt)
        scaler.update()

    return step, net, loss


def flops_per_image(step: Callable[[torch.Tensor], None], x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        step(x)
    return counter.get_total_flops() / x.shape[0]


class _DtypeTally(TorchDispatchMode):
    """Counts, per aten op, the dtype of its first floating-point output (what autocast really ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor) and first.is_floating_point():
            name = str(func.overloadpacket).split(".")[-1]
            per = self.counts.setdefault(name, {})
            key = str(first.dtype).replace("torch.", "")
            per[key] = per.get(key, 0) + 1
        return out


# Ops that carry the arithmetic; the report lists the dtype they ran in (the rest are copies and views).
_HEAVY_OPS = ("convolution", "convolution_backward", "mm", "bmm", "addmm", "matmul", "_native_batch_norm_legit",
              "native_batch_norm", "native_group_norm", "mse_loss", "sum", "mean", "upsample_nearest2d",
              "max_pool2d_with_indices", "sigmoid", "relu", "add", "mul", "pow", "sqrt", "var_mean")  # fmt: skip


def precision_report(step: Callable[[torch.Tensor], None], x: torch.Tensor) -> dict[str, dict[str, int]]:
    """``{op: {dtype: calls}}`` for one training step: which ops ran in bf16/fp16 and which in fp32."""
    with _DtypeTally() as tally:
        step(x)
    return {op: tally.counts[op] for op in sorted(tally.counts) if op in _HEAVY_OPS}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    args: argparse.Namespace, model: str, size: int, precision: str, baseline: bool, peak: dict[str, float]
) -> dict:
    device = torch.device(args.device)
    auto = resolve_precision(AUTO, device.type, AUTO) if precision == AUTO else None
    opts = dict(
        channels_last=(args.channels_last or (auto is not None and auto.channels_last)) and not baseline,
        compile_=args.compile and not baseline,
        checkpointing=args.checkpointing and not baseline,
    )
    run_precision = "32" if baseline else (auto.precision if auto else precision)
    if auto is not None and not baseline:
        # Process-wide from here on: later measurements in this process (another size or model) run with it too,
        # so their baselines are faster than a fresh process's and their speedups understated.
        use_allocator(auto.allocator)
    step, net, loss = make_step(model, size, args.batch, device, run_precision, baseline=baseline,
                                compile_mode=args.compile_mode, **opts)  # fmt: skip
    x = torch.rand(args.batch, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step(x)
    sync(device)
    first_step_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step(x)
    times = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    batches = real_batches(args, size) if args.data == "real" else None
    if batches is not None:
        next(batches)  # start the loader's workers before timing
    for _ in range(args.steps):
        sync(device)
        t = time.perf_counter()
        if batches is not None:
            x = next(batches).to(device, non_blocking=True)
        step(x)
        sync(device)
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1000
    after = resource.getrusage(resource.RUSAGE_SELF)
    flops = flops_per_image(step, x) if not opts["compile_"] else None
    dtypes = precision_report(step, x) if args.dtype_report and not opts["compile_"] else None
    result = {
        "model": model,
        "size": size,
        "batch": args.batch,
        "precision": "32" if baseline else precision,
        "channels_last": opts["channels_last"],
        "compile": opts["compile_"],
        "compile_mode": args.compile_mode if opts["compile_"] else None,
        "checkpointing": opts["checkpointing"],
        "baseline": baseline,
        "data": args.data,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "ms_per_step": round(ms, 1),
        "images_per_s": round(args.batch / (ms / 1000), 3),
        "first_step_s": round(first_step_s, 2),
        "sys_s_per_step": round((after.ru_stime - usage.ru_stime) / len(times), 3),
        "page_faults_per_step": round((after.ru_minflt - usage.ru_minflt) / len(times)),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None,
        "process_max_rss_mb": round(rss_mb(), 1),
        "matmul_peak_gflops": round(peak["fp32"], 1),
        "matmul_peak_bf16_gflops": round(peak["bf16"], 1),
    }
    if auto is not None:
        result.update(auto_precision=auto.precision, auto_channels_last=auto.channels_last, auto_reason=auto.reason,
                      auto_allocator=auto.allocator)  # fmt: skip
    if flops is not None:
        result["gflop_per_image"] = round(flops / 1e9, 2)
        result["achieved_gflops"] = round(flops * args.batch / (ms / 1000) / 1e9, 1)
    if dtypes is not None:
        result["op_dtypes"] = dtypes
    return result


def real_batches(args: argparse.Namespace, size: int):
    from nst_lightning.data.datamodule import FolderDataModule

    root = os.path.join(os.environ.get("NST_DATA_DIR", "data"), "train")
    dm = FolderDataModule(root, image_size=size, batch_size=args.batch, num_workers=args.workers, val_count=0,
                          pin_memory=args.device.startswith("cuda"))  # fmt: skip
    dm.setup("fit")
    while True:
        yield from dm.train_dataloader()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["johnson"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precision", nargs="+", default=["32"], choices=sorted(DTYPES) + [AUTO])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default", help="default | reduce-overhead | max-autotune | ...")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="measured steps (median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--dtype-report",
        action="store_true",
        help="count the dtype each arithmetic op ran in (one extra step, not compiled)",
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    # bf16 matmuls are ~30x slower than fp32 on CPUs without AVX512-BF16/AMX: measure them smaller there.
    peak = {
        "fp32": matmul_peak_gflops(device),
        "bf16": matmul_peak_gflops(device, torch.bfloat16, n=2048 if device.type == "cuda" else 256),
    }
    results = []
    for model in args.models:
        for size in args.sizes:
            base = None if args.no_baseline else measure(args, model, size, "32", True, peak)
            if base:
                print(json.dumps(base), flush=True)
            fp32 = None
            for precision in args.precision:
                if precision == AUTO and fp32 is None:  # auto is compared with our fp32 NCHW step
                    fp32 = measure(argparse.Namespace(**{**vars(args), "channels_last": False}), model, size, "32",
                                   False, peak)  # fmt: skip
                    print(json.dumps(fp32), flush=True)
                ours = measure(args, model, size, precision, False, peak)
                if base:
                    ours["baseline_images_per_s"] = base["images_per_s"]
                    ours["speedup"] = round(ours["images_per_s"] / base["images_per_s"], 3)
                if precision == AUTO:
                    ours["fp32_images_per_s"] = fp32["images_per_s"]
                    ours["speedup_vs_fp32"] = round(ours["images_per_s"] / fp32["images_per_s"], 3)
                print(json.dumps(ours), flush=True)
                results.append(ours)
    print(json.dumps(results[0]))


if __name__ == "__main__":
    main()
