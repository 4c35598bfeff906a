"""How big a release run is (the GPU window or the CPU rehearsal) and the gates a model must pass to ship."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRETRAINED = REPO / "nst_lightning" / "pretrained"
MANIFEST = PRETRAINED / "release.json"
STYLES = ("starry_night", "the_scream", "the_wave", "candy", "mosaic")
MiB = 1 << 20
STARTUP_S = 30  # a training process's start-up before its clock runs (imports, data, VGG, Grams)
CHECK_RESERVE_S = 90  # kept for the check phase when the training waves are sized

# The gates a model must pass to ship (figures against L-BFGS@50 on the model's own objective, eval photos).
GATES = {
    "ratio_256": 1.40,  # every style: objective ÷ L-BFGS@50's at 256 px
    "student_over_teacher": 1.10,  # a student's objective within 10 % of its teacher's
    "fp16_parity": 2e-2,  # max |fp16 export − fp32 checkpoint| on a photo (outputs in [0, 1])
    "bytes": 4_000_000,  # one style's fp16 file
    "bytes_large": 16_000_000,  # the five-style network, the decoder
}
# Targets reported (not gates): the shipped starry_night's recipe goal and the stripe test's threshold.
TARGETS = {"starry_night_ratio": 1.30, "stripe_rms": 0.015}


@dataclass
class Profile:
    """How big everything is: the real GPU run or the CPU dry run."""

    device: str
    parallel: int  # training processes at once
    pick_variants: list[str]
    pick_seconds: int  # wall clock per variant (all at once)
    style_seconds: int
    finetune_seconds: int
    student_seconds: int
    multistyle_seconds: int
    decoder_seconds: int
    eval_sizes: tuple[int, int]
    eval_images: int
    lbfgs: int
    train_extra: list[str]  # overrides on every training run
    step_limit: list[str] = field(default_factory=list)  # dry run: steps instead of time
    throughput: list[list[str]] = field(default_factory=list)  # benchmarks/train_throughput.py argument sets
    concurrent: tuple[int, ...] = (2, 4)  # throughput: processes at once for the aggregate
    transfer: list[str] = field(default_factory=list)  # benchmarks/transfer.py arguments
    transfer_seconds: int = 0
    multistyle: list[str] = field(default_factory=list)  # benchmarks/multistyle.py arguments (after shipping)
    multistyle_bench_seconds: int = 0
    styles: tuple[str, ...] = STYLES  # the single-style networks trained (the five-style network takes all five)
    ratio_gate: float = GATES["ratio_256"]  # the dry run's 2-step networks cannot pass it; its packing is still tested


GPU = Profile(
    device="cuda",
    parallel=7,
    pick_variants=["baseline", "seed1", "bilinear", "pixel_shuffle", "cosine_time", "ema", "style256"],
    pick_seconds=120,
    style_seconds=150,
    finetune_seconds=75,
    student_seconds=75,
    multistyle_seconds=180,
    decoder_seconds=180,
    eval_sizes=(256, 512),
    eval_images=4,
    lbfgs=50,
    train_extra=["data.num_workers=2", "callbacks.grid.every_n_steps=0"],
    throughput=[
        ["--batch", "32"],
        ["--batch", "32", "--compile", "--compile-mode", "default", "--no-baseline"],
        ["--batch", "32", "--compile", "--compile-mode", "reduce-overhead", "--no-baseline"],  # CUDA graphs
        ["--batch", "64", "--compile", "--compile-mode", "default", "--no-baseline"],
        ["--batch", "128", "--no-baseline"],
    ],
    transfer=["--profile", "gpu", "--steps", "400"],
    transfer_seconds=150,
    # 5 single-style runs of 300 steps and the five-style one of 1500, all from the same starry_night: ~48k images
    multistyle=shlex.split("--device gpu --crop 256 --batch 16 --steps 300 --val-every 100 --val-count 8 --workers 4"),
    multistyle_bench_seconds=240,
)

DRY = Profile(
    device="cpu",
    parallel=2,
    pick_variants=["baseline", "seed1", "pixel_shuffle"],
    pick_seconds=0,
    style_seconds=0,
    finetune_seconds=0,
    student_seconds=0,
    multistyle_seconds=0,
    decoder_seconds=6,
    eval_sizes=(32, 48),
    eval_images=1,
    lbfgs=3,
    train_extra=["data.num_workers=0", "callbacks.grid.every_n_steps=0"],
    step_limit=["trainer.max_steps=2", "trainer.val_check_interval=2"],
    throughput=[["--batch", "2"]],
    concurrent=(2,),
    transfer=["--profile", "cpu", "--steps", "2", "--val-every", "1", "--val-count", "2", "--only-distill"],
    transfer_seconds=120,
    multistyle=shlex.split(
        "--crop 32 --batch 2 --steps 1 --val-every 1 --val-count 1 --loss tiny --workers 0 --styles starry_night candy"
    ),
    multistyle_bench_seconds=120,
    styles=("starry_night", "the_scream"),  # one from scratch, one fine-tuned from it: every path, half the time
    ratio_gate=1000.0,
)

THROUGHPUT_ARGS = {  # fixed part of benchmarks/train_throughput.py's command line
    "cuda": [
        "--device",
        "cuda",
        "--models",
        "johnson",
        "--sizes",
        "256",
        "--precision",
        "bf16-mixed",
        "--channels-last",
        "--steps",
        "10",
        "--warmup",
        "3",
    ],
    "cpu": ["--device", "cpu", "--models", "johnson_tiny", "--sizes", "32", "--steps", "1", "--warmup", "1"],
}
