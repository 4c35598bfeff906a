#!/usr/bin/env python
"""Many styles in one network, measured at small scale: multi- vs single-style at equal training, and adding a
style by training only its instance-norm scales and shifts.

Runs (all the same narrow johnson, random crops of ``$NST_DATA_DIR/train``, validation on held-out photos, each
style scored with its own preset's loss weights and Gram size):

* ``single_<s>``: an ordinary single-style network per style, ``--steps`` steps each;
* ``multi``: one network for the first ``--styles`` (conditional instance norm), their steps summed (equal total
  training: every style sees as many images as its single-style run); ``multi_vs_single``: final val objective
  per style, multi ÷ single;
* ``add_<new>``: ``--new-style`` added to ``multi`` by training only its scales and shifts (lr ``--add-lr``),
  ``--steps`` steps; ``add_style_steps_ratio``: steps it needed to reach ``single_<new>``'s final val objective
  (linear between validations) ÷ ``--steps`` (null: never reached); ``trained_parameters`` and their share.

``--init-from SOURCE`` starts every run of the multi- vs single-style comparison (the multi-style network and
each single-style one) from a trained network at its own architecture (:func:`nst_lightning.transfer.
load_for_styles`: its body, and its style's scales and shifts for a style of the same name, else their mean),
with no add-style runs: what a user who has one good network and wants many styles does.

The multi-style run trains its per-style scales and shifts at ``--style-lr`` (default ``optim.style_lr``) and
everything else at ``optim.lr``'s default, 1e-3; an add-style run trains its new style's at ``--add-lr``.
``--singles-from JSON`` takes the single-style runs from an earlier result of this benchmark measured with the
same settings (checked before anything trains), so that a change to the multi-style recipe is measured against
the same baselines.

``--add-from SOURCE`` measures the add-style run alone, on a trained network (a shipped model or checkpoint; a
single-style network's norms become style 0) at its own architecture, against a scratch network of that
architecture: what a user who has one good network and wants another style does.

Prints progress lines and, last, one JSON object (also written to ``--out`` if given).

    NST_DATA_DIR=../shared/data nice python benchmarks/multistyle.py --out docs/results/multistyle_cpu.json
    NST_DATA_DIR=../shared/data python benchmarks/multistyle.py --add-from starry_night --crop 128 --batch 4 \
        --steps 120 --val-every 10 --add-lr 1e-2 3e-2 --out docs/results/add_style_cpu.json
    NST_DATA_DIR=../shared/data python benchmarks/multistyle.py --init-from starry_night --crop 128 --batch 4 \
        --styles starry_night the_scream the_wave candy mosaic --steps 200 --val-every 40 --val-count 8 \
        --style-lr 1e-3 --no-balance --out docs/results/multistyle_from_shipped_cpu.json
    NST_DATA_DIR=../shared/data python benchmarks/multistyle.py --init-from starry_night --crop 128 --batch 4 \
        --styles starry_night the_scream the_wave candy mosaic --steps 200 --val-every 40 --val-count 8 \
        --singles-from docs/results/multistyle_from_shipped_cpu.json \
        --out docs/results/multistyle_from_shipped_style_lr_balanced_cpu.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from nst_lightning.cli.multistyle import style_entry
from nst_lightning.cli.presets import preset_style
from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.inference import load_model, resolve_checkpoint
from nst_lightning.losses.config import LossConfig
from nst_lightning.models import create_model
from nst_lightning.models.conditional import style_parameters
from nst_lightning.training.hparams import OptimGroup
from nst_lightning.training.measured import fit_measured
from nst_lightning.training.multistyle import MultiStyleModule
from nst_lightning.transfer.add_style import source_styles

BALANCE = inspect.signature(MultiStyleModule).parameters["balance"].default  # style_balance's default

warnings.filterwarnings("ignore", message=r".*(module\(s\) in eval mode|does not have many workers|LeafSpec).*")
ARCH = ("johnson", {"base_channels": 8, "num_residual": 5})


class Curves(L.Callback):
    """Per style: (global step, val objective) after each validation."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.points: dict[str, list[tuple[int, float]]] = {n: [] for n in names}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in self.names:
            key = f"val/style/{name}"
            if key in trainer.callback_metrics:
                self.points[name].append((trainer.global_step, round(float(trainer.callback_metrics[key]), 5)))
        print(f"  step {trainer.global_step}: " + ", ".join(f"{n} {p[-1][1]}" for n, p in self.points.items() if p),
              flush=True)  # fmt: skip


