"""Image loading, saving, resizing and colour conversion.

Tensors are C×H×W or B×C×H×W, RGB, float in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from nst_lightning.errors import NSTError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an RGB PIL image, honouring its EXIF orientation.

    Raises:
        NSTError: the file is missing, empty, not an image, truncated, or has no pixels.
    """
    path = Path(path)
    if not path.exists():
        raise NSTError(f"image file not found: {path}")
    if path.is_dir():
        raise NSTError(f"expected an image file but got a folder: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise NSTError(f"cannot read {path} as an image ({exc}); is it a valid jpg/png/webp file?") from exc
    if rgb.width == 0 or rgb.height == 0:
        raise NSTError(f"image {path} has no pixels ({rgb.width}×{rgb.height})")
    return rgb


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → 3×H×W float tensor in [0, 1]."""
    array = np.array(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255.0)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """3×H×W (or 1×3×H×W) tensor in [0, 1] → RGB PIL image (values clamped)."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def scale_to_max_size(img: Image.Image, max_size: int | None) -> Image.Image:
    """Shrink so the longest side is at most ``max_size`` pixels, keeping the aspect ratio."""
    if max_size is None or max(img.size) <= max_size:
        return img
    scale = max_size / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def resize_to_long_side(img: Image.Image, size: int) -> Image.Image:
    """Resize (up or down) so the longest side is exactly ``size`` pixels, keeping the aspect ratio."""
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


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
