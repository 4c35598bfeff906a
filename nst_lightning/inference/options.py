"""How to stylize: one frozen, validated value that every caller builds once and passes whole.

:class:`StylizeOptions` is what :func:`~nst_lightning.inference.stylize.stylize`, tiling, the file and folder
layer, video, ``stylize.py`` (``conf/stylize.yaml`` maps onto it with :meth:`StylizeOptions.from_mapping`) and both
service routes take. Its field defaults are the library's defaults; a bad value raises
:class:`~nst_lightning.errors.BadValue` when the value is built, before any file is read or model loaded.
Adding an option means adding a field here, its key in ``conf/stylize.yaml`` and the code that uses it.
How a network is run is the ``runtime`` field: :func:`~nst_lightning.inference.stylize.prepare_model` converts a
checkpoint, a loaded network or the zero-shot model to it once (``auto``: the fastest runtime that passes the
quality gate on this machine, :mod:`nst_lightning.export.auto`). A model that already is a runtime (an exported
file opened by :func:`nst_lightning.export.runtime.load_runtime`, as the service does) runs as it is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from nst_lightning.errors import BadValue
from nst_lightning.inference.noise import DEFAULT_SEED, DEFAULT_SIGMA, DEFAULT_SMOOTH_ONLY, InputNoise
from nst_lightning.settings import from_mapping

# Images whose longest side exceeds this many pixels are stylized in overlapping tiles (peak network memory is
# that of one tile).
DEFAULT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 128  # tiles overlap this much (or tile_size // 4) and cross-fade over its middle half
MIN_TILE = 64
DEFAULT_FLOW_SIZE = 320  # video: optical flow on frames of this longest side (a 640×360 frame: 320×180)
MIN_FLOW_SIZE = 32
STROKE_SCALES = (0.25, 8.0)  # the range of stroke_scale (the network runs on an image 4× larger to 8× smaller)
CONSISTENCY = ("flow", "none")
QUALITIES = ("full", "fast")  # fast: the style's distilled student where one is shipped (the service's quality=fast)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class StylizeOptions:
    """Everything that decides the pixels of a stylized photo or video (besides the model and the input).

    Attributes:
        strength: 1 = the network's output, 0 = the content unchanged; values in between blend linearly.
        preserve_color: keep the content's colours (the stylized luminance with the content's chroma).
        max_size: shrink so that the longest side is at most this many pixels (never enlarges); ``None``: as is.
            For a video it applies to every frame (the output video has that size).
        tile_size: stylize images whose longest side (as the network sees it) exceeds this many pixels in
            overlapping tiles of this size (peak network memory is that of one tile); ``None``: never tile.
        tile_overlap: pixels neighbouring tiles share (at most ``tile_size // 4``), cross-faded over its middle
            half; ``None``: ``min(DEFAULT_TILE_OVERLAP, tile_size // 4)``.
        tile_stats_size: longest side of the downscaled whole-image pass that gives the instance-norm layers
            their statistics when tiling (``None``: ``tile_size``).
        input_noise: strength of the seeded Gaussian noise added to the network's input (0 turns it off), so that
            smooth regions (skies) get the style's texture instead of stripes (:mod:`.noise`).
        input_noise_smooth_only: add the noise only where the photo is smooth.
        noise_seed: the noise field's seed (the same seed and size give the same noise, in every tile and frame).
        stroke_scale: paint strokes this many times larger (> 1) or finer (< 1) than the network learned: the
            network runs on the image resized by ``1 / stroke_scale`` and its result is resized back, so the
            output has the size it would have at 1.0 (the default, which changes nothing).
        style: a multi-style network's style, by name or index (``None``: its default, style 0).
        style_mix: a blend of its styles, ``{name: weight}`` (weights ≥ 0, normalised to sum 1).
        consistency: video only: ``flow`` (blend each frame with the previous output warped by optical flow) or
            ``none`` (frame by frame).
        temporal_weight: video only: share of the warped previous output, in [0, 1) (``None``: the library's
            ``TEMPORAL_WEIGHT``).
        flow_size: video only: the optical flow of ``consistency=flow`` is computed on frames shrunk to this
            longest side (``None``: at the frame's size) and scaled back up; the blend itself is at full size.
        runtime: how the network runs: ``eager`` (PyTorch), ``auto`` (the fastest runtime that passes the quality
            gate on this CPU, measured once and cached; eager on a GPU or without OpenVINO, with the reason
            logged) or a runtime name of :data:`nst_lightning.inference.runtimes.RUNTIMES` (``openvino_bf16``, ...).
        quality: ``full`` (the network) or ``fast`` (the style's shipped distilled student, where there is one;
            otherwise the network, with a logged note).
    """

    strength: float = 1.0
    preserve_color: bool = False
    max_size: int | None = None
    tile_size: int | None = DEFAULT_TILE_SIZE
    tile_overlap: int | None = None
    tile_stats_size: int | None = None
    input_noise: float = DEFAULT_SIGMA
    input_noise_smooth_only: bool = DEFAULT_SMOOTH_ONLY
    noise_seed: int = DEFAULT_SEED
    stroke_scale: float = 1.0
    style: str | int | None = None
    style_mix: Mapping[str, float] | None = field(default=None, hash=False)
    consistency: str = "flow"
    temporal_weight: float | None = None
    flow_size: int | None = DEFAULT_FLOW_SIZE
    runtime: str = "eager"
    quality: str = "full"

    def __post_init__(self) -> None:
        _check_blend(self)
        _check_tiles(self)
        _check_noise_and_strokes(self)
        _check_style_and_video(self)
        object.__setattr__(self, "runtime", _checked_runtime(self.runtime))
        if self.quality not in QUALITIES:
            raise BadValue(f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}")
        if self.style_mix is not None:  # a private copy: the value stays what it was when checked
            object.__setattr__(self, "style_mix", {str(k): float(v) for k, v in self.style_mix.items()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> StylizeOptions:
        """Build from a plain mapping (a resolved Hydra config, form fields already typed); the keys named in
        ``ignore`` belong to the caller (``input``, ``device``, ...); any other unknown key is an error.

        Raises:
            BadValue: an unknown key (named, with the known ones) or a bad value.
        """
        return from_mapping(cls, values, "stylize option", ignore=ignore)

    def replace(self, **changes: Any) -> StylizeOptions:
        """A copy with ``changes`` (validated like a new value)."""
        return dataclasses.replace(self, **changes)

    def canonical(self) -> dict[str, Any]:
        """Every field as a plain JSON-able value, in a fixed order (what a result cache keys on)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["strength"] = round(float(self.strength), 6)
        out["input_noise"] = round(float(self.input_noise), 6)
        out["stroke_scale"] = round(float(self.stroke_scale), 6)
        out["style_mix"] = dict(sorted(self.style_mix.items())) if self.style_mix else None
        return out

    @property
    def noise(self) -> InputNoise:
        """The input noise these options add (sigma 0: none)."""
        return InputNoise(float(self.input_noise), bool(self.input_noise_smooth_only), int(self.noise_seed))

    @property
    def overlap(self) -> int:
        """The tile overlap used: as given, or ``min(DEFAULT_TILE_OVERLAP, tile_size // 4)``."""
        return auto_overlap(self.tile_size or 0, self.tile_overlap)


def option_default(name: str) -> Any:
    """The default of the :class:`StylizeOptions` field ``name`` (where configs read it from).

    Raises:
        BadValue: no such field.
    """
    for f in fields(StylizeOptions):
        if f.name == name:
            return f.default
    raise BadValue(f"unknown stylize option {name!r}; known: {sorted(f.name for f in fields(StylizeOptions))}")


def auto_overlap(tile_size: int, tile_overlap: int | None) -> int:
    """The overlap used: as given, or ``min(DEFAULT_TILE_OVERLAP, tile_size // 4)``."""
    return min(DEFAULT_TILE_OVERLAP, tile_size // 4) if tile_overlap is None else tile_overlap


def _check_blend(o: StylizeOptions) -> None:
    if not _is_number(o.strength) or not (math.isfinite(o.strength) and 0.0 <= o.strength <= 1.0):
        raise BadValue(f"strength must be a number between 0 and 1 (1 = fully stylized), got {o.strength!r}")
    if not isinstance(o.preserve_color, (bool, np.bool_)):
        raise BadValue(f"preserve_color must be true or false, got {o.preserve_color!r}")
    if o.max_size is not None and not (_is_int(o.max_size) and o.max_size >= 1):
        raise BadValue(f"max_size must be a positive number of pixels (or null for the full size), got {o.max_size!r}")


def _check_tiles(o: StylizeOptions) -> None:
    if o.tile_size is not None and not (_is_int(o.tile_size) and o.tile_size >= MIN_TILE):
        raise BadValue(f"tile_size must be at least {MIN_TILE} pixels (or null: no tiling), got {o.tile_size!r}")
    if o.tile_overlap is not None and not (_is_int(o.tile_overlap) and o.tile_overlap >= 0):
        raise BadValue(f"tile_overlap must be a number of pixels ≥ 0 (or null: automatic), got {o.tile_overlap!r}")
    if o.tile_size is not None and o.tile_overlap is not None and o.tile_overlap > o.tile_size // 4:
        raise BadValue(
            f"tile_overlap={o.tile_overlap} is too large for tile_size={o.tile_size}; use at most {o.tile_size // 4}"
        )
    if o.tile_stats_size is not None and not (_is_int(o.tile_stats_size) and o.tile_stats_size >= 1):
        raise BadValue(f"tile_stats_size must be a positive number of pixels (or null), got {o.tile_stats_size!r}")


def _check_noise_and_strokes(o: StylizeOptions) -> None:
    s = o.input_noise
    if not _is_number(s) or not (math.isfinite(s) and 0 <= s <= 1):
        raise BadValue(f"input_noise must be a noise strength between 0 and 1 (0 = off), got {s!r}")
    if not isinstance(o.input_noise_smooth_only, (bool, np.bool_)):
        raise BadValue(f"input_noise_smooth_only must be true or false, got {o.input_noise_smooth_only!r}")
    if not _is_int(o.noise_seed) or o.noise_seed < 0:
        raise BadValue(f"noise_seed must be a whole number ≥ 0, got {o.noise_seed!r}")
    low, high = STROKE_SCALES
    if not _is_number(o.stroke_scale) or not (math.isfinite(o.stroke_scale) and low <= o.stroke_scale <= high):
        raise BadValue(
            f"stroke_scale must be a number between {low:g} and {high:g} (1 = the strokes the network learned, "
            f"2 = twice as large), got {o.stroke_scale!r}"
        )


def _check_style_and_video(o: StylizeOptions) -> None:
    if o.style is not None and not isinstance(o.style, (str, int)) or isinstance(o.style, bool):
        raise BadValue(f"style must be a style name or index, got {o.style!r}")
    if o.style_mix is not None:
        if not isinstance(o.style_mix, Mapping) or not o.style_mix:
            raise BadValue(f"style_mix must be a mapping {{NAME: WEIGHT, ...}}, got {o.style_mix!r}")
        if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in o.style_mix.values()):
            raise BadValue(f"style_mix weights must be numbers ≥ 0, got {dict(o.style_mix)!r}")
        if o.style is not None:
            raise BadValue("give either style or style_mix, not both")
    if o.consistency not in CONSISTENCY:
        raise BadValue(f"unknown consistency {o.consistency!r}; use one of {', '.join(CONSISTENCY)}")
    w = o.temporal_weight
    if w is not None and not (_is_number(w) and 0.0 <= w < 1.0):
        raise BadValue(f"temporal_weight must be in [0, 1) (or null: the default), got {w!r}")
    f = o.flow_size
    if f is not None and not (_is_int(f) and f >= MIN_FLOW_SIZE):
        raise BadValue(f"flow_size must be at least {MIN_FLOW_SIZE} pixels (or null: the frame's size), got {f!r}")


def _checked_runtime(runtime: Any) -> str:
    """``runtime`` as its canonical name (aliases such as ``ov`` or ``onnx`` accepted), ``auto`` or ``eager``."""
    if not isinstance(runtime, str):
        raise BadValue(f"runtime must be a runtime name, auto or eager, got {runtime!r}")
    from nst_lightning.errors import NSTError
    from nst_lightning.inference.runtimes import normalize_runtime

    try:
        return normalize_runtime(runtime) or "eager"
    except NSTError as exc:
        raise BadValue(f"{exc} (or auto)") from None
