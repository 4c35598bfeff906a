#!/usr/bin/env python
"""Recipe ablation: train named variants (Hydra overrides on one base experiment) for equal steps or equal time,
then score every variant on one common yardstick and write JSON lines plus a markdown table.

Each variant is one ``python train.py BASE... VARIANT...`` process (``--parallel N`` runs N at once: several
short runs share one GPU). Afterwards each run's checkpoint is exported to fp16 and evaluated on a few photos
at ``--eval-size``: the *baseline's* objective (its loss weights and style Gram targets, so variants that change
``tv_weight`` or ``style.size`` are judged on the same objective), its content and style terms, SSIM to the
photo and the checkerboard ratio (network ÷ photo, :mod:`nst_lightning.evaluation.metrics`); optionally against
per-image L-BFGS@k from the photo on the same objective (``--lbfgs 50``). The training curve's own
``val/objective`` (each variant's own loss) is read from TensorBoard.

    # the CPU ablation of docs/results/ablation_cpu.md (about 40 minutes on 2 busy cores)
    nice python benchmarks/ablation.py --preset cpu --steps 60 --checkpoint last --out /tmp/ablation_cpu \\
        --report docs/results/ablation_cpu --photo-short-side 80 --eval-size 128 --eval-images 4
    # a custom pair
    python benchmarks/ablation.py --base experiment=quick --variant "baseline:" \\
        --variant "bilinear: model.upsample=bilinear" --steps 100 --out /tmp/abl
    # dry run on CPU in seconds (what scripts/gpu_release.sh's dry run uses)
    python benchmarks/ablation.py --preset gpu --tiny --steps 3 --out /tmp/abl_dry --eval-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_lightning.evaluation.evaluate import eval_images, loss_from_meta, run_lbfgs  # noqa: E402
from nst_lightning.evaluation.metrics import (  # noqa: E402
    checkerboard_ratio,
    oriented_texture,
    smooth_test_images,
    ssim,
)
from nst_lightning.image import list_images, load_image  # noqa: E402
from nst_lightning.inference import export_model, load_model, resolve_device  # noqa: E402
from nst_lightning.losses.styles import resolve_style_image, style_grams  # noqa: E402

# name -> (overrides, what it tests). The first entry is the baseline every other row is compared with.
PRESETS: dict[str, dict[str, tuple[str, str]]] = {
    # A quarter-scale model of the GPU recipe for 2 busy CPU cores (run with --photo-short-side 80): 64-px crops
    # of photos downscaled to an 80-px short side, style Grams at 128 px (the GPU recipe: 256-px crops of 320-px
    # photos, Grams at 512), the narrow Johnson of experiment=quick (16 wide, 3 blocks), batch 4.
    "cpu": {
        "baseline": ("", "experiment=quick (johnson 16 wide, 3 blocks, nearest resize-conv, reflect)"),
        "seed1": ("seed=1", "the baseline with another seed: the noise floor"),
        "bilinear": ("model.upsample=bilinear", "bilinear resize-conv"),
        "pixel_shuffle": ("model.upsample=pixel_shuffle", "sub-pixel conv, ICNR init"),
        "tv": ("style.tv_weight=1e-5", "total-variation weight 1e-5"),
        "no_upscale": ("data.max_upscale=1.0", "square crops never magnified"),
        "cosine": (
            "optim.lr_schedule=cosine_time ++trainer.max_time=00:10:00:00",
            "cosine_time; here the step budget ends first, so it decays over the steps",
        ),
        "ema": ("ema.decay=0.98", "EMA of the weights, decay 0.98 (warm-up (1+n)/(10+n))"),
    },
    # One GPU, equal time: 256-px crops of 320-px photos, batch 16, bf16, channels-last (experiment=starry_night).
    "gpu": {
        "baseline": ("", "experiment=starry_night (the shipped recipe)"),
        "seed1": ("seed=1", "the baseline with another seed: the noise floor"),
        "bilinear": ("model.upsample=bilinear", "bilinear resize-conv"),
        "pixel_shuffle": ("model.upsample=pixel_shuffle", "sub-pixel conv, ICNR init"),
        "tv": ("style.tv_weight=1e-5", "total-variation weight 1e-5"),
        "no_upscale": ("data.max_upscale=1.0", "square crops never magnified"),
        "cosine_time": ("optim.lr_schedule=cosine_time", "LR cosine over the time budget"),
        "ema": ("ema.decay=0.999", "EMA of the weights, decay 0.999"),
        "style256": ("style.size=256", "style Grams at 256 px (crop size) instead of 512"),
        "wide48": ("model.base_channels=48", "johnson 1.5× wider"),
        "res7": ("model.num_residual=7", "7 residual blocks"),
        "batch32": ("data.batch_size=32", "batch 32"),
        "replicate": ("model.padding=replicate", "replicate padding"),
    },
}
BASES = {
    "cpu": [
        "experiment=quick",
        "data.image_size=64",
        "style.size=128",
        "data.val_count=8",
        "data.val_size=64",
        "data.num_workers=0",
        "trainer.val_check_interval=30",
        "callbacks.grid.every_n_steps=0",
    ],
    "gpu": ["experiment=starry_night"],
}
TINY = ["experiment=tiny", "data.num_workers=0"]  # dry runs: seconds per variant


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name.strip():
        raise SystemExit(f"--variant needs NAME:OVERRIDES, got {text!r}")
    return name.strip(), shlex.split(overrides)


def prepare_photos(src: Path, dst: Path, short_side: int) -> Path:
    """Copies of the training photos with their shorter side resized to ``short_side`` (once)."""
    from PIL import Image

    done = dst / ".done"
    if done.exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for path in list_images(src, recursive=True):
        img = Image.open(path).convert("RGB")
        scale = short_side / min(img.size)
        img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS).save(
            dst / f"{path.stem}.png"
        )
    done.write_text("ok")
    return dst


def train_variants(args: argparse.Namespace, variants: dict[str, list[str]], base: list[str]) -> dict[str, Any]:
    """Launch the training processes, ``args.parallel`` at a time; returns {name: {returncode, seconds}}."""
    budget = [f"trainer.max_steps={args.steps}"] if args.steps else []
    if args.time:
        budget += [f"++trainer.max_time={args.time}"] + ([] if args.steps else ["trainer.max_steps=-1"])
    pending, running, done = list(variants.items()), {}, {}
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        _schedule(args, pending, running, done, base, budget, env)
    finally:
        for proc, log, _ in running.values():
            proc.terminate()
            proc.wait()
            log.close()
    return done


def _schedule(args, pending, running, done, base, budget, env) -> None:  # noqa: ANN001 (internal loop)
    while pending or running:
        while pending and len(running) < args.parallel:
            name, overrides = pending.pop(0)
            run_dir = args.out / "runs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(REPO / "train.py"), *base, *budget, *overrides, f"hydra.run.dir={run_dir}",
                   "++trainer.enable_progress_bar=false", *args.extra]  # fmt: skip
            (run_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
            log = open(run_dir / "train.log", "w")  # noqa: SIM115 (closed when the process ends)
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
            print(f"started {name}: {' '.join(overrides) or '(base)'}", flush=True)
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                done[name] = {"returncode": proc.returncode, "train_seconds": round(time.time() - t0, 1)}
                print(f"finished {name} (rc {proc.returncode}, {done[name]['train_seconds']} s)", flush=True)
                del running[name]
        time.sleep(1)


def previous_training(report: Path) -> dict[str, Any]:
    """{name: {returncode, train_seconds}} from an earlier REPORT.jsonl (re-scoring with --skip-train)."""
    path = report.with_suffix(".jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()[1:]] if path.exists() else []
    return {r["name"]: {k: r[k] for k in ("returncode", "train_seconds") if k in r} for r in rows}


def curve(run_dir: Path) -> dict[str, Any]:
    """val/objective values of a run (its own loss) and its last training step, from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[tuple[int, float]] = []
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "val/objective" in acc.Tags().get("scalars", []):
            values += [(e.step, e.value) for e in acc.Scalars("val/objective")]
    values.sort()
    return {
        "val_objective_final": values[-1][1] if values else None,
        "val_objective_best": min(v for _, v in values) if values else None,
        "val_curve": [[s, round(v, 4)] for s, v in values],
    }


