"""Model layer: load every style network once at startup and run it (eager or an exported runtime).

A style is a checkpoint: the shipped models (``nst_lightning/pretrained/*.pt``) plus any ``*.pt``/``*.ckpt`` in
``models_dir``; the file stem is the style's name. A multi-style network also serves each of its styles as
``<stem>.<style>``, and under its stem any blend of them (``style_mix``).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nst_lightning.errors import BadValue, NotFound
from nst_lightning.export.auto import choose_runtime
from nst_lightning.export.runtime import EagerRuntime, detect_format, load_runtime, normalize_runtime
from nst_lightning.image import is_image_file
from nst_lightning.inference import (
    PRETRAINED_DIR,
    StylizeOptions,
    load_model,
    pretrained_models,
    pretrained_students,
    resolve_device,
    stylize,
)

log = logging.getLogger(__name__)

STYLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A network maps B×3×H×W in [0, 1] to B×3×H×W in [0, 1] (an nn.Module or an exported runtime).
Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StyleModel:
    """One loaded style: its runner and what to show for it."""

    name: str
    runner: Runner
    source: str
    thumbnail: bytes = b""  # JPEG
    network: str = ""  # the name (file stem) of the network that serves it
    style: str | None = None  # one style of a multi-style network (None: the network's default, style 0)
    network_styles: list[str] = field(default_factory=list)  # a multi-style network's styles ([]: single-style)
    fast: Runner | None = None  # the fast variant (a student, or the network in a faster runtime), if any
    cache_id: str = ""  # what result cache keys name as the model ("": the name); a learned style: its painting's hash

    @property
    def model_id(self) -> str:
        return self.cache_id or self.name

    def variant(self, quality: str) -> tuple[str, Runner]:
        """The variant that runs for ``quality`` (``full`` when there is no fast one) and its runner."""
        if quality == "fast" and self.fast is not None:
            return "fast", self.fast
        return "full", self.runner


def stylize_image(runner: Runner, image: Image.Image, options: StylizeOptions | None = None) -> Image.Image:
    """RGB or RGBA PIL image → stylized image (longest side at most ``options.max_size``, alpha kept), through
    the one inference core (:func:`nst_lightning.inference.stylize`, as ``stylize.py``) with the request's one
    options value. Outputs larger than ``options.tile_size`` are stylized in tiles, so a request's model memory
    is bounded by the tile."""
    # The eager runtime's nn.Module lets tiling hook its instance norms; an exported runtime runs as is (it pads and
    # crops around its graph itself, so its inner module must never be called directly).
    model = runner.net if isinstance(runner, EagerRuntime) else runner
    return stylize(image, model, options)


def load_runner(ckpt: Path, runtime: str, device: torch.device) -> Runner:
    """A callable B×3×H×W → B×3×H×W for the checkpoint in the asked runtime (non-eager runtimes convert the
    checkpoint in memory; see :func:`nst_lightning.export.runtime.load_runtime`). ``auto`` for a checkpoint is
    the fastest runtime that passes the quality gate on this machine (:func:`nst_lightning.export.auto.choose_runtime`,
    measured once and cached, logged); for an exported file, its own format."""
    name = normalize_runtime(runtime)
    if name == "auto" and detect_format(ckpt) == "checkpoint":
        return choose_runtime(load_model(ckpt, device), device)
    return load_runtime(ckpt, name, device)


def find_checkpoints(styles: list[str] | None, models_dir: str | None) -> dict[str, Path]:
    """``{style name: checkpoint}``: the shipped models (all, or those named in ``styles``) + ``models_dir``."""
    shipped = pretrained_models()
    if styles is not None:
        missing = [s for s in styles if s not in shipped]
        if missing:
            raise NotFound(f"no shipped model named {missing}; shipped: {', '.join(shipped) or 'none'}")
        shipped = {s: shipped[s] for s in styles}
    found = dict(shipped)
    if models_dir:
        folder = Path(models_dir).expanduser()
        if not folder.is_dir():
            raise NotFound(f"models_dir={folder} is not a folder of checkpoints (*.pt, *.ckpt)")
        for path in sorted([*folder.glob("*.pt"), *folder.glob("*.ckpt")]):
            found[path.stem] = path  # a file in models_dir overrides a shipped model of the same name
    bad = [name for name in found if not STYLE_NAME.match(name)]
    if bad:
        raise BadValue(f"style names must be letters, digits, '_', '-', '.': rename {bad}")
    if not found:
        raise NotFound("no models to serve: ship one in nst_lightning/pretrained/ or set models_dir=FOLDER")
    return found


def sample_photo(size: int) -> Image.Image:
    """A deterministic colourful test picture (gradients, a disc and bars) used to render thumbnails."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((xx - 0.35) ** 2 + (yy - 0.4) ** 2) < 0.05
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.8 - 0.5 * xx * yy], axis=-1)
    img[disc] = (0.95, 0.8, 0.2)
    img[int(size * 0.7) :, :: max(1, size // 8)] = (0.1, 0.2, 0.5)
    return Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8))