def device_name(a: argparse.Namespace) -> str:
    return torch.cuda.get_device_name() if a.device == "gpu" else "cpu"


def steps_to_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """First step at which a curve reaches ``target`` (linear between validations), or None."""
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if v1 <= target:
            return float(s1) if v0 == v1 else s0 + (v0 - target) / (v0 - v1) * (s1 - s0)
    return 0.0 if points and points[0][1] <= target else None


def loss_layers(name: str) -> LossConfig:
    """The layers of ``conf/loss/<name>.yaml``, composed as the training config composes it (each style
    brings its own weights)."""
    from hydra import compose, initialize_config_dir

    from nst_lightning.cli.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        structure = OmegaConf.to_container(compose("train", overrides=[f"loss={name}"]).loss, resolve=True)
    return LossConfig.from_dict({**LossConfig().to_dict(), **structure}, f"conf/loss/{name}.yaml")


def train_run(
    name: str, styles: list[dict], steps: int, a: argparse.Namespace, out: Path, arch: tuple[str, dict] = ARCH,
    optim: dict | None = None, **extra: Any,
) -> dict:  # fmt: skip
    """One run at ``optim.lr``'s default (1e-3), ``optim`` overriding (e.g. ``style_lr``)."""
    L.seed_everything(0, workers=True)
    module = MultiStyleModule(styles=styles, model={"name": arch[0], "kwargs": dict(arch[1])},
                              loss=loss_layers(a.loss).to_dict(), optim=optim or {}, **extra)  # fmt: skip
    data = FolderDataModule(
        os.path.join(os.environ.get("NST_DATA_DIR", "data"), "train"), image_size=a.crop, batch_size=a.batch,
        num_workers=a.workers, val_count=a.val_count, val_size=a.crop,
    )  # fmt: skip
    trained = [styles[i]["name"] for i in module.trained]
    curves = Curves(trained)
    ckpt = out / f"{name}.ckpt"
    precision = "bf16-mixed" if a.device == "gpu" else "32-true"
    seconds = fit_measured(module, data, steps, a.val_every, [curves], a.device, precision, ckpt)
    params = [p for p in module.net.parameters()]
    run = {
        "curves": curves.points, "seconds": round(seconds, 1), "ckpt": str(ckpt), "steps": steps,
        "parameters": sum(p.numel() for p in params),
        "trained_parameters": sum(p.numel() for p in params if p.requires_grad),
    }  # fmt: skip
    print(json.dumps({"run": name, **{k: v for k, v in run.items() if k != "ckpt"}}), flush=True)
    return run