def checkpoint_of(run_dir: Path, which: str) -> Path | None:
    ckpts = run_dir / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    last = ckpts / "last.ckpt"
    if which == "best" and best:
        return best[-1]
    return last if last.exists() else (best[-1] if best else None)


class Yardstick:
    """The baseline's objective (loss weights + style Grams) on fixed photos, with L-BFGS@k references."""

    def __init__(self, ckpt: Path, images: list[Path], size: int, lbfgs: list[int], device: torch.device) -> None:
        meta = load_model(ckpt).meta
        self.loss = loss_from_meta(meta)
        style = resolve_style_image(meta["style_image"])
        self.loss.set_style_grams(
            style_grams(style, meta.get("style_size"), self.loss, os.environ.get("NST_CACHE_DIR"))
        )
        self.loss = self.loss.to(device).eval().requires_grad_(False)
        self.device = device
        self.contents = [load_image(p, size).to(device) for p in images]
        self.lbfgs: dict[int, list[float]] = {}  # k -> objective per photo
        self.lbfgs_checkerboard: dict[int, list[float]] = {}  # k -> checkerboard ratio per photo
        for content in self.contents if lbfgs else []:
            snapshots, _ = run_lbfgs(self.loss, content, lbfgs, "fp32")
            for k, (img, _, _) in snapshots.items():
                self.lbfgs.setdefault(k, []).append(float(self.loss(img, content)["objective"]))
                self.lbfgs_checkerboard.setdefault(k, []).append(float(checkerboard_ratio(img, content)[0]))

    @torch.no_grad()
    def score(self, model_file: Path) -> dict[str, float]:
        net = load_model(model_file, self.device).net
        rows = []
        for content in self.contents:
            out = net(content).float().clamp(0, 1)
            terms = self.loss(out, content)
            rows.append({
                "objective": float(terms["objective"]), "content": float(terms["content"]),
                "style": float(terms["style"]), "ssim": float(ssim(out, content)[0]),
                "checkerboard_ratio": float(checkerboard_ratio(out, content)[0]),
            })  # fmt: skip
        mean = {f"eval_{k}": statistics.fmean(r[k] for r in rows) for k in rows[0]}
        # the stripe test's figure (tests/test_shipped_stripes.py): oriented texture on smooth gradients at 128 px
        smooth = smooth_test_images(128).values()
        mean["stripe_rms"] = max(
            float(oriented_texture(net(x.to(self.device)).float())["stripe_rms"][0]) for x in smooth
        )
        for k, refs in self.lbfgs.items():
            mean[f"eval_objective_over_lbfgs{k}"] = statistics.fmean(
                r["objective"] / ref for r, ref in zip(rows, refs, strict=True)
            )
            mean[f"eval_checkerboard_over_lbfgs{k}"] = mean["eval_checkerboard_ratio"] / statistics.fmean(
                self.lbfgs_checkerboard[k]
            )
        return mean


