"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from nst_lightning.cli.app import hydra_app
from nst_lightning.errors import NSTError
from nst_lightning.inference import stylize_paths

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (file or folder) with ``cfg.ckpt`` into ``cfg.output``; returns written files.

    Images that cannot be read (or are too large) in a folder are reported and skipped; the others are still
    written, and the command then fails with the list of skipped files.
    """
    if not cfg.ckpt:
        raise NSTError("no checkpoint given: use ckpt=PATH")
    if not cfg.input:
        raise NSTError("no input given: use input=FILE_OR_FOLDER")
    report = stylize_paths(
        cfg.ckpt,
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