def final_objectives(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each run's last validation objective per style."""
    return {k: {s: c[-1][1] for s, c in r["curves"].items()} for k, r in runs.items()}


def add_result(runs: dict[str, dict], a: argparse.Namespace) -> tuple[dict, float, dict]:
    """Final objectives per run and style, the scratch network's target and the add-style runs' figures."""
    final = final_objectives(runs)
    target = final[f"single_{a.new_style}"][a.new_style]
    add = {}
    for k, r in runs.items():
        if k.startswith("add_"):
            reached = steps_to_reach(r["curves"][a.new_style], target)
            add[k] = {
                "steps_to_reach_single": reached,
                "steps_ratio": None if reached is None else round(reached / a.steps, 3),
                "final_objective": final[k][a.new_style],
                "trained_parameters": r["trained_parameters"],
                "trained_share": round(r["trained_parameters"] / r["parameters"], 5),
            }
    return final, target, add


def earlier_singles(path: str, a: argparse.Namespace, arch: tuple[str, dict]) -> dict[str, dict]:
    """The single-style runs (curves and seconds) of an earlier result file, by style; only if it was measured
    with this run's settings (else SystemExit saying which differ)."""
    old = json.loads(Path(path).read_text())
    now = {"init_from": a.init_from, "arch": f"{arch[0]}({arch[1]})", "loss": a.loss, "crop": a.crop,
           "batch": a.batch, "steps_per_style": a.steps, "val_every": a.val_every,
           "val_count": a.val_count}  # fmt: skip
    differ = {k: (old.get(k), v) for k, v in now.items() if old.get(k) != v}
    if differ:
        raise SystemExit(f"--singles-from {path} was measured with other settings (earlier, now): {differ}")
    singles = {}
    for n in a.styles:
        key = f"single_{n}"
        if key in old.get("curves", {}):
            singles[n] = {"curves": old["curves"][key], "seconds": old["seconds"][key], "from": path}
    return singles


def source_arch(source: str) -> tuple[Any, tuple[str, dict], str]:
    """A trained network's loaded model, its architecture as one style's and the path of its file."""
    src = load_model(source)
    kwargs = {k: v for k, v in src.model_kwargs.items() if k != "num_styles"}
    return src, (src.model_name, kwargs), str(resolve_checkpoint(source))


def add_from_source(a: argparse.Namespace, entry: dict[str, dict], t_start: float) -> None:
    """``--add-from``: the new style's scales and shifts on a trained network against a scratch network of the
    same architecture, equal steps."""
    src, arch, path = source_arch(a.add_from)
    own = []
    for s in source_styles(src.meta):  # the source's styles, with this machine's style images
        preset = entry.get(s["name"]) or style_entry(preset_style(s["name"], os.environ.get("NST_DATA_DIR", "data")))
        own.append({**preset, "size": s.get("size") or preset["size"]})
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        runs[f"single_{a.new_style}"] = train_run(f"single_{a.new_style}", [entry[a.new_style]], a.steps, a, out,
                                                  arch=arch)  # fmt: skip
        for lr in a.add_lr:
            runs[f"add_{a.new_style}_lr{lr:g}"] = train_run(
                f"add_{a.new_style}_lr{lr:g}", [*own, entry[a.new_style]], a.steps, a, out, arch=arch,
                optim={"style_lr": lr}, train_styles=[len(own)], transfer={"init_from": path},
            )  # fmt: skip
    final, target, add = add_result(runs, a)
    result = {
        "add_from": a.add_from, "arch": f"{arch[0]}({arch[1]})", "loss": a.loss, "crop": a.crop, "batch": a.batch,
        "steps": a.steps, "val_every": a.val_every, "val_count": a.val_count, "new_style": a.new_style,
        "device": device_name(a), "threads": torch.get_num_threads(), "final_val_objective": final, "add_style": add,
        "single_target_objective": target, "curves": {k: r["curves"] for k, r in runs.items()},
        "seconds": {k: r["seconds"] for k, r in runs.items()}, "total_seconds": round(time.perf_counter() - t_start),
    }  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--styles", nargs="+", default=["starry_night", "the_wave"])
    parser.add_argument("--new-style", default="candy")
    parser.add_argument("--steps", type=int, default=60, help="steps per style")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--val-count", type=int, default=4)
    parser.add_argument("--add-lr", type=float, nargs="+", default=[1e-2])
    parser.add_argument("--loss", default="default", help="conf/loss/<name>.yaml: the layers (tiny: VGG to relu2_2)")
    parser.add_argument("--skip-singles", action="store_true", help="only the add-style comparison")
    parser.add_argument(
        "--add-from", default=None, metavar="SOURCE",
        help="add the new style to this trained network (shipped name or checkpoint; a single-style one's norms "
             "become style 0) at its own architecture, against a scratch network of that architecture; no "
             "multi- vs single-style runs",
    )  # fmt: skip
    parser.add_argument(
        "--init-from", default=None, metavar="SOURCE",
        help="start the multi-style network and every single-style one from this trained network (shipped name "
             "or checkpoint) at its own architecture; no add-style runs",
    )  # fmt: skip
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: one CUDA GPU, bf16-mixed")
    parser.add_argument("--workers", type=int, default=1, help="data loader workers")
    parser.add_argument(
        "--balance", action=argparse.BooleanOptionalAction, default=BALANCE,
        help="the multi-style run balances its styles' losses (default: %(default)s, as style_balance)",
    )  # fmt: skip
    parser.add_argument(
        "--style-lr",
        type=float,
        default=OptimGroup.style_lr,
        help="the multi-style run's learning rate for its per-style scales and shifts (default: optim.style_lr; "
        "the shared weights train at optim.lr's, 1e-3)",
    )
    parser.add_argument(
        "--singles-from", default=None, metavar="JSON",
        help="take the single-style runs from an earlier result of this benchmark (same styles, start, "
             "architecture, crops, batch, steps and validation) instead of training them again",
    )  # fmt: skip
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep every run's checkpoint in DIR")
    a = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("NST_THREADS", "2")))
    data_dir = os.environ.get("NST_DATA_DIR", "data")
    entry = {n: style_entry(preset_style(n, data_dir)) for n in [*a.styles, a.new_style]}
    t_start = time.perf_counter()
    runs: dict[str, dict] = {}
    if a.add_from:
        return add_from_source(a, entry, t_start)
    arch, start = ARCH, {}
    if a.init_from:
        _, arch, path = source_arch(a.init_from)
        start = {"transfer": {"init_from": path}}
    earlier = earlier_singles(a.singles_from, a, arch) if a.singles_from else {}  # checked before training
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        # The add-style runs first (after their source), so that an interrupted benchmark still has them.
        multi_styles = [entry[n] for n in a.styles]
        runs["multi"] = train_run("multi", multi_styles, a.steps * len(a.styles), a, out, arch=arch,
                                  balance=a.balance, optim={"style_lr": a.style_lr}, **start)  # fmt: skip
        if not a.init_from:
            runs[f"single_{a.new_style}"] = train_run(f"single_{a.new_style}", [entry[a.new_style]], a.steps, a, out)
        for lr in [] if a.init_from else a.add_lr:
            runs[f"add_{a.new_style}_lr{lr:g}"] = train_run(
                f"add_{a.new_style}_lr{lr:g}", [*multi_styles, entry[a.new_style]], a.steps, a, out,
                train_styles=[len(multi_styles)], transfer={"init_from": runs["multi"]["ckpt"]},
                optim={"style_lr": lr},
            )  # fmt: skip
        for n in [] if a.skip_singles else a.styles:
            runs[f"single_{n}"] = earlier.get(n) or train_run(f"single_{n}", [entry[n]], a.steps, a, out, arch=arch,
                                                              **start)  # fmt: skip
    final, target, add = (final_objectives(runs), None, {}) if a.init_from else add_result(runs, a)
    full = create_model("johnson", num_styles=2)
    one_style = sum(p.numel() for p in style_parameters(full, 1))
    full_total = sum(p.numel() for p in create_model("johnson").parameters())
    single_params = sum(p.numel() for p in create_model(arch[0], **arch[1]).parameters())
    result = {
        "init_from": a.init_from, "balance": a.balance, "style_lr": a.style_lr, "singles_from": a.singles_from,
        "arch": f"{arch[0]}({arch[1]})", "loss": a.loss,
        "crop": a.crop, "batch": a.batch, "steps_per_style": a.steps,
        "val_every": a.val_every, "val_count": a.val_count, "styles": a.styles, "new_style": a.new_style,
        "device": device_name(a), "threads": torch.get_num_threads(),
        "final_val_objective": final,
        "multi_vs_single": None if a.skip_singles else {
            s: round(final["multi"][s] / final[f"single_{s}"][s], 3) for s in a.styles},
        "parameters": {"single": single_params, "multi": runs["multi"]["parameters"]},
        "add_style": add, "single_target_objective": target,
        "full_johnson_one_style_share": round(one_style / full_total, 5),
        "curves": {k: r["curves"] for k, r in runs.items()},
        "seconds": {k: r["seconds"] for k, r in runs.items()}, "total_seconds": round(time.perf_counter() - t_start),
    }  # fmt: skip
    text = json.dumps(result)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
