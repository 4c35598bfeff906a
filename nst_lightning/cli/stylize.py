"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from nst_lightning.errors import NSTError
from nst_lightning.inference import stylize_paths

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (file or folder) with ``cfg.ckpt`` into ``cfg.output``; returns written files.

    Images that cannot be read (or are too large) in a folder are reported and skipped; the others are still
    written, and the command then fails with the list of skipped files.
    """
    if not cfg.get("ckpt"):
        raise NSTError("no checkpoint given: use ckpt=PATH")
    if not cfg.get("input"):
        raise NSTError("no input given: use input=FILE_OR_FOLDER")
    report = stylize_paths(
        cfg.ckpt,
        cfg.input,
        cfg.output,
        suffix=cfg.get("suffix"),
        strength=cfg.get("strength", 1.0),
        preserve_color=cfg.get("preserve_color", False),
        max_size=cfg.get("max_size"),
        tile_size=cfg.get("tile_size"),
        tile_overlap=cfg.get("tile_overlap"),
        max_pixels=cfg.get("max_pixels"),
        device=cfg.get("device"),
        progress=True,
    )
    if not report.ok:
        raise NSTError(report.summary())
    return report.written
