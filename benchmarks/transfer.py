#!/usr/bin/env python
"""Network transfer, measured: fine-tuning from another style's model, a frozen encoder, and a distilled student.

Prints progress lines and, last, one JSON object. All runs train the same StyleTransferModule with Lightning on
random crops of ``$NST_DATA_DIR/train`` and validate on its held-out photos (the objective of the teacher's
recorded loss: weights, layers and Gram size from the shipped model's meta).

(b) student vs teacher: the teacher is the shipped model (``--teacher``, the full johnson). A small johnson
    student (``conf/model/johnson_student.yaml``) trains on the same style with the distillation terms, started
    from the teacher's most important channels as ``experiment=distill`` does (``distilled``), and from random
    weights without them (``undistilled``), same steps, seed and data order. Keys ``student_objective_ratio``
    and ``undistilled_objective_ratio`` (final val objective ÷ the teacher's on the same photos) and
    ``student_speedup_1024`` (teacher ÷ student seconds per 1024-px image on this machine's CPU).
(a) new style (``--new-style``): from scratch (``scratch``), from a model trained on another style
    (``finetune``, weights only, fresh optimizer) and the same with its encoder frozen (``frozen``), equal
    steps. The source is the profile's ``finetune_from``: the shipped model at its own architecture (``cpu``:
    what a user does) or the distilled student of (b) at the student's (``gpu``). ``finetune_steps_ratio`` /
    ``frozen_steps_ratio``: steps the run needed to reach the scratch run's final val objective (linear between
    validations) ÷ the scratch run's steps; null when it never did.

    NST_DATA_DIR=../shared/data python benchmarks/transfer.py --profile cpu --plot-dir docs/results
    NST_DATA_DIR=gpu_data python benchmarks/transfer.py --profile gpu --plot-dir OUT
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from nst_lightning.cli.presets import preset_style, style_image_path
from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.inference import load_model, resolve_checkpoint
from nst_lightning.losses.config import LossConfig
from nst_lightning.training.callbacks import BatchNormReestimation
from nst_lightning.training.measured import fit_measured
from nst_lightning.training.module import StyleTransferModule

warnings.filterwarnings("ignore", message=r".*(module\(s\) in eval mode|does not have many workers|LeafSpec).*")

PROFILES: dict[str, dict[str, Any]] = {
    # 2 CPU cores, as a user fine-tunes there (experiment=finetune's CPU values): (a) starts from the shipped
    # model at its own architecture, on 192-px crops (large enough for its strokes, learnt at style size 512),
    # batch 2, 150 steps a run, 4 held-out photos at 192 px. (b) keeps its small students at 96 px.
    "cpu": dict(crop=192, batch=2, steps=150, val_every=10, val_count=4, val_size=192, workers=1,
                precision="32-true", accelerator="cpu", finetune_from="shipped", student_crop=96),
    # One GPU: the shipped model's own crop size, batch 16, bf16; (a) starts from the distilled student.
    "gpu": dict(crop=256, batch=16, steps=1500, val_every=100, val_count=16, val_size=256, workers=8,
                precision="bf16-mixed", accelerator="gpu", finetune_from="student", student_crop=256),
}  # fmt: skip
# The recipe's student (conf/model/johnson_student.yaml), without the runtime keys it inherits.
_STUDENT_YAML = Path(__file__).resolve().parent.parent / "conf" / "model" / "johnson_student.yaml"
STUDENT = {k: v for k, v in yaml.safe_load(_STUDENT_YAML.read_text()).items() if k not in ("defaults", "name")}


class Curve(L.Callback):
    """Records (global step, val/objective[, val/teacher_objective]) after each validation."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []
        self.teacher: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        self.points.append((trainer.global_step, round(float(m["val/objective"]), 4)))
        if "val/teacher_objective" in m:
            self.teacher.append(float(m["val/teacher_objective"]))


def steps_to_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """First step at which a curve reaches ``target`` (linear between validations), or None."""
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            return float(s1) if v0 == v1 else s0 + (v0 - target) / (v0 - v1) * (s1 - s0)
    return 0.0 if points and points[0][1] <= target else None