def style_painting(name: str) -> Path | None:
    """The style's painting if it is on this machine (``$NST_DATA_DIR/styles/<name>.*``), else None."""
    data = os.environ.get("NST_DATA_DIR")
    if not data:
        return None
    for path in sorted((Path(data) / "styles").glob(f"{name}.*")):
        if is_image_file(path):
            return path
    return None


def make_thumbnail(model: StyleModel, size: int) -> bytes:
    """JPEG bytes: the style painting when available, else the sample photo stylized by the model."""
    painting = style_painting(model.style or model.name)
    if painting is not None:
        with Image.open(painting) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((size, size))
    else:
        thumb = stylize_image(model.runner, sample_photo(size), StylizeOptions(style=model.style))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def find_style(styles: dict[str, StyleModel], name: str) -> StyleModel | None:
    """The style a request names: a served key (``starry_night``, ``multistyle``, ``multistyle.the_wave``), or a
    bare style name that exactly one served multi-style network holds (``the_wave``); None for neither."""
    if name in styles:
        return styles[name]
    held = [m for m in styles.values() if m.network_styles and m.name == f"{m.network}.{name}"]
    return held[0] if len(held) == 1 else None


def load_styles(
    styles: list[str] | None,
    models_dir: str | None,
    runtime: str,
    device: str,
    thumbnail_size: int,
    fast_runtime: str | None = None,
    fast_models_dir: str | None = None,
) -> dict[str, StyleModel]:
    """Load every style once (the service calls this at startup), with its fast variant: the student in
    ``fast_models_dir`` named like the style if there is one, else (for a shipped network) its shipped student
    (``nst_lightning/pretrained/fast/``), else the network in ``fast_runtime``, else none."""
    dev = resolve_device(device)
    shipped_students = pretrained_students()
    students: dict[str, Path] = {}
    if fast_models_dir:
        folder = Path(fast_models_dir).expanduser()
        if not folder.is_dir():
            raise NotFound(f"fast_models_dir={folder} is not a folder of checkpoints (*.pt, *.ckpt)")
        students = {p.stem: p for p in sorted([*folder.glob("*.pt"), *folder.glob("*.ckpt")])}
    loaded = {}
    for name, path in find_checkpoints(styles, models_dir).items():
        runner = load_runner(path, runtime, dev)
        if name not in students and name in shipped_students and path.parent == PRETRAINED_DIR:
            students[name] = shipped_students[name]  # a shipped student only ever stands in for its own teacher
        fast_runner: Runner | None = None
        if name in students:
            fast_runner = load_runner(students[name], runtime, dev)
        elif fast_runtime == "onnxruntime_int8" and getattr(runner, "model_bytes", None):
            fast_runner = runner.to_int8()  # type: ignore[attr-defined]  # the ONNX graph is exported once
        elif fast_runtime:
            fast_runner = load_runner(path, fast_runtime, dev)
        own = list(getattr(runner, "style_names", []))
        own = own if len(own) > 1 else []
        common = dict(runner=runner, source=str(path), network=name, network_styles=own, fast=fast_runner)
        entries = [StyleModel(name=name, **common)]  # type: ignore[arg-type]
        entries += [StyleModel(name=f"{name}.{s}", style=s, **common) for s in own]  # type: ignore[arg-type]
        for model in entries:
            model.thumbnail = make_thumbnail(model, thumbnail_size)
            loaded[model.name] = model
        fast = getattr(fast_runner, "name", "none") if name not in students else f"student {students[name]}"
        log.info("loaded style %s from %s (runtime=%s, fast=%s, device=%s%s)", name, path, runtime, fast, dev,
                 f"; styles {', '.join(own)}" if own else "")  # fmt: skip
    return loaded
