#!/usr/bin/env python
"""A new style on a CPU: the fine-tuning recipe from the shipped model against a from-scratch run of equal time.

``train`` runs ``python train.py experiment=finetune`` as a user would (the recipe's CPU profile, a time budget)
and saves a snapshot of the network after each of ``--minutes`` of training; ``--scratch`` trains the same
recipe without ``init_from``. Run both at once so that they share the machine's load. ``report`` scores every
snapshot on the same held-out photos with the new style's objective, scores the shipped model on its own style,
draws a picture grid and prints one JSON object (also written next to the grid).

    NST_DATA_DIR=../shared/data python benchmarks/cpu_finetune.py train --out OUT --minutes 5 15 30 &
    NST_DATA_DIR=../shared/data python benchmarks/cpu_finetune.py train --out OUT --minutes 5 15 30 --scratch &
    wait; python benchmarks/cpu_finetune.py report --out OUT --docs docs/results
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from nst_lightning.cli.config import config_dir

REPO = Path(__file__).resolve().parent.parent


class Snapshots(L.Callback):
    """Saves ``snap_<M>min.ckpt`` once ``M`` minutes of training have passed (validation included), and
    ``snap_end.ckpt`` when training stops; records (minutes, step, seconds) of each."""

    def __init__(self, folder: Path, minutes: list[float]) -> None:
        self.folder, self.pending, self.saved = folder, sorted(minutes), []
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def _save(self, trainer: L.Trainer, name: str) -> None:
        trainer.save_checkpoint(self.folder / f"snap_{name}.ckpt")
        self.saved.append({"name": name, "step": trainer.global_step, "seconds": time.monotonic() - self.start})

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        elapsed = (time.monotonic() - self.start) / 60
        while self.pending and elapsed >= self.pending[0]:
            self._save(trainer, f"{self.pending.pop(0):g}min")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, "end")


def train(args: argparse.Namespace) -> None:
    from nst_lightning.cli.train import run

    name = "scratch" if args.scratch else "finetune"
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    budget = int(max(args.minutes) * 60)
    max_time = f"00:{budget // 3600:02d}:{budget % 3600 // 60:02d}:{budget % 60:02d}"
    overrides = ["experiment=finetune", f"style={args.style}", f"paths.output_dir={folder}",
                 f"++trainer.max_time={max_time}", *args.override]  # fmt: skip
    if args.scratch:
        overrides.append("init_from=null")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    snaps = Snapshots(folder, list(args.minutes))
    result = run(cfg, extra_callbacks=[snaps])
    (folder / "run.json").write_text(json.dumps({"overrides": overrides, "snapshots": snaps.saved,
                                                 "global_step": result["global_step"]}, indent=1))  # fmt: skip


@torch.no_grad()
def objective(net: torch.nn.Module, meta: dict, photos: list[Path], size: int) -> float:
    """Mean objective of ``net`` over ``photos`` (centre crops of ``size``) with the loss recorded in ``meta``."""
    from nst_lightning.data.datasets import eval_transform
    from nst_lightning.evaluation.evaluate import loss_from_meta
    from nst_lightning.image import load_image
    from nst_lightning.losses.styles import set_style_targets

    loss = loss_from_meta(meta)
    set_style_targets(loss, [(Path(meta["style_image"]), meta.get("style_size"))])
    crop = eval_transform(size)
    values = []
    for photo in photos:
        x = crop(load_image(photo))
        values.append(float(loss(net(x).clamp(0, 1), x)["objective"]))
    return sum(values) / len(values)


def report(args: argparse.Namespace) -> None:
    from nst_lightning.data.datamodule import FolderDataModule
    from nst_lightning.image import load_image, save_image
    from nst_lightning.inference import load_model

    runs = {name: json.loads((args.out / name / "run.json").read_text()) for name in ("finetune", "scratch")}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=finetune", "paths.output_dir=."])
    data = FolderDataModule(cfg.data.root, val_count=cfg.data.val_count, num_workers=0)
    data.setup("fit")
    photos = list(data.val_set.files)[: args.photos]
    table: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        for snap in run["snapshots"]:
            model = load_model(args.out / name / f"snap_{snap['name']}.ckpt")
            value = objective(model.net, model.meta, photos, args.size)
            table.setdefault(name, {})[snap["name"]] = {"step": snap["step"], "minutes": round(snap["seconds"] / 60, 1),
                                                        "objective": round(value, 3)}  # fmt: skip
            print(name, snap["name"], table[name][snap["name"]], flush=True)
    shipped = load_model(args.shipped)
    shipped_meta = {**shipped.meta, "style_image": str(_preset_image(shipped.meta["style_name"]))}
    shipped_value = objective(shipped.net, shipped_meta, photos, args.size)
    content = load_image(args.picture)
    cells = [("photo", content)]
    for name in ("finetune", "scratch"):
        for snap in runs[name]["snapshots"]:
            net = load_model(args.out / name / f"snap_{snap['name']}.ckpt").net
            with torch.no_grad():
                cells.append((f"{name} {snap['name']}", net(content).clamp(0, 1)))
    with torch.no_grad():
        cells.append((f"shipped {shipped.meta['style_name']}", shipped.net(content).clamp(0, 1)))
    args.docs.mkdir(parents=True, exist_ok=True)
    grid = args.docs / "cpu_finetune.jpg"
    save_image(_grid(cells), grid)
    result = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "photos": len(photos), "size": args.size, "runs": table, "overrides": runs["finetune"]["overrides"],
              "shipped_own_style_objective": round(shipped_value, 3), "grid": str(grid)}  # fmt: skip
    (args.docs / "cpu_finetune.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def _preset_image(style_name: str) -> Path:
    from nst_lightning.cli.presets import preset_style, style_image_path
    from nst_lightning.data.sample import data_dir_from_env

    return style_image_path(preset_style(style_name, data_dir_from_env()))


def _grid(cells: list[tuple[str, torch.Tensor]], columns: int = 4) -> torch.Tensor:
    """The 1×3×H×W images in rows of ``columns`` (their labels go in the results page's caption)."""
    h, w = cells[0][1].shape[-2:]
    rows = (len(cells) + columns - 1) // columns
    canvas = torch.ones(1, 3, rows * h, columns * w)
    for i, (_, image) in enumerate(cells):
        r, c = divmod(i, columns)
        canvas[..., r * h : (r + 1) * h, c * w : (c + 1) * w] = image[..., :h, :w]
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, nargs="+", default=[5, 15])
    t.add_argument("--style", default="the_scream")
    t.add_argument("--scratch", action="store_true", help="train without init_from")
    t.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    r = sub.add_parser("report")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--docs", type=Path, default=REPO / "docs" / "results")
    r.add_argument("--shipped", default="starry_night")
    r.add_argument("--photos", type=int, default=8, help="held-out photos scored")
    r.add_argument("--size", type=int, default=256, help="side of the scored centre crops")
    r.add_argument("--picture", type=Path, default=REPO / "nst_lightning/data/sample/train/kodim21.jpg")
    args = parser.parse_args()
    (train if args.command == "train" else report)(args)


if __name__ == "__main__":
    main()
