"""Checks on what a client sends to ``POST /stylize``: options, content type, size and pixel count.

Every problem raises :class:`BadRequest` with an HTTP status and a message for the user; nothing here
decodes pixels before the pixel count is known to be within the limit. The pixels are decoded by the library
(:func:`nst_lightning.image.open_image`), so an upload gives the same image as ``stylize.py`` on the same file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from nst_lightning.errors import NSTError
from nst_lightning.image import open_image

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"}
OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
MIN_SIDE = 16  # the smallest max_size option (smaller images are fine: the library pads them)


class BadRequest(Exception):
    """A client error: ``status`` (4xx) and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Options:
    """Validated request options (also part of the cache key)."""

    strength: float = 1.0
    preserve_color: bool = False
    max_size: int = 1024
    format: str = "png"

    def key(self) -> dict[str, object]:
        return {"strength": self.strength, "preserve_color": self.preserve_color, "max_size": self.max_size,
                "format": self.format}  # fmt: skip


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(422, f"{name} must be true or false, got {raw!r}")


def parse_options(form: dict[str, str], max_size_limit: int) -> Options:
    """Validate the text fields of the form; ``max_size`` defaults to (and may not exceed) the service limit."""
    try:
        strength = float(form.get("strength") or 1.0)
    except ValueError:
        raise BadRequest(422, f"strength must be a number in [0, 1], got {form.get('strength')!r}") from None
    if not 0.0 <= strength <= 1.0:  # also refuses nan
        raise BadRequest(422, f"strength must be in [0, 1], got {strength}")
    raw_size = form.get("max_size") or str(max_size_limit)
    try:
        max_size = int(raw_size)
    except ValueError:
        raise BadRequest(422, f"max_size must be a whole number of pixels, got {raw_size!r}") from None
    if not MIN_SIDE <= max_size <= max_size_limit:
        raise BadRequest(422, f"max_size must be between {MIN_SIDE} and {max_size_limit} pixels, got {max_size}")
    fmt = (form.get("format") or "png").strip().lower()
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(422, f"format must be png or jpeg, got {fmt!r}")
    fmt = "jpeg" if fmt == "jpg" else fmt
    return Options(round(strength, 4), _bool("preserve_color", form.get("preserve_color") or ""), max_size, fmt)


def check_content_type(content_type: str | None) -> None:
    """Only image uploads (or untyped binary, as some clients send) are accepted."""
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise BadRequest(415, f"the image field must be an image (png, jpeg, webp), not {ctype}")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Upload bytes → an RGB image, or RGBA when it has transparency, decoded as the library decodes a file
    (:func:`nst_lightning.image.open_image`: EXIF orientation applied, 16-bit scaled, transparency as alpha),
    after checking its format and pixel count from the header.
    """
    if not data:
        raise BadRequest(400, "the uploaded image is empty")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            fmt, (width, height) = header.format, header.size
    except Image.DecompressionBombError:
        raise BadRequest(413, f"the image has too many pixels (limit {max_pixels:,})") from None
    except UnidentifiedImageError:
        raise BadRequest(400, "the upload is not an image we can read; send a png, jpeg or webp file") from None
    except Exception as exc:
        raise BadRequest(400, f"the upload is not an image we can read (png, jpeg, webp): {exc}") from None
    if fmt not in IMAGE_FORMATS:
        raise BadRequest(415, f"image format {fmt} is not supported; send png, jpeg or webp")
    if width * height > max_pixels:
        raise BadRequest(
            413, f"the image has {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,}"
        )
    try:
        return open_image(data, max_pixels)
    except NSTError as exc:  # truncated or corrupt data
        raise BadRequest(400, f"the image is truncated or corrupt and cannot be decoded: {exc}") from None


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
    bad = [k for k, v in mix.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0]
    if unknown or bad or not sum(float(v) for v in mix.values() if not isinstance(v, bool)) > 0:
        raise BadRequest(422, f"style_mix: weights ≥ 0 (not all 0) over the styles {', '.join(network_styles)}")
    total = sum(float(v) for v in mix.values())
    return {k: float(v) / total for k, v in sorted(mix.items())}
