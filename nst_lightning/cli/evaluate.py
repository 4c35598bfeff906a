"""``python evaluate.py ckpt=PATH``: the application side of :mod:`nst_lightning.evaluation.evaluate`."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from nst_lightning.cli.config import plain_values
from nst_lightning.cli.presets import checkpoint_style_image
from nst_lightning.cli.stylize import chosen_style
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.evaluation.evaluate import EvalSettings, eval_images, evaluate, loss_from_meta
from nst_lightning.evaluation.styles import style_view
from nst_lightning.inference import LoadedModel, choose_style, load_model, prepare_model, resolve_device
from nst_lightning.losses.styles import set_style_targets
from nst_lightning.settings import from_mapping

log = logging.getLogger(__name__)


def eval_settings(cfg: DictConfig) -> EvalSettings:
    """The :class:`EvalSettings` of a ``conf/evaluate.yaml`` config (each value's type checked, named)."""
    return from_mapping(EvalSettings, plain_values(cfg, [f.name for f in fields(EvalSettings)]), "evaluate")


def check_switches(cfg: DictConfig) -> None:
    """The keys of ``conf/evaluate.yaml`` that choose what runs: ``zeroshot`` (with ``zeroshot_refine_steps``)
    and ``tensorboard``."""
    from nst_lightning.inference.refine import check_refine_steps
    from nst_lightning.inference.zeroshot import METHODS

    if cfg.zeroshot is not None and cfg.zeroshot not in METHODS:
        raise BadValue(f"zeroshot must be null (score ckpt=) or one of {', '.join(METHODS)}, got {cfg.zeroshot!r}")
    check_refine_steps(cfg.zeroshot_refine_steps, "zeroshot_refine_steps")
    if not isinstance(cfg.tensorboard, bool):
        raise BadValue(f"tensorboard must be true or false, got {cfg.tensorboard!r}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint, rebuild its loss and style targets, and run :func:`evaluate`.

    A multi-style checkpoint is evaluated in each of its styles (into ``output_dir/<style>/``; returns
    ``{style: report}``), or in the one named by ``style=NAME``.
    """
    check_switches(cfg)
    eval_settings(cfg)  # every bad value fails before a model is loaded
    if cfg.zeroshot:
        return run_zeroshot(cfg)
    if not cfg.ckpt:
        raise NSTError("no checkpoint given: use ckpt=PATH (or the name of a shipped model, e.g. starry_night)")
    device = resolve_device(cfg.device)
    loaded = load_model(cfg.ckpt, device)
    style = chosen_style(cfg.style)
    if loaded.meta.get("styles"):
        chosen = [style] if style is not None else list(loaded.net.style_names)
        return {str(name): _run_one(cfg, style_view(loaded, name), device, Path(cfg.output_dir) / str(name))
                for name in chosen}  # fmt: skip
    if style is not None:
        choose_style(prepare_model(loaded), style)  # only its own name is accepted
    return _run_one(cfg, loaded, device, Path(cfg.output_dir))


def _run_one(cfg: DictConfig, loaded: LoadedModel, device: torch.device, out_dir: Path) -> dict[str, Any]:
    loss = loss_from_meta(loaded.meta)
    style_path = checkpoint_style_image(loaded.meta, cfg.style_image, cfg.paths.data_dir)
    style_size = cfg.style_size or loaded.meta.get("style_size")
    set_style_targets(loss, [(style_path, style_size)], cache_dir=cfg.paths.cache_dir)
    settings = eval_settings(cfg)
    images = eval_images(cfg.eval_dir, settings.max_images)
    log.info("evaluating %s on %d images from %s at %d px, L-BFGS at %s", loaded.meta["source"], len(images),
             cfg.eval_dir, settings.size, settings.lbfgs_iterations)  # fmt: skip
    report = evaluate(loaded, loss, images, settings, device, out_dir, tensorboard=bool(cfg.tensorboard))
    s = report["summary"]
    log.info("network mean objective %.4g; L-BFGS %s", s["mean"]["network"]["objective"],
             {k: round(s["mean"][f"lbfgs@{k}"]["objective"], 4) for k in report["lbfgs_iterations"]})  # fmt: skip
    log.info("network beats L-BFGS at %s; L-BFGS iterations matched (median) %s; wrote %s",
             s["network_beats_lbfgs_at"], s["lbfgs_iterations_matched_median"], out_dir / "report.json")  # fmt: skip
    return report


def run_zeroshot(cfg: DictConfig) -> dict[str, Any]:
    """Score the zero-shot model on every painting of ``style_dir`` (or ``style_image``) with the loss of
    ``conf/loss/default.yaml`` and the weights of the ``custom`` style preset."""
    from omegaconf import OmegaConf

    from nst_lightning.cli.config import config_dir
    from nst_lightning.cli.presets import preset_style
    from nst_lightning.evaluation.zeroshot import evaluate_zeroshot
    from nst_lightning.losses.config import loss_config

    device = resolve_device(cfg.device)
    paintings = [Path(cfg.style_image)] if cfg.style_image else eval_images(cfg.style_dir)
    preset = preset_style("custom", cfg.paths.data_dir)
    structure = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "loss" / "default.yaml"))
    loss_cfg = loss_config(structure, preset, "conf/loss/default.yaml + conf/style/custom.yaml")
    settings = eval_settings(cfg)
    images = eval_images(cfg.eval_dir, settings.max_images)
    out_dir = Path(cfg.output_dir)
    result = evaluate_zeroshot(paintings, loss_cfg, cfg.style_size or preset.get("size"), images, settings,
                               device, out_dir, method=cfg.zeroshot, cache_dir=cfg.paths.cache_dir,
                               refine_steps=cfg.zeroshot_refine_steps)  # fmt: skip
    for name, s in result["paintings"].items():
        log.info("%s: zero-shot mean objective %.4g; L-BFGS %s", name, s["mean"]["network"]["objective"],
                 {k: round(s["mean"][f"lbfgs@{k}"]["objective"], 4) for k in settings.lbfgs_iterations})  # fmt: skip
    (out_dir / "zeroshot.json").write_text(json.dumps(result, indent=2))
    return result
