"""The files a client uploads: the form's file parts, their content type and size, and the image decoded by the
library's own reader (:func:`nst_lightning.image.open_image`, the one ``stylize.py`` uses), so an upload gives
the same pixels as the same file given to ``stylize.py``.

Every problem raises a kind of :class:`~nst_lightning.errors.NSTError` (the service answers with its status,
:mod:`nst_lightning.serve.errors`); no pixels are decoded before the pixel count is known to be within the limit,
and only the formats the library reads are parsed at all.
"""

from __future__ import annotations

import io

from PIL import Image

from nst_lightning.errors import BadValue, TooLarge, Unreadable, UnsupportedFormat
from nst_lightning.image import READ_FORMATS, open_image
from nst_lightning.serve.form import FilePart, Form
from nst_lightning.serve.guard import shorten

UNREDUCED_COST = {"WEBP": 4}  # formats without reduced-size decoding: each pixel counts this many against max_pixels


def image_part(form: Form, name: str, max_mb: float, missing: str) -> FilePart:
    """The form's file part ``name``, an image content type and at most ``max_mb`` MB long.

    Raises:
        BadValue: no such file part (``missing`` says what to send). UnsupportedFormat: not an image content
            type. TooLarge: longer than ``max_mb``.
    """
    part = form.files.get(name)
    if part is None:
        raise BadValue(missing)
    check_content_type(part.content_type, name)
    if len(part.data) > int(max_mb * 1024 * 1024):
        raise TooLarge(f"the {name.replace('_', ' ')} is larger than {max_mb:g} MB")
    return part


def check_content_type(content_type: str | None, name: str = "image") -> None:
    """Only image uploads (or untyped binary, as some clients send) are accepted.

    Raises:
        UnsupportedFormat: any other content type.
    """
    ctype = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise UnsupportedFormat(f"the {name} field must be an image (png, jpeg, webp), not {shorten(ctype)}")


def decode_upload(data: bytes, max_pixels: int, max_size: int | None) -> Image.Image:
    """Upload bytes → RGB or RGBA image, decoded at reduced size for ``max_size`` (see ``open_image``).

    Raises:
        Unreadable: empty, truncated or corrupt. UnsupportedFormat: not a format we read. TooLarge: too many pixels.
    """
    if not data:
        raise Unreadable("the uploaded image is empty")
    _check_unreduced(data, max_pixels)
    try:
        return open_image(data, max_pixels=max_pixels, max_size=max_size)
    except TooLarge as exc:
        raise TooLarge(str(exc).replace("the image", "the upload", 1)) from None
    except UnsupportedFormat:
        raise UnsupportedFormat(f"the upload is not an image in a format we read ({', '.join(READ_FORMATS)})") from None
    except Unreadable as exc:
        raise Unreadable(f"the upload is not an image we can read, or it is truncated or corrupt: {exc}") from None


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
        raise TooLarge(f"the {fmt} upload has {pixels / 1e6:.1f} megapixels; {fmt} is decoded at full size, "
                       f"so at most {taken:.1f} are taken (send a JPEG or PNG)")  # fmt: skip
