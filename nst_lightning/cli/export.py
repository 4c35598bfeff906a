"""``python export.py ckpt=PATH_OR_NAME format=onnx [output=PATH]``: write an exported model and check it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from nst_lightning.cli.config import plain_values
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.export import FORMATS, SUFFIXES, check_parity, export, load_runtime
from nst_lightning.export.mobile import MOBILE_FORMATS, MOBILE_SUFFIXES, PRECISIONS, export_mobile, parse_size
from nst_lightning.export.runtime import EagerRuntime
from nst_lightning.export.web import export_web
from nst_lightning.inference import load_model
from nst_lightning.inference.checkpoint import style_names_of_meta
from nst_lightning.settings import from_mapping

log = logging.getLogger(__name__)

# Formats written as a folder rather than one file: name → (writer(loaded, output) → the file checked, suffix).
FOLDER_FORMATS = {"web": (export_web, "_web")}


def default_output(ckpt: str, fmt: str) -> Path:
    """``<ckpt stem><suffix>`` in the current folder (``starry_night`` → ``starry_night.onnx``)."""
    stem = Path(str(ckpt)).stem
    if fmt in FOLDER_FORMATS:
        return Path(stem + FOLDER_FORMATS[fmt][1])
    if fmt in MOBILE_FORMATS:
        return Path(stem + MOBILE_SUFFIXES[fmt])
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
    size: str | None
    precision: str
    calibration: str | None

    def __post_init__(self) -> None:
        if self.format not in FORMATS and self.format not in FOLDER_FORMATS and self.format not in MOBILE_FORMATS:
            choices = ", ".join((*FORMATS, *FOLDER_FORMATS, *MOBILE_FORMATS))
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
    if fmt in MOBILE_FORMATS:
        return run_mobile(job)
    if job.size or job.precision != "fp32":
        raise BadValue(
            f"size= and precision= apply to the fixed-size phone formats ({', '.join(MOBILE_FORMATS)}); "
            f"format={fmt} takes any size in fp32 (half=true stores fp16 weights for format=nst)"
        )
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


def run_mobile(job: ExportJob) -> dict[str, Any]:
    """A phone format (:mod:`nst_lightning.export.mobile`): written at ``size``, then run by its own runtime on
    that size (style 0 and, for a multi-style network, an even blend) and compared with the eager network, or
    (Core ML, which runs on macOS only) checked for its inputs, outputs, shapes and metadata."""
    from nst_lightning.export.mobile_runtimes import check_coreml

    fmt = job.format
    if job.half:
        raise BadValue(f"half=true applies to format=nst; for format={fmt} use precision={'|'.join(PRECISIONS[fmt])}")
    size = parse_size(job.size)
    output = Path(job.output) if job.output else default_output(str(job.ckpt), fmt)
    loaded = load_model(job.ckpt)
    start = time.perf_counter()
    path = export_mobile(loaded, fmt, output, size, job.precision, job.calibration)
    seconds = time.perf_counter() - start
    info = {"output": str(path), "format": fmt, "precision": job.precision, "bytes": _bytes(path)}
    log.info("exported %s (%s) to %s [%s %s, %.1f MB] in %.1f s", job.ckpt, loaded.model_name, path, fmt,
             job.precision, info["bytes"] / 1e6, seconds)  # fmt: skip
    if fmt == "coreml":
        found = check_coreml(path, len(style_names_of_meta(loaded.meta)))
        log.info("Core ML structure checked: inputs %s, outputs %s; its numeric check needs macOS (Core ML "
                 "does not run on Linux)", found["inputs"], found["outputs"])  # fmt: skip
        return {**info, "runtime": None, "inputs": found["inputs"], "outputs": found["outputs"],
                "max_abs_diff": None, "numeric_check": "needs macOS"}  # fmt: skip
    runtime = load_runtime(path)
    h, w = runtime.size
    diffs = {}
    for label, mix in _style_choices(runtime.style_names):
        reference = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta)
        reference.set_style(style_mix=mix)
        diff = check_parity(reference, runtime.set_style(style_mix=mix), [(h, w)])[(h, w)]
        diffs[f"{h}x{w}" + label] = diff
        log.info("parity %s vs eager at %d×%d%s: max abs diff %.2e", runtime.name, h, w, label, diff)
    info.update(runtime=runtime.name, max_abs_diff=diffs)
    worst = max(diffs.values())
    if job.precision == "int8":
        gate = _int8_gate(loaded, runtime, (h, w))
        info["gate"] = gate.as_dict()
        log.info("int8 quality gate on photos: %s", gate.reason)
        if not gate.passed:
            raise NSTError(f"the int8 {fmt} model is not good enough ({gate.reason}); {path} is written but should "
                           "not be used: export precision=fp32 instead")  # fmt: skip
        return info
    tolerance = job.half_tolerance if job.precision == "fp16" else job.tolerance
    if worst > tolerance:
        raise NSTError(
            f"the exported {fmt} model differs from the eager network by {worst:.2e} (> tolerance {tolerance:g}); "
            f"{path} is written but should not be used. Try another format, or report the model and format."
        )
    return info


def _bytes(path: Path) -> int:
    """A file's size, or a package folder's (Core ML) total."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _style_choices(names: list[str]) -> list[tuple[str, dict[str, float] | None]]:
    """Style 0 (the default); for several styles also an even blend of all of them."""
    if len(names) < 2:
        return [("", None)]
    return [(f" ({names[0]})", None), (" (even blend)", {name: 1.0 for name in names})]


def _int8_gate(loaded: Any, runtime: Any, size: tuple[int, int]) -> Any:
    """The quality gate on training photos the calibration did not see, resized to the file's size."""
    from nst_lightning.export.gate import check_gate
    from nst_lightning.export.quantize import training_photos
    from nst_lightning.image import resize_tensor

    photos = [resize_tensor(p, size).clamp(0, 1) for p in training_photos(count=4, offset=8)]
    eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta)
    return check_gate(eager, runtime.set_style(), photos)