def noise_floor(rows: list[dict[str, Any]], base: dict[str, Any], floor: float) -> tuple[float, float]:
    """(relative objective noise, checkerboard-ratio noise factor) from the rows that change only the seed
    (``seed=N``): the baseline's own spread. Without such rows: (``floor``, 1.5)."""
    seeds = [r for r in rows if r["overrides"] and all(o.startswith("seed=") for o in r["overrides"])]
    seeds = [r for r in seeds if r.get("eval_objective") is not None]
    obj = max([floor, *(abs(r["eval_objective"] / base["eval_objective"] - 1) for r in seeds)])
    cb = max([1.5, *(max(r["eval_checkerboard_ratio"], base["eval_checkerboard_ratio"])
                     / min(r["eval_checkerboard_ratio"], base["eval_checkerboard_ratio"]) for r in seeds)])  # fmt: skip
    return obj, cb


def verdict(row: dict[str, Any], base: dict[str, Any], noise: float, cb_noise: float) -> str:
    """Better / worse / within noise on the common eval objective and on the checkerboard ratio, against the
    noise floor (relative objective change ``noise``; checkerboard factor ``cb_noise``)."""
    if row["name"] == base["name"]:
        return "reference"
    if row.get("eval_objective") is None:
        return "failed"
    if row["overrides"] and all(o.startswith("seed=") for o in row["overrides"]):
        return "noise floor (seed only)"
    change = row["eval_objective"] / base["eval_objective"] - 1
    cb = row["eval_checkerboard_ratio"] / base["eval_checkerboard_ratio"]
    words = "better" if change < -noise else "worse" if change > noise else "within noise"
    cb_words = "more" if cb > cb_noise else "less" if cb < 1 / cb_noise else "within noise"
    return f"objective {words} ({change:+.1%}); checkerboard {cb_words} (×{cb:.2f})"


