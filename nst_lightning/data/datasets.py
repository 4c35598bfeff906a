"""Image datasets for training: any folder tree of jpg/png/webp photos."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from nst_lightning.errors import NSTError
from nst_lightning.image import list_images, open_rgb, pil_to_tensor

log = logging.getLogger(__name__)


def training_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted).

    Raises:
        NSTError: the folder does not exist or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise NSTError(
            f"training image folder not found: {root}. Set data.root=PATH or NST_DATA_DIR (its train/ "
            "subfolder is the default), or use data=coco to download COCO."
        )
    files = list_images(root, recursive=True)
    if not files:
        raise NSTError(f"no jpg/png/webp images found under {root}")
    return files


def clamp_unit(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1]: antialiased resizing of float images overshoots by rounding (1.0000001 next to 1.0)."""
    return image.clamp_(0.0, 1.0)


class RandomSquareCrop(torch.nn.Module):
    """A random square crop resized to ``size``, never magnified more than ``max_upscale`` (3×H×W → 3×size×size).

    The crop side s is drawn log-uniformly from [max(√(min_scale·H·W), size / max_upscale), min(H, W)] (so its
    area is at least ``min_scale`` of the photo, as in RandomResizedCrop, but without aspect-ratio distortion).
    With ``max_upscale=1`` crops are only ever downscaled, unless the photo's short side is below ``size``.
    """

    def __init__(self, size: int, min_scale: float = 0.25, max_upscale: float = 1.0) -> None:
        super().__init__()
        if max_upscale <= 0:
            raise NSTError(f"data.max_upscale must be positive, got {max_upscale}")
        self.size, self.min_scale, self.max_upscale = size, min_scale, max_upscale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        hi = min(h, w)
        lo = min(hi, max(math.sqrt(self.min_scale * h * w), self.size / self.max_upscale))
        side = round(math.exp(random.uniform(math.log(lo), math.log(hi))))
        top, left = random.randint(0, h - side), random.randint(0, w - side)
        crop = image[..., top : top + side, left : left + side]
        return v2.functional.resize(crop, [self.size, self.size], antialias=True)


def train_transform(
    image_size: int, min_scale: float = 0.25, hflip: bool = True, max_upscale: float | None = None
) -> v2.Compose:
    """Random square crop to ``image_size`` and an optional horizontal flip (3×H×W float in [0, 1] → 3×S×S in
    [0, 1]). Draws from torch's and Python's global generators: seeded by ``seed_everything`` in training.

    ``max_upscale=None``: torchvision's RandomResizedCrop (area ≥ ``min_scale``, aspect ratio 3/4–4/3 stretched
    to a square); a number: :class:`RandomSquareCrop`, which never magnifies a crop more than that.
    """
    if max_upscale is None:
        steps: list = [v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True)]
    else:
        steps = [RandomSquareCrop(image_size, min_scale, max_upscale)]
    steps.append(v2.Lambda(clamp_unit))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def eval_transform(image_size: int) -> v2.Compose:
    """Deterministic resize (shorter side) + centre crop to ``image_size`` (values stay in [0, 1])."""
    return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size), v2.Lambda(clamp_unit)])


class ImageFolderDataset(Dataset):
    """Photos under a folder as 3×S×S float tensors in [0, 1].

    Unreadable or corrupt files are skipped: the dataset returns another image in their place and counts
    them; :attr:`skipped` lists the bad files (a warning is logged once per file).
    """

    def __init__(self, files: list[Path], transform: v2.Compose) -> None:
        if not files:
            raise NSTError("the dataset has no images")
        self.files = list(files)
        self.transform = transform
        self.skipped: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path, seed: int | None = None) -> torch.Tensor:
        img: Image.Image = open_rgb(path)
        if seed is None:
            return self.transform(pil_to_tensor(img))
        # The random transforms draw from torch's (torchvision) and Python's (RandomSquareCrop) global RNGs:
        # seed both, then restore them, so that the crop of this photo depends on ``seed`` only (exact resume,
        # see nst_lightning.data.sampler), not on the worker process or on what ran before.
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                return self.transform(pil_to_tensor(img))
        finally:
            random.setstate(py_state)

    def __getitem__(self, index: int | tuple[int, int]) -> torch.Tensor:
        """Photo ``index`` as a 3×S×S tensor; ``(index, seed)`` (from ResumableSampler) seeds its random crop."""
        index, seed = index if isinstance(index, tuple) else (index, None)
        rng = random.Random(index)
        for _ in range(20):
            path = self.files[index]
            if path not in self.skipped:
                try:
                    return self._load(path, seed)
                except NSTError as exc:
                    self.skipped.add(path)
                    log.warning("skipping unreadable training image (%d skipped so far): %s", len(self.skipped), exc)
            index = rng.randrange(len(self.files))
        raise NSTError(f"too many unreadable images in the dataset ({len(self.skipped)} skipped)")
