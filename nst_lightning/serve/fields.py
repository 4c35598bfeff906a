"""The text fields of a stylize form → one :class:`~nst_lightning.inference.StylizeOptions` and how to send the
result (:class:`Output`), for both routes.

Each option field is parsed from its text here and range-checked by ``StylizeOptions`` itself (its message is
the answer); the service adds only its own bounds: ``max_size`` (default and largest: the service's), the
service's ``tile_size`` (``tile_stats_size`` at most that), and a network input no larger than ``max_size`` when
``stroke_scale`` < 1 enlarges it.
Every problem raises :class:`~nst_lightning.errors.BadValue` (422).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nst_lightning.errors import BadValue
from nst_lightning.image import fit_size
from nst_lightning.inference import StylizeOptions
from nst_lightning.inference.options import STROKE_SCALES
from nst_lightning.inference.stylize import stroke_size
from nst_lightning.serve.guard import shorten
from nst_lightning.serve.settings import QUALITIES, ServeSettings

OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
_NUMBER, _BOOL = {"type": "number"}, {"type": "boolean"}
_FORMAT = {"format": {"type": "string", "enum": ["png", "jpeg"], "default": "png"}}


@dataclass(frozen=True)
class Output:
    """How a result is sent: ``format`` (png | jpeg) and the ``variant`` of the network that makes it (full |
    fast; ``full`` when a style has no fast variant). Both are part of the cache key."""

    format: str = "png"
    variant: str = "full"

    @property
    def media_type(self) -> str:
        return OUTPUT_FORMATS[self.format]

    @property
    def suffix(self) -> str:
        return "jpg" if self.format == "jpeg" else "png"


def form_openapi(required: list[str], fields: dict[str, Any], settings: ServeSettings) -> dict[str, Any]:
    """The ``openapi_extra`` of a stylize route whose form has ``fields``, the option fields (each with the
    default a request gets: :func:`option_defaults`) and ``format``."""
    defaults = option_defaults(settings)
    options = {name: {**f.schema, "default": defaults[name]} for name, f in OPTION_FIELDS.items()}
    schema = {"type": "object", "required": required, "properties": {**fields, **options, **_FORMAT}}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}},
        "responses": {"200": {"description": "the stylized image", "content": {"image/png": {}, "image/jpeg": {}}}},
    }


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise BadValue(f"{name} must be a number, got {shorten(raw)}") from None


def _whole(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # "²" is a digit to isdigit, not to int
        raise BadValue(f"{name} must be a whole number of pixels, got {shorten(raw)}")
    return int(raw)


def _seed(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise BadValue(f"{name} must be a whole number from 0 to 999999999, got {shorten(raw)}")
    return int(raw)


def _bool(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BadValue(f"{name} must be true or false, got {shorten(raw)}")


@dataclass(frozen=True)
class FormField:
    """One option field of both stylize forms: ``parse(name, text)`` gives its value (an empty or absent field:
    the default), ``schema`` describes it in /docs (its default is filled in by :func:`form_openapi`)."""

    parse: Callable[[str, str], Any]
    schema: Mapping[str, Any]


# The form fields that are StylizeOptions fields (the endpoints read the form themselves, to check limits in
# their own order; this table is what they parse and what /docs lists).
OPTION_FIELDS: dict[str, FormField] = {
    "strength": FormField(_number, {**_NUMBER, "minimum": 0, "maximum": 1}),
    "preserve_color": FormField(_bool, _BOOL),
    "max_size": FormField(_whole, {"type": "integer", "description": "longest output side (at most the default)"}),
    "stroke_scale": FormField(_number, {**_NUMBER, "minimum": STROKE_SCALES[0], "maximum": STROKE_SCALES[1],
                              "description": "strokes this many times larger (> 1) or finer (< 1) than learned"}),
    "input_noise": FormField(_number, {**_NUMBER, "minimum": 0, "maximum": 1,
                             "description": "input noise strength (0: off)"}),
    "input_noise_smooth_only": FormField(_bool, {**_BOOL, "description": "the input noise only where smooth"}),
    "noise_seed": FormField(_seed, {"type": "integer", "minimum": 0, "description": "seed of the input noise"}),
    "tile_overlap": FormField(_whole, {"type": "integer", "description": "pixels neighbouring tiles share (at "
                              "most tile_size / 4)"}),
    "tile_stats_size": FormField(_whole, {"type": "integer", "description": "longest side of the whole-image "
                                 "statistics pass when tiling (at most the service's tile_size)"}),
}  # fmt: skip


def stylize_options(
    fields: Mapping[str, str],
    settings: ServeSettings,
    style: str | None = None,
    style_mix: Mapping[str, float] | None = None,
) -> StylizeOptions:
    """The options of one request: the form's option fields, the service's ``tile_size``, the network's style
    (``style`` or ``style_mix``); ``max_size`` defaults to (and may not exceed) the service's.

    Raises:
        BadValue: a field that does not parse, or a value ``StylizeOptions`` or the service refuses.
    """
    values = {name: f.parse(name, raw) for name, f in OPTION_FIELDS.items() if (raw := fields.get(name, "").strip())}
    max_size = values.setdefault("max_size", settings.max_size)
    if not 1 <= max_size <= settings.max_size:
        raise BadValue(f"max_size must be between 1 and {settings.max_size} pixels, got {max_size}")
    stats_limit = settings.tile_size or settings.max_size  # the statistics pass is one more image in memory
    if values.get("tile_stats_size", 1) > stats_limit:
        raise BadValue(f"tile_stats_size must be at most {stats_limit} pixels, got {values['tile_stats_size']}")
    return StylizeOptions(**values, tile_size=settings.tile_size, style=style, style_mix=style_mix)


def option_defaults(settings: ServeSettings) -> dict[str, Any]:
    """What a request gets for each option field it leaves out (``GET /styles`` lists them for the page)."""
    base = StylizeOptions()
    return {name: settings.max_size if name == "max_size" else getattr(base, name) for name in OPTION_FIELDS}


def output(fields: Mapping[str, str], settings: ServeSettings) -> tuple[str, str]:
    """``(format, quality)`` asked for by the form (defaults: png, the service's ``quality``).

    Raises:
        BadValue: an unknown format or quality.
    """
    fmt = (fields.get("format") or "png").strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise BadValue(f"format must be png or jpeg, got {shorten(fmt)}")
    quality = (fields.get("quality") or settings.quality).strip().lower()
    if quality not in QUALITIES:
        raise BadValue(f"quality must be fast or full, got {shorten(quality)}")
    return ("jpeg" if fmt == "jpg" else fmt), quality


def check_network_size(width: int, height: int, options: StylizeOptions, limit: int) -> None:
    """A ``stroke_scale`` below 1 runs the network on an enlarged image: its longest side, for a decoded photo
    of ``width`` × ``height``, may be at most ``limit`` (the service's ``max_size``), so a request costs no more
    than the largest photo at ``stroke_scale=1``.

    Raises:
        BadValue: the network's input would be larger.
    """
    out_w, out_h = fit_size(width, height, options.max_size)
    side = max(stroke_size(out_h, out_w, options.stroke_scale))
    if side > limit:
        least = math.ceil(max(out_w, out_h) / limit * 100) / 100
        raise BadValue(
            f"stroke_scale={options.stroke_scale:g} would run the network on {side} pixels, more than the service's "
            f"max_size={limit}; use stroke_scale ≥ {least:g} or a smaller max_size"
        )


def parse_style_mix(raw: str | None, network_styles: list[str]) -> dict[str, float] | None:
    """The ``style_mix`` form field: a JSON object ``{"style": weight, ...}`` over a multi-style network's styles
    (weights ≥ 0, normalised); None when absent.

    Raises:
        BadValue: not such an object, an unknown style, a weight that is not a finite number ≥ 0, all weights 0.
    """
    if raw is None or not raw.strip():
        return None
    if not network_styles:
        raise BadValue("style_mix needs a multi-style network (GET /styles lists each network's styles)")
    try:
        mix = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes (a 4 KB "[[[[...")
        mix = None
    if not isinstance(mix, dict) or not mix:
        raise BadValue(f'style_mix must be a JSON object such as {{"{network_styles[0]}": 0.7, ...}}')
    unknown = [k for k in mix if k not in network_styles]
    bad = [k for k, v in mix.items() if not _weight(v)]
    total = 0.0 if bad else sum(float(v) for v in mix.values())
    if unknown or bad or not 0 < total < math.inf:
        raise BadValue(f"style_mix: weights ≥ 0 (not all 0) over the styles {', '.join(network_styles)}")
    return {k: float(v) / total for k, v in sorted(mix.items())}


def _weight(value: object) -> bool:
    """A usable mix weight: a finite number ≥ 0 (a 400-digit JSON integer does not fit a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and float(value) >= 0
    except OverflowError:
        return False