def write_table(rows: list[dict[str, Any]], path: Path, header: str, lbfgs: list[int]) -> None:
    cols = ["variant", "overrides", "steps", "train s", "val/objective (own loss)", "eval objective",
            *[f"÷ L-BFGS@{k}" for k in lbfgs], "content", "style", "SSIM", "checkerboard ratio",
            *[f"checkerboard ÷ L-BFGS@{k}" for k in lbfgs[-1:]], "stripe_rms (≤ 0.015)", "verdict"]  # fmt: skip
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def f(v: Any, fmt: str = ".4g") -> str:
        return "–" if v is None else format(v, fmt) if isinstance(v, float) else str(v)

    for r in rows:
        cells = [r["name"], f"`{' '.join(r['overrides'])}`" if r["overrides"] else "(base)", f(r.get("global_step")),
                 f(r.get("train_seconds"), ".0f"), f(r.get("val_objective_final")), f(r.get("eval_objective")),
                 *[f(r.get(f"eval_objective_over_lbfgs{k}"), ".3f") for k in lbfgs], f(r.get("eval_content")),
                 f(r.get("eval_style")), f(r.get("eval_ssim"), ".3f"), f(r.get("eval_checkerboard_ratio"), ".3g"),
                 *[f(r.get(f"eval_checkerboard_over_lbfgs{k}"), ".3g") for k in lbfgs[-1:]],
                 f(r.get("stripe_rms"), ".3f"), r.get("verdict", "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named set of variants and its base")
    p.add_argument("--only", nargs="*", help="run only these variants of the preset (the first is the baseline)")
    p.add_argument("--variant", action="append", default=[], help="'NAME: override override ...' (repeatable)")
    p.add_argument("--base", nargs="*", help="base overrides (default: the preset's)")
    p.add_argument("--extra", nargs="*", default=[], help="overrides added to every run (after the variant's)")
    p.add_argument("--tiny", action="store_true", help="dry run: experiment=tiny on top of the base")
    p.add_argument("--steps", type=int, default=0, help="equal steps: trainer.max_steps for every run")
    p.add_argument("--time", default=None, help="equal time: trainer.max_time (DD:HH:MM:SS) for every run")
    p.add_argument("--parallel", type=int, default=1, help="training processes at once")
    p.add_argument("--out", type=Path, required=True, help="work folder (runs/, models/)")
    p.add_argument("--report", type=Path, default=None, help="writes REPORT.jsonl and REPORT.md (default OUT/ablation)")
    p.add_argument("--photo-short-side", type=int, default=0, help="train on copies of the photos this small")
    p.add_argument("--train-dir", type=Path, default=None, help="training photos (default $NST_DATA_DIR/train)")
    p.add_argument("--eval-dir", type=Path, default=None, help="evaluation photos (default $NST_DATA_DIR/eval/content)")
    p.add_argument("--eval-size", type=int, default=512)
    p.add_argument("--eval-images", type=int, default=None)
    p.add_argument("--lbfgs", type=int, nargs="*", default=[], help="L-BFGS@k references (e.g. 50)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--noise", type=float, default=0.03, help="smallest relative objective change counted as real")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-train", action="store_true", help="only evaluate existing runs under OUT/runs")
    p.add_argument("--note", default="", help="a line under the table's title (machine, budget, caveats)")
    args = p.parse_args()

    variants: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    if args.preset:
        for name, (ovr, note) in PRESETS[args.preset].items():
            if not args.only or name in args.only:
                variants[name], notes[name] = shlex.split(ovr), note
    for text in args.variant:
        name, ovr = parse_variant(text)
        variants[name], notes[name] = ovr, ""
    if not variants:
        raise SystemExit("no variants: use --preset and/or --variant")
    base = list(args.base if args.base is not None else BASES.get(args.preset or "", []))
    if args.tiny:
        base += TINY
    data_dir = Path(os.environ.get("NST_DATA_DIR", REPO / "data"))
    if args.photo_short_side:
        photos = prepare_photos(args.train_dir or data_dir / "train", args.out / "photos", args.photo_short_side)
        base.append(f"data.root={photos}")
    elif args.train_dir:
        base.append(f"data.root={args.train_dir}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.report or args.out / "ablation"
    report.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    trained = previous_training(report) if args.skip_train else train_variants(args, variants, base)
    print(f"training done in {time.time() - t0:.0f} s", flush=True)

    device = resolve_device(args.device)
    images = eval_images(args.eval_dir or data_dir / "eval" / "content", args.eval_images)
    rows: list[dict[str, Any]] = []
    yardstick: Yardstick | None = None
    for name, overrides in variants.items():
        run_dir = args.out / "runs" / name
        row: dict[str, Any] = {
            "name": name,
            "overrides": overrides,
            "note": notes.get(name, ""),
            **trained.get(name, {}),
        }
        row.update(curve(run_dir))
        ckpt = checkpoint_of(run_dir, args.checkpoint)
        if ckpt is not None:
            last = checkpoint_of(run_dir, "last")
            row["global_step"] = torch.load(last, map_location="cpu", weights_only=True).get("global_step")
            row["checkpoint"] = ckpt.name
            model_file = export_model(ckpt, args.out / "models" / f"{name}.pt", half=True)
            row["model_bytes"] = model_file.stat().st_size
            if yardstick is None:  # the first variant with a checkpoint defines the common objective
                yardstick = Yardstick(ckpt, images, args.eval_size, args.lbfgs, device)
                row["lbfgs_objective"] = {str(k): statistics.fmean(v) for k, v in yardstick.lbfgs.items()}
                row["lbfgs_checkerboard_ratio"] = {
                    str(k): statistics.fmean(v) for k, v in yardstick.lbfgs_checkerboard.items()
                }
            row.update(yardstick.score(model_file))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "val_curve"}), flush=True)
    scored = [r for r in rows if r.get("eval_objective") is not None]
    noise, cb_noise = noise_floor(rows, scored[0], args.noise) if scored else (args.noise, 1.5)
    for r in rows:
        r["verdict"] = verdict(r, scored[0], noise, cb_noise) if scored else "failed"
    meta = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "base": base, "steps": args.steps, "time": args.time, "parallel": args.parallel,
            "eval_size": args.eval_size, "eval_images": [p.name for p in images], "lbfgs": args.lbfgs,
            "photo_short_side": args.photo_short_side, "checkpoint": args.checkpoint,
            "wall_seconds": round(time.time() - t0), "noise_objective": noise,
            "noise_checkerboard": cb_noise}  # fmt: skip
    with open(report.with_suffix(".jsonl"), "w") as fh:
        fh.write(json.dumps({"meta": meta}) + "\n")
        for r in rows:
            fh.write(json.dumps({**r, "meta_ref": "line 1"}) + "\n")
    budget = f"{args.steps} steps" if args.steps else f"max_time {args.time}"
    header = (f"Ablation ({budget} each, {args.parallel} at once, base `{' '.join(base)}`; evaluated on "
              f"{len(images)} photos at {args.eval_size} px on the baseline's objective; {meta['device']}"
              f"{f'; photos resized to a {args.photo_short_side}-px short side' if args.photo_short_side else ''}). "
              f"Noise floor: objective ±{noise:.1%}, checkerboard ratio ×{cb_noise:.2f} (from seed-only rows, "
              f"else the defaults). "
              f"{args.note}")  # fmt: skip
    write_table(rows, report.with_suffix(".md"), header, sorted(args.lbfgs))
    print(f"wrote {report.with_suffix('.jsonl')} and {report.with_suffix('.md')} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
