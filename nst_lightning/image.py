"""The ground floor every module may use: image files, suffixes, sizes, pixel conversion, colour, digests.

Tensors are C×H×W or B×C×H×W, RGB, float in [0, 1] (uint8 in [0, 255] where named).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_lightning.errors import NotFound, TooLarge, Unreadable, UnsupportedFormat

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
NO_ALPHA_SUFFIXES = (".jpg", ".jpeg", ".bmp")
# Images above this many pixels are refused before decoding (8192×8192; Pillow's own limit is 89 M, with an
# error above 179 M). Tiled inference keeps network memory bounded, but the decoded image and the output
# still take about 12 bytes per pixel.
DEFAULT_MAX_PIXELS = 8192 * 8192
# Pillow formats that are decoded at all (``Image.open(..., formats=)``: no other plugin parses the bytes).
# JPEG includes MPO, the multi-picture JPEG that many phones and cameras write (its first picture is read);
# HEIF is added when pillow-heif is installed.
READ_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ImageSource = str | Path | bytes | BinaryIO
# ImageNet statistics: the input normalisation of VGG-19 and of timm's pretrained encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

log = logging.getLogger(__name__)

try:  # optional: HEIF/HEIC photos (pip install pillow-heif)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    READ_FORMATS = (*READ_FORMATS, "HEIF")
except ImportError:
    pass


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path, *, recursive: bool) -> list[Path]:
    """Image files in ``folder`` (and in its subfolders when ``recursive``), sorted so every machine sees one order.

    An empty list when the folder holds none or does not exist (the caller words that error for its user).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_image_file(p))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def megapixels(pixels: int) -> str:
    """``pixels`` in megapixels for a message: one decimal, or two significant digits below 0.1 (never "0.0")."""
    return f"{pixels / 1e6:.1f}" if pixels >= 100_000 else f"{pixels / 1e6:.2g}"


