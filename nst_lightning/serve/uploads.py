"""What a client sends to ``POST /stylize``: the options, the content type, and the image decoded by the
library's own reader (:func:`nst_lightning.image.open_image`, the one ``stylize.py`` uses), so an upload gives
the same pixels as the same file given to ``stylize.py``.

Every problem raises :class:`BadRequest` with an HTTP status and a message for the user; no pixels are
decoded before the pixel count is known to be within the limit, and only the formats the library reads are
parsed at all.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass

from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.image import READ_FORMATS, open_image
from nst_lightning.serve.errors import BadRequest
from nst_lightning.serve.guard import shorten
from nst_lightning.serve.settings import QUALITIES

OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
UNREDUCED_COST = {"WEBP": 4}  # formats without reduced-size decoding: each pixel counts this many against max_pixels

__all__ = [
    "OUTPUT_FORMATS",
    "BadRequest",
    "Options",
    "check_content_type",
    "decode_upload",
    "parse_options",
    "parse_style_mix",
]


@dataclass(frozen=True)
class Options:
    """Validated request options (also part of the cache key)."""

    strength: float = 1.0
    preserve_color: bool = False
    max_size: int = 1024
    format: str = "png"
    quality: str = "full"  # the variant that runs (``full`` when a style has no fast variant)

    def key(self) -> dict[str, object]:
        return {"strength": self.strength, "preserve_color": self.preserve_color, "max_size": self.max_size,
                "format": self.format, "quality": self.quality}  # fmt: skip


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(422, f"{name} must be true or false, got {shorten(raw)}")


def parse_options(form: dict[str, str], max_size_limit: int, quality: str = "full") -> Options:
    """Validate the text fields of the form; ``max_size`` defaults to (and may not exceed) the service limit,
    ``quality`` to the service's setting."""
    try:
        strength = float(form.get("strength") or 1.0)
    except ValueError:
        raise BadRequest(422, f"strength must be a number in [0, 1], got {shorten(form.get('strength'))}") from None
    if not 0.0 <= strength <= 1.0:  # also refuses nan
        raise BadRequest(422, f"strength must be in [0, 1], got {shorten(strength)}")
    raw_size = (form.get("max_size") or str(max_size_limit)).strip()
    if not raw_size.isdigit() or len(raw_size) > 6:
        raise BadRequest(422, f"max_size must be a whole number of pixels, got {shorten(raw_size)}")
    max_size = int(raw_size)
    if not 1 <= max_size <= max_size_limit:
        raise BadRequest(422, f"max_size must be between 1 and {max_size_limit} pixels, got {max_size}")
    fmt = (form.get("format") or "png").strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(422, f"format must be png or jpeg, got {shorten(fmt)}")
    fmt = "jpeg" if fmt == "jpg" else fmt
    quality = (form.get("quality") or quality).strip().lower()
    if quality not in QUALITIES:
        raise BadRequest(422, f"quality must be fast or full, got {shorten(quality)}")
    keep = _bool("preserve_color", form.get("preserve_color") or "")
    return Options(round(strength, 4), keep, max_size, fmt, quality)


def check_content_type(content_type: str | None) -> None:
    """Only image uploads (or untyped binary, as some clients send) are accepted."""
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise BadRequest(415, f"the image field must be an image (png, jpeg, webp), not {shorten(ctype)}")


def decode_upload(data: bytes, max_pixels: int, max_size: int) -> Image.Image:
    """Upload bytes → RGB or RGBA image, decoded at reduced size for ``max_size`` (see ``open_image``).

    Raises:
        BadRequest: empty (400), not a format we read (415), too many pixels (413), truncated or corrupt (400).
    """
    if not data:
        raise BadRequest(400, "the uploaded image is empty")
    _check_unreduced(data, max_pixels)
    try:
        return open_image(data, max_pixels=max_pixels, max_size=max_size)
    except NSTError as exc:
        message = str(exc)
        if "megapixels" in message or "too many pixels" in message:
            raise BadRequest(413, f"{message.replace('the image', 'the upload', 1)}") from None
        if "formats read here" in message:
            raise BadRequest(
                415, f"the upload is not an image in a format we read ({', '.join(READ_FORMATS)})"
            ) from None
        raise BadRequest(
            400, f"the upload is not an image we can read, or it is truncated or corrupt: {message}"
        ) from None


def _check_unreduced(data: bytes, max_pixels: int) -> None:
    """A format decoded only at full size, with copies (WebP: about 15 bytes a pixel, 4 times a PNG's), may have
    at most ``max_pixels / UNREDUCED_COST`` pixels, so its decode costs no more than the largest other upload's.
    Only the header is read here (a lazy open)."""
    try:
        with Image.open(io.BytesIO(data), formats=tuple(UNREDUCED_COST)) as img:
            fmt = str(img.format)
            cost, pixels = UNREDUCED_COST[fmt], img.width * img.height
    except Exception:  # not one of them (or unreadable): open_image decides
        return
    if pixels * cost > max_pixels:
        taken = max_pixels / cost / 1e6
        raise BadRequest(413, f"the {fmt} upload has {pixels / 1e6:.1f} megapixels; {fmt} is decoded at full size, "
                         f"so at most {taken:.1f} are taken (send a JPEG or PNG)")  # fmt: skip


def parse_style_mix(raw: str | None, network_styles: list[str]) -> dict[str, float] | None:
    """The ``style_mix`` form field: a JSON object ``{"style": weight, ...}`` over a multi-style network's styles
    (weights ≥ 0, normalised); None when absent. Raises :class:`BadRequest` (422) otherwise."""
    if raw is None or not raw.strip():
        return None
    if not network_styles:
        raise BadRequest(422, "style_mix needs a multi-style network (GET /styles lists each network's styles)")
    try:
        mix = json.loads(raw)
    except ValueError:
        mix = None
    if not isinstance(mix, dict) or not mix:
        raise BadRequest(422, f'style_mix must be a JSON object such as {{"{network_styles[0]}": 0.7, ...}}')
    unknown = [k for k in mix if k not in network_styles]
    bad = [k for k, v in mix.items() if not _weight(v)]
    total = 0.0 if bad else sum(float(v) for v in mix.values())
    if unknown or bad or not 0 < total < math.inf:
        raise BadRequest(422, f"style_mix: weights ≥ 0 (not all 0) over the styles {', '.join(network_styles)}")
    return {k: float(v) / total for k, v in sorted(mix.items())}


def _weight(value: object) -> bool:
    """A usable mix weight: a finite number ≥ 0 (a 400-digit JSON integer does not fit a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and float(value) >= 0
    except OverflowError:
        return False
