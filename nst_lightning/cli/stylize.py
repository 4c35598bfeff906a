"""``python stylize.py ckpt=NAME_OR_PATH input=FILE_OR_FOLDER output=PATH``: stylize files with a trained network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from nst_lightning.cli.app import hydra_app
from nst_lightning.errors import NSTError
from nst_lightning.image import IMAGE_SUFFIXES, is_image_file
from nst_lightning.inference import load_model, resolve_device, stylize_file

log = logging.getLogger(__name__)


def plan_outputs(src: Path, output: Path, suffix: str | None = None) -> list[tuple[Path, Path]]:
    """(input, output) file pairs: a file maps to a file (or into a folder), a folder to a folder tree."""
    if not src.exists():
        raise NSTError(f"input not found: {src}")
    if src.is_file():
        dst = output if output.suffix.lower() in IMAGE_SUFFIXES else output / src.name
        return [(src, dst.with_suffix(suffix) if suffix else dst)]
    files = sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise NSTError(f"no images found in folder {src}")
    if output.suffix.lower() in IMAGE_SUFFIXES:
        raise NSTError(f"input {src} is a folder, so output must be a folder, not {output}")
    pairs = []
    for f in files:
        dst = output / f.relative_to(src)
        pairs.append((f, dst.with_suffix(suffix) if suffix else dst))
    return pairs


def run(cfg: DictConfig) -> list[Path]:
    """Stylize ``cfg.input`` (file or folder) with ``cfg.ckpt`` into ``cfg.output``; returns written files.

    Unreadable images in a folder are reported and skipped; the others are still written.
    """
    if not cfg.get("ckpt"):
        raise NSTError("no checkpoint given: use ckpt=PATH")
    if not cfg.get("input"):
        raise NSTError("no input given: use input=FILE_OR_FOLDER")
    device = resolve_device(cfg.get("device"))
    loaded = load_model(cfg.ckpt, device)
    pairs = plan_outputs(Path(cfg.input), Path(cfg.output), cfg.get("suffix"))
    written, failed = [], []
    for src, dst in tqdm(pairs, desc="stylize", unit="img", disable=len(pairs) < 2):
        try:
            written.append(stylize_file(loaded.net, src, dst, cfg.get("max_size"), cfg.get("preserve_color", False)))
        except NSTError as exc:
            if len(pairs) == 1:
                raise
            failed.append(src)
            log.warning("skipped %s", exc)
    log.info("wrote %d image(s) to %s", len(written), cfg.output)
    if failed:
        raise NSTError(f"{len(failed)} of {len(pairs)} images could not be read: {[str(f) for f in failed]}")
    return written


main = hydra_app(
    "stylize", run, summary="stylize images with a trained network (ckpt=NAME_OR_PATH input=FILE_OR_FOLDER)"
)