def train_run(
    name: str, style: Any, loss: dict, p: dict, out: Path, arch: tuple[str, dict] | None = None, **transfer: Any
) -> dict[str, Any]:
    """One run; returns its validation curve, seconds and last checkpoint (and appends them to progress.jsonl
    in ``--plot-dir``, so an interrupted benchmark still leaves its finished runs)."""
    L.seed_everything(0, workers=True)
    model_name, model_kwargs = arch or ("johnson", STUDENT)
    module = StyleTransferModule(
        model={"name": model_name, "kwargs": dict(model_kwargs)}, loss=loss["terms"], transfer=transfer,
        style={"name": style.name, "image": str(style_image_path(style)), "size": loss["style_size"]},
    )  # fmt: skip
    data = FolderDataModule(
        os.path.join(os.environ.get("NST_DATA_DIR", "data"), "train"), image_size=p["crop"], batch_size=p["batch"],
        num_workers=p["workers"], val_count=p["val_count"], val_size=p["val_size"], pin_memory=True,
    )  # fmt: skip
    curve = Curve()
    ckpt = out / f"{name}.ckpt"
    seconds = fit_measured(module, data, p["steps"], p["val_every"], [curve, BatchNormReestimation()],
                           p["accelerator"], p["precision"], ckpt)  # fmt: skip
    print(f"{name}: {seconds:.0f} s, val/objective {curve.points[0][1]} -> {curve.points[-1][1]}", flush=True)
    run = {"curve": curve.points, "seconds": round(seconds, 1), "ckpt": ckpt, "teacher": curve.teacher}
    if p.get("progress"):
        with open(p["progress"], "a") as f:
            f.write(json.dumps({"run": name, **run}, default=str) + "\n")
    return run


