"""Style images → Gram targets: download a style image if needed, compute its Grams once and cache them.

Preset lookup (``conf/style/<name>.yaml``) belongs to the application layer (:mod:`nst_lightning.cli.presets`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from nst_lightning.download import download
from nst_lightning.errors import NSTError
from nst_lightning.image import file_digest, load_image
from nst_lightning.losses.perceptual import PerceptualLoss, blend_grams

_MEMORY_CACHE: dict[str, dict[str, torch.Tensor]] = {}


def resolve_style_image(image: str | None, url: str | None = None, sha256: str | None = None) -> Path:
    """Return the path of a style image, downloading and verifying it from ``url`` if it is missing.

    Args:
        image: where the image is (or should be downloaded to).
        url: public download address of the preset's image, or None for a user-supplied file.
        sha256: expected checksum of the downloaded file.

    Raises:
        NSTError: the file is missing and cannot be downloaded; the message says where to put it.
    """
    if not image:
        raise NSTError("no style image given: use style=<preset> or style.image=PATH")
    path = Path(image).expanduser()
    if path.exists():
        return path
    if not url:
        raise NSTError(f"style image not found: {path}")
    try:
        return download(url, path, checksum=sha256)
    except NSTError as exc:
        raise NSTError(
            f"style image {path.name} is not at {path} and could not be downloaded from {url}. "
            f"Copy the file to {path}, or set NST_DATA_DIR / paths.data_dir to a folder whose styles/ "
            f"holds it, or use style.image=PATH. ({exc})"
        ) from exc


def default_cache_dir() -> Path:
    """``$NST_CACHE_DIR``, else ``$XDG_CACHE_HOME/nst_lightning``, else ``~/.cache/nst_lightning``."""
    if os.environ.get("NST_CACHE_DIR"):
        return Path(os.environ["NST_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "nst_lightning"


def gram_cache_key(image_path: Path, size: int | None, loss: PerceptualLoss) -> str:
    """Key from the image bytes, the resize, the layers and the loss network that made the Grams."""
    parts = [
        file_digest(image_path),
        str(size),
        ",".join(loss.style_layers),
        loss.vgg.weights,
        loss.vgg.pooling,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def style_grams(
    image_path: str | Path, size: int | None, loss: PerceptualLoss, cache_dir: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Gram matrices ({layer: 1×C×C}, fp32, CPU) of a style image, computed once and cached.

    Cached in memory for the process and on disk under ``cache_dir`` (default :func:`default_cache_dir`),
    keyed by the image's sha256, the resize, the style layers and the VGG weights.
    """
    image_path = Path(image_path)
    key = gram_cache_key(image_path, size, loss)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    cache_file = Path(cache_dir or default_cache_dir()) / "grams" / f"{key}.pt"
    grams = None
    if cache_file.exists():
        try:
            grams = torch.load(cache_file, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt cache entry is recomputed, never fatal
            grams = None
    if grams is None:
        grams = {k: v.cpu() for k, v in loss.compute_grams(load_image(image_path, size)).items()}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            torch.save(grams, tmp)
            tmp.replace(cache_file)
        except OSError:
            pass  # a read-only cache location only costs recomputation
    _MEMORY_CACHE[key] = grams
    return grams


StyleSource = tuple[str | Path, int | None]
"""A style image and the longest side it is resized to before its Grams are computed (None: as is)."""


def set_style_targets(
    loss: PerceptualLoss,
    sources: Sequence[StyleSource],
    weights: Sequence[float] | None = None,
    cache_dir: str | Path | None = None,
) -> None:
    """Compute (or read from the cache) the Grams of one or more style images and install them in ``loss``.

    The one path from "style image" to "Gram targets" for training, the baseline and evaluation. Several
    sources are blended as a weighted average of their Grams (``weights`` default to equal).
    """
    if not sources:
        raise NSTError("no style image given: use style=<preset> or style.image=PATH")
    grams = [style_grams(path, size, loss, cache_dir) for path, size in sources]
    loss.set_style_grams(grams[0] if len(grams) == 1 else blend_grams(grams, weights or [1.0] * len(grams)))


def set_style_bank_targets(
    loss: PerceptualLoss,
    sources: Sequence[StyleSource],
    term_weights: Sequence[Mapping[str, float]] | None = None,
    cache_dir: str | Path | None = None,
) -> None:
    """The targets of several styles side by side (a multi-style network), each style's Grams cached as for one
    style; ``term_weights``: per style, its content/style/TV weights (see :meth:`PerceptualLoss.set_style_bank`)."""
    if not sources:
        raise NSTError("no style images given: list them with styles=[NAME, ...]")
    loss.set_style_bank([style_grams(path, size, loss, cache_dir) for path, size in sources], term_weights)