def check_pixel_count(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Refuse a (width, height) above ``max_pixels`` (``None``: no limit of ours, Pillow's still applies)."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise TooLarge(
            f"{name} is {width}×{height} = {megapixels(width * height)} megapixels, above the limit of "
            f"{megapixels(max_pixels)} megapixels (max_pixels={max_pixels}); shrink it first or raise max_pixels"
        )


def open_image(
    src: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_size: int | None = None
) -> Image.Image:
    """Decode an image file (path, bytes or binary file object) as an RGB or RGBA PIL image.

    Only the formats in :data:`READ_FORMATS` are tried. The pixel count is checked against ``max_pixels`` from
    the header, before anything is decoded (a decompression bomb is refused without allocating it). EXIF
    orientation is applied; 16-bit and float images are scaled to 8 bits (not clipped); transparency becomes an
    alpha channel (RGBA).

    With ``max_size``, an image whose longest side is at least twice ``max_size`` is decoded at reduced size
    first (JPEG: the decoder's own 1/2, 1/4, 1/8 scaling; others: a box-filter ``reduce`` by a whole factor,
    strip by strip for modes that need a conversion first), keeping its longest side at or above ``max_size``;
    the caller's resize to ``max_size`` then starts from a small image. Peak memory is then the decoded file in
    its own mode plus the reduced copy, never a float copy of the full image.

    Raises:
        NotFound: no such file. UnsupportedFormat: a folder, or not one of ``READ_FORMATS``. TooLarge: too many
            pixels. Unreadable: empty, truncated, corrupt or no pixels (all are :class:`NSTError`).
    """
    name = str(src) if isinstance(src, (str, Path)) else "the image"
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise NotFound(f"image file not found: {path}")
        if path.is_dir():
            raise UnsupportedFormat(f"expected an image file but got a folder: {path}")
    fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours (checked below, before decoding) is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp, formats=READ_FORMATS) as img:  # lazy: only the header has been read here
                check_pixel_count(img.size, max_pixels, name)
                out = to_rgb_or_rgba(_decode_reduced(img, max_size))
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{name} has too many pixels to be decoded safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedFormat(
            f"cannot read {name}: it is not an image in one of the formats read here ({', '.join(READ_FORMATS)})"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise Unreadable(f"cannot read {name} as an image ({exc}); is it a valid jpg/png/webp file?") from exc
    if out.width == 0 or out.height == 0:
        raise Unreadable(f"image {name} has no pixels ({out.width}×{out.height})")
    return out


_STRIP_ROWS = 64  # output rows per strip when a mode is converted strip by strip before ``reduce``


def reduce_factor(size: tuple[int, int], max_size: int | None) -> int:
    """The largest whole factor that keeps the longest side of ``size`` (width, height) at or above ``max_size``."""
    return 1 if max_size is None or max_size < 1 else max(1, max(size) // max_size)


def _decode_reduced(img: Image.Image, max_size: int | None) -> Image.Image:
    """Decode an opened image (header read) upright, reduced by :func:`reduce_factor` when it is 2 or more."""
    factor = reduce_factor(img.size, max_size)
    if factor >= 2 and img.format in ("JPEG", "MPO"):
        img.draft(None, (-(-img.width // factor), -(-img.height // factor)))  # scaled DCT: never below that
        factor = reduce_factor(img.size, max_size)  # draft changed img.size to what the decoder will give
    img.load()
    if factor >= 2:
        reduced = _reduce(img, factor)
        reduced.info = dict(img.info)  # the EXIF / XMP orientation, for the transpose below
        img = reduced
    return ImageOps.exif_transpose(img)  # upright, with the orientation tag removed (applied once only)


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """Box-filter ``img`` down by ``factor``; modes ``reduce`` cannot take are converted strip by strip."""
    target = {"1": "L", "P": "RGBA" if "transparency" in img.info else "RGB"}.get(img.mode)
    if img.mode.startswith("I;16"):
        target = "I"
    if target is None:
        return img.reduce(factor)
    out = Image.new(target, (-(-img.width // factor), -(-img.height // factor)))
    step = _STRIP_ROWS * factor
    for top in range(0, img.height, step):
        strip = img.crop((0, top, img.width, min(img.height, top + step))).convert(target)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def open_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as an RGB PIL image (see :func:`open_image`; any alpha channel is dropped)."""
    return open_image(path, max_pixels).convert("RGB")


def to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Any PIL mode → RGB, or RGBA when it has transparency. 16-bit/32-bit/float modes are rescaled to 8 bits."""
    if img.mode in ("RGB", "RGBA"):
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), img.mode), mode="L").convert("RGB")
    if img.mode in ("LA", "La", "PA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    return img.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Single-channel 16-bit (``I;16*``, ``I``: 0..65535) or float (``F``: 0..1, else 0..max) → uint8.

    Integer images are rounded in integer arithmetic (v·255/65535 = v/257, never a tie) and floats stay float32:
    no float64 copy of a large image.
    """
    if mode == "F":
        values = np.nan_to_num(array.astype(np.float32, copy=False))
        top = max(1.0, float(values.max(initial=0.0)))
        return np.clip(values * np.float32(255.0 / top) + np.float32(0.5), 0, 255).astype(np.uint8)
    values = np.clip(array, 0, 65535).astype(np.uint32)
    return ((values * 2 + 257) // 514).astype(np.uint8)


def split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Image → (RGB image, alpha channel as an ``L`` image or ``None``); modes as in :func:`to_rgb_or_rgba`."""
    img = to_rgb_or_rgba(img)
    if img.mode == "RGBA":
        return img.convert("RGB"), img.getchannel("A")
    return img, None


def save_pil(img: Image.Image, path: str | Path) -> Path:
    """Save an RGB or RGBA PIL image (format from the suffix), creating folders.

    Formats without alpha (JPEG, BMP) get the RGB channels only, with a warning; use PNG or WebP to keep it.
    """
    path = Path(path)
    check_output_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.mode == "RGBA" and path.suffix.lower() in NO_ALPHA_SUFFIXES:
        log.warning("%s cannot store transparency: saved without alpha (use a .png output to keep it)", path)
        img = img.convert("RGB")
    img.save(path)
    return path


def check_output_suffix(path: Path) -> None:
    """Refuse an output file name whose suffix is not an image format we write."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UnsupportedFormat(
            f"unsupported output suffix {path.suffix!r} in {path}; use one of {', '.join(IMAGE_SUFFIXES)}"
        )


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (RGB, or any mode: see :func:`to_rgb_or_rgba`; alpha dropped) → 3×H×W float tensor in [0, 1]."""
    array = np.array(to_rgb_or_rgba(img).convert("RGB"), dtype=np.uint8)
    return to_float(torch.from_numpy(array).permute(2, 0, 1).contiguous())


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] → float32 in [0, 1]; a float tensor as float32 (same shape)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """3×H×W (or 1×3×H×W) tensor in [0, 1] → RGB PIL image (values clamped)."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def fit_size(width: int, height: int, long_side: int | None, enlarge: bool = False) -> tuple[int, int]:
    """(width, height) scaled so the longest side is ``long_side`` pixels, aspect ratio kept (each side ≥ 1).

    Never enlarged unless ``enlarge``: a smaller image keeps its size. ``long_side=None``: unchanged.
    """
    if long_side is None or (max(width, height) <= long_side and not enlarge):
        return width, height
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to_long_side(img: Image.Image, size: int) -> Image.Image:
    """Resize (up or down) so the longest side is exactly ``size`` pixels, keeping the aspect ratio."""
    new = fit_size(img.width, img.height, size, enlarge=True)
    return img.resize(new, Image.Resampling.LANCZOS if size < max(img.size) else Image.Resampling.BICUBIC)


def load_image(path: str | Path, long_side: int | None = None) -> torch.Tensor:
    """Load an image file as a 1×3×H×W tensor in [0, 1], optionally resized to a given longest side."""
    img = open_rgb(path)
    if long_side is not None:
        img = resize_to_long_side(img, long_side)
    return pil_to_tensor(img).unsqueeze(0)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Save a 3×H×W or 1×3×H×W tensor in [0, 1] to ``path`` (format from the suffix), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(image).save(path)
    return path


def resize_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a B×C×H×W tensor to ``size`` = (H, W)."""
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


# ITU-R BT.601 YIQ, as used by Gatys et al. (2016) for luminance-only transfer.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB → B×3×H×W YIQ."""
    matrix = _RGB_TO_YIQ.to(image.device, image.dtype)
    return torch.einsum("ij,bjhw->bihw", matrix, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """B×3×H×W YIQ → B×3×H×W RGB (not clamped)."""
    matrix = torch.linalg.inv(_RGB_TO_YIQ).to(image.device, image.dtype)
    return torch.einsum("ij,bjhw->bihw", matrix, image)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the content's chroma (I, Q) and take the stylized image's luminance (Y).

    Both inputs are B×3×H×W in [0, 1]; ``content`` is resized to the stylized size if needed.
    """
    if content.shape[-2:] != stylized.shape[-2:]:
        content = resize_tensor(content, stylized.shape[-2:])
    y = rgb_to_yiq(stylized)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0, 1)
