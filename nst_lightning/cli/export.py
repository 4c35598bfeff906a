"""``python export.py ckpt=PATH_OR_NAME format=onnx [output=PATH]``: write an exported model and check it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nst_lightning.cli.config import plain_values
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.export import FORMATS, SUFFIXES, check_parity, export, load_runtime
from nst_lightning.export.web import export_web
from nst_lightning.inference import load_model
from nst_lightning.settings import from_mapping

log = logging.getLogger(__name__)

# Formats written as a folder rather than one file: name → (writer(loaded, output) → the file checked, suffix).
FOLDER_FORMATS = {"web": (export_web, "_web")}


def default_output(ckpt: str, fmt: str) -> Path:
    """``<ckpt stem><suffix>`` in the current folder (``starry_night`` → ``starry_night.onnx``)."""
    stem = Path(str(ckpt)).stem
    if fmt in FOLDER_FORMATS:
        return Path(stem + FOLDER_FORMATS[fmt][1])
    out = Path(stem + SUFFIXES[fmt])
    if fmt == "nst" and out.resolve() == Path(str(ckpt)).expanduser().resolve():
        raise NSTError(f"format=nst would overwrite the checkpoint {ckpt}; give output=PATH")
    return out


@dataclass(frozen=True)
class ExportJob:
    """The keys of ``conf/export.yaml`` with their types (no defaults: the YAML is where they live)."""

    ckpt: str | None
    format: str
    output: str | None
    half: bool
    check_sizes: list[list[int]]
    tolerance: float
    half_tolerance: float
    onnx_exporter: str

    def __post_init__(self) -> None:
        if self.format not in FORMATS and self.format not in FOLDER_FORMATS:
            choices = ", ".join((*FORMATS, *FOLDER_FORMATS))
            raise BadValue(f"unknown format {self.format!r}; use format= one of: {choices}")
        for name in ("tolerance", "half_tolerance"):
            if getattr(self, name) < 0:
                raise BadValue(f"{name} must be ≥ 0, got {getattr(self, name)}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt`` in ``cfg.format`` to ``cfg.output``, then compare the written file with the eager
    network on ``cfg.check_sizes``. Returns ``{"output", "format", "runtime", "bytes", "max_abs_diff": {"HxW":
    float}, "onnx_exporter"}``.

    Raises:
        NSTError: missing arguments, unknown format, failed export, or a difference above the tolerance.
    """
    job = from_mapping(ExportJob, plain_values(cfg, [f.name for f in fields(ExportJob)]), "export")
    if not job.ckpt:
        raise BadValue("no checkpoint given: use ckpt=PATH or a shipped model name (ckpt=starry_night)")
    fmt = job.format
    if fmt not in FORMATS and fmt not in FOLDER_FORMATS:
        raise NSTError(f"unknown format {fmt!r}; use format= one of: {', '.join((*FORMATS, *FOLDER_FORMATS))}")
    if fmt in FOLDER_FORMATS and cfg.half:
        raise NSTError(f"half=true applies to format=nst only (format={fmt} is exported in fp32)")
    half = bool(cfg.half)
    output = Path(cfg.output) if cfg.output else default_output(cfg.ckpt, fmt)
    sizes = [tuple(int(v) for v in size) for size in cfg.check_sizes or []]
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise NSTError(f"check_sizes must be a list of [H, W] pairs of positive ints, got {cfg.check_sizes}")

    loaded = load_model(cfg.ckpt)
    start = time.perf_counter()
    if fmt in FOLDER_FORMATS:
        path = FOLDER_FORMATS[fmt][0](loaded, output)
    else:
        path = export(loaded, fmt, output, half=half, onnx_exporter=str(cfg.onnx_exporter))
    seconds = time.perf_counter() - start
    runtime = load_runtime(path)
    exporter = getattr(runtime, "onnx_exporter", None)
    log.info(
        "exported %s (%s) to %s [%s, %.1f MB] in %.1f s%s",
        cfg.ckpt, loaded.model_name, path, fmt, path.stat().st_size / 1e6, seconds,
        f" with the {exporter} ONNX exporter" if exporter else "",
    )  # fmt: skip
    diffs = check_parity(loaded, runtime, sizes)
    for (h, w), diff in diffs.items():
        log.info("parity %s vs eager at %d×%d: max abs diff %.2e", runtime.name, h, w, diff)
    tolerance = float(cfg.half_tolerance if half else cfg.tolerance)
    worst = max(diffs.values())
    if worst > tolerance:
        raise NSTError(
            f"the exported {fmt} model differs from the eager network by {worst:.2e} (> tolerance {tolerance:g}); "
            f"{path} is written but should not be used. Try another format, or report the model and format."
        )
    return {
        "output": str(output if fmt in FOLDER_FORMATS else path),
        "format": fmt,
        "runtime": runtime.name,
        "bytes": path.stat().st_size,
        "max_abs_diff": {f"{h}x{w}": d for (h, w), d in diffs.items()},
        "onnx_exporter": exporter,
    }