def seconds_per_image(net: torch.nn.Module, size: int, reps: int = 3) -> float:
    """Best of ``reps`` CPU inference times of one 1×3×size×size image (after a warm-up)."""
    net = net.cpu().eval()
    x = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        net(x[..., : size // 4, : size // 4])
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return min(times)


def plot(runs: dict[str, dict], teacher_objective: float, new_style: str, teacher_style: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in ("scratch", "finetune", "frozen"):
        steps, values = zip(*runs[key]["curve"], strict=True)
        a.plot(steps, values, marker=".", label=key)
    a.set_title(f"(a) new style {new_style}: scratch / fine-tuned / frozen encoder")
    for key in ("distilled", "undistilled"):
        steps, values = zip(*runs[key]["curve"], strict=True)
        b.plot(steps, values, marker=".", label=f"student, {key}")
    b.axhline(teacher_objective, color="k", linestyle="--", label="teacher (shipped model)")
    b.set_title(f"(b) {teacher_style}: small student vs teacher")
    for ax in (a, b):
        ax.set_xlabel("training step")
        ax.set_ylabel("val objective")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--teacher", default="starry_night", help="shipped model name or checkpoint")
    parser.add_argument("--new-style", default="the_scream", help="style preset of the fine-tuning comparison")
    parser.add_argument("--steps", type=int, help="override the profile's steps per run")
    parser.add_argument("--val-every", type=int, help="override the profile's validation interval")
    parser.add_argument("--val-count", type=int, help="override the profile's number of held-out photos")
    parser.add_argument("--pixel-weight", type=float, default=None, help="distill.pixel_weight (default: recipe)")
    parser.add_argument("--feature-weight", type=float, default=None, help="distill.feature_weight")
    parser.add_argument("--only-distill", action="store_true", help="only the distilled run (weight tuning)")
    parser.add_argument(
        "--only-finetune",
        default=None,
        metavar="SOURCE",
        help="only (a), fine-tuning from SOURCE (e.g. starry_night) at its own architecture",
    )
    parser.add_argument("--plot-dir", default=None, help="write transfer_<profile>.png (and .json) here")
    args = parser.parse_args()
    p = dict(PROFILES[args.profile])
    for key in ("steps", "val_every", "val_count"):
        if getattr(args, key):
            p[key] = getattr(args, key)
    if args.plot_dir:
        Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
        p["progress"] = str(Path(args.plot_dir) / f"transfer_{args.profile}_progress.jsonl")
    if args.profile == "cpu":
        torch.set_num_threads(int(os.environ.get("NST_THREADS", "2")))
    t_start = time.perf_counter()
    data_dir = os.environ.get("NST_DATA_DIR", "data")
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "experiment" / "distill.yaml")
    pixel_w = recipe.distill.pixel_weight if args.pixel_weight is None else args.pixel_weight
    feature_w = recipe.distill.feature_weight if args.feature_weight is None else args.feature_weight
    feature_layers = list(recipe.distill.feature_layers)

    teacher = load_model(args.teacher)
    t_meta = teacher.meta
    terms = LossConfig.from_dict(t_meta["loss"], f"{args.teacher}'s loss").to_dict()
    loss = {"style_size": t_meta.get("style_size"), "terms": terms}
    teacher_style = preset_style(t_meta["style_name"], data_dir)
    new_style = preset_style(args.new_style, data_dir)
    new_loss = {"style_size": new_style.size, "terms": {**loss["terms"], "content_weight": new_style.content_weight,
                                                        "style_weight": new_style.style_weight}}  # fmt: skip

    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.only_finetune:
            src = load_model(args.only_finetune)
            arch, path = (src.model_name, src.model_kwargs), str(resolve_checkpoint(args.only_finetune))
            for name, extra in (("scratch", {}), ("finetune", {"init_from": path}),
                                ("frozen", {"init_from": path, "freeze": "encoder"})):  # fmt: skip
                runs[name] = train_run(name, new_style, new_loss, p, out, arch=arch, **extra)
            target = runs["scratch"]["curve"][-1][1]
            ratios = {k: steps_to_reach(runs[k]["curve"], target) for k in ("finetune", "frozen")}
            print(json.dumps({"source": args.only_finetune, "steps": p["steps"], "ratios_steps": ratios,
                              "curves": {k: r["curve"] for k, r in runs.items()}}))  # fmt: skip
            return
        teacher_path = str(resolve_checkpoint(args.teacher))
        distill = dict(teacher=teacher_path, pixel_weight=pixel_w, feature_weight=feature_w,
                       feature_layers=feature_layers, init_from=teacher_path)  # fmt: skip  # as experiment=distill
        p_student = {**p, "crop": p["student_crop"], "val_size": p["student_crop"]}
        runs["distilled"] = train_run("distilled", teacher_style, loss, p_student, out, **distill)
        if args.only_distill:
            print(json.dumps({"pixel_weight": pixel_w, "feature_weight": feature_w, **runs["distilled"]}, default=str))
            return
        runs["undistilled"] = train_run("undistilled", teacher_style, loss, p_student, out)
        if p["finetune_from"] == "shipped":  # what a user does: the shipped model, at its own architecture
            source, arch = teacher_path, (teacher.model_name, teacher.model_kwargs)
        else:
            source, arch = str(runs["distilled"]["ckpt"]), None
        runs["scratch"] = train_run("scratch", new_style, new_loss, p, out, arch=arch)
        runs["finetune"] = train_run("finetune", new_style, new_loss, p, out, arch=arch, init_from=source)
        runs["frozen"] = train_run("frozen", new_style, new_loss, p, out, arch=arch, init_from=source,
                                   freeze="encoder")  # fmt: skip
        student = load_model(runs["distilled"]["ckpt"]).net
    teacher_objective = sum(runs["distilled"]["teacher"]) / len(runs["distilled"]["teacher"])
    t_teacher = seconds_per_image(teacher.net, 1024)
    t_student = seconds_per_image(student, 1024)

    final = {k: r["curve"][-1][1] for k, r in runs.items()}
    target = final["scratch"]
    ratio = {}
    for k in ("finetune", "frozen"):
        reached = steps_to_reach(runs[k]["curve"], target)
        ratio[k] = None if reached is None else round(reached / p["steps"], 3)
    result = {
        "profile": args.profile,
        "device": torch.cuda.get_device_name() if p["accelerator"] == "gpu" else "cpu",
        "settings": {**{k: v for k, v in p.items() if k != "progress"}, "teacher": args.teacher,
                     "student": {"model": "johnson", **STUDENT}, "new_style": args.new_style,
                     "distill_pixel_weight": pixel_w,
                     "distill_feature_weight": feature_w, "distill_feature_layers": feature_layers},
        "finetune_steps_ratio": ratio["finetune"],
        "frozen_steps_ratio": ratio["frozen"],
        "student_speedup_1024": round(t_teacher / t_student, 2),
        "student_objective_ratio": round(final["distilled"] / teacher_objective, 3),
        "undistilled_objective_ratio": round(final["undistilled"] / teacher_objective, 3),
        "teacher_val_objective": round(teacher_objective, 4),
        "final_val_objective": final,
        "teacher_s_1024": round(t_teacher, 3),
        "student_s_1024": round(t_student, 3),
        "run_seconds": {k: r["seconds"] for k, r in runs.items()},
        "curves": {k: r["curve"] for k, r in runs.items()},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }  # fmt: skip
    if args.plot_dir:
        folder = Path(args.plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot(runs, teacher_objective, args.new_style, t_meta["style_name"], folder / f"transfer_{args.profile}.png")
        (folder / f"transfer_{args.profile}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
