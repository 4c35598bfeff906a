"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nst_lightning.cli.app import hydra_app
from nst_lightning.errors import NSTError
from nst_lightning.inference import choose_style, prepare_model, stylize_paths

log = logging.getLogger(__name__)


def chosen_style(value: object) -> str | int | None:
    """``style=NAME`` on the command line: Hydra loads the preset of that name (``conf/style/NAME.yaml``), whose
    ``name`` is the style; a plain value (tests, the library) is taken as it is."""
    if OmegaConf.is_config(value):
        return value.get("name")  # type: ignore[union-attr]
    return value  # type: ignore[return-value]


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (file or folder) with ``cfg.ckpt`` into ``cfg.output``; returns written files.

    Images that cannot be read (or are too large) in a folder are reported and skipped; the others are still
    written, and the command then fails with the list of skipped files.
    """
    if not cfg.ckpt:
        raise NSTError("no checkpoint given: use ckpt=PATH")
    if not cfg.input:
        raise NSTError("no input given: use input=FILE_OR_FOLDER")
    model = cfg.ckpt
    style, mix = chosen_style(cfg.get("style")), cfg.get("style_mix")
    if style is not None or mix:  # a multi-style network: the style is chosen once, for every image
        mix = OmegaConf.to_container(mix) if OmegaConf.is_config(mix) else mix
        if mix is not None and not isinstance(mix, dict):
            raise NSTError(f"style_mix must be a mapping {{NAME: WEIGHT, ...}}, got {mix!r}")
        model = choose_style(prepare_model(cfg.ckpt, cfg.get("device")), style, mix)
    report = stylize_paths(
        model,
        cfg.input,
        cfg.output,
        suffix=cfg.suffix,
        strength=cfg.strength,
        preserve_color=cfg.preserve_color,
        max_size=cfg.max_size,
        tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap,
        max_pixels=cfg.max_pixels,
        device=cfg.device,
        progress=True,
    )
    if not report.ok:
        raise NSTError(report.summary())
    return report.written


main = hydra_app(
    "stylize", run, summary="stylize images with a trained network (ckpt=NAME_OR_PATH input=FILE_OR_FOLDER)"
)
