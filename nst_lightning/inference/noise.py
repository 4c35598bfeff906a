"""Seeded input noise: the inference-side cure for striped skies.

A transformation network is (away from the borders) translation-equivariant, so an input region that is constant
along x can only give an output that is constant along x: a smooth sky comes out as horizontal bands. A little
Gaussian noise added to the input breaks that symmetry and the network paints its texture (swirls, strokes)
there instead; ``docs/results/stripes_noise.md`` holds the measurements behind the defaults below.

The noise is a pure function of the random seed and the pixel position: it is drawn in fixed blocks of
``BLOCK`` pixels, each from its own generator seeded by (seed, block row, block column). Any window of an image
therefore gets exactly the noise the whole image would get there, so tiles agree with each other and with the
untiled result, and every frame of a video of one size gets the same field (no flicker).

With ``smooth_only`` the noise is scaled by a mask that is 1 where the photo is smooth (low local gradient of the
luma, averaged over a window) and falls to 0 on edges and texture, which the network already answers with texture.

Tensors are float B×3×H×W images in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nst_lightning.errors import NSTError

# The defaults of stylize(), stylize.py and the service (measured: docs/results/stripes_noise.md).
DEFAULT_SIGMA = 0.04
DEFAULT_SMOOTH_ONLY = True
DEFAULT_SEED = 0

BLOCK = 64  # pixels per side of each independently seeded block of the noise field
SMOOTH_RADIUS = 4  # the local gradient is averaged over (2r+1)² pixels, and the mask blurred over the same
SMOOTH_GRADIENT = 0.02  # mean |∇luma| per pixel at which the mask has fallen to exp(-1) (a sky: ≈ 0.002-0.01)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputNoise:
    """Gaussian noise of standard deviation ``sigma`` (in [0, 1] image units) added to the network's input.

    Attributes:
        sigma: noise strength; 0 turns it off.
        smooth_only: scale the noise by the smoothness mask (only smooth regions such as skies get it).
        seed: the field's random seed (same seed and size → the same noise).
    """

    sigma: float = DEFAULT_SIGMA
    smooth_only: bool = DEFAULT_SMOOTH_ONLY
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and 0 <= s <= 1):
            raise NSTError(f"input_noise must be a noise strength between 0 and 1 (0 = off), got {s!r}")

    @property
    def enabled(self) -> bool:
        return self.sigma > 0

    def add(self, image: torch.Tensor, y0: int = 0, x0: int = 0, context: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` plus the noise of its window.

        Args:
            image: float B×3×h×w, the window of a larger image whose top-left pixel is at (``y0``, ``x0``)
                (0, 0 for a whole image).
            context: the whole image (B×3×H×W, uint8 or float) the window was cut from, so that the smoothness mask
                near the window's edges sees the same neighbours as in the whole image (tiles agree); ``None``: the
                window is the whole image.

        Returns:
            float B×3×h×w (not clamped: the network sees values slightly outside [0, 1]).
        """
        if not self.enabled:
            return image
        h, w = image.shape[-2:]
        noise = noise_window(self.seed, y0, y0 + h, x0, x0 + w, image.device) * self.sigma
        if self.smooth_only:
            noise = noise * smooth_mask_window(image if context is None else context, y0, y0 + h, x0, x0 + w).to(
                image.device
            )
        return image.float() + noise


def noise_window(seed: int, y0: int, y1: int, x0: int, x1: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The unit Gaussian noise field of ``seed`` over rows [y0, y1) and columns [x0, x1): 1×3×(y1-y0)×(x1-x0).

    Built from ``BLOCK``-pixel blocks, each drawn from a CPU generator seeded by (seed, block row, block column),
    so it is the same on every device and for every way of cutting an image into windows.
    """
    by0, by1 = y0 // BLOCK, (y1 - 1) // BLOCK + 1
    bx0, bx1 = x0 // BLOCK, (x1 - 1) // BLOCK + 1
    field = torch.empty(1, 3, (by1 - by0) * BLOCK, (bx1 - bx0) * BLOCK)
    gen = torch.Generator()
    for by in range(by0, by1):
        for bx in range(bx0, bx1):
            gen.manual_seed(_block_seed(seed, by, bx))
            r, c = (by - by0) * BLOCK, (bx - bx0) * BLOCK
            field[0, :, r : r + BLOCK, c : c + BLOCK] = torch.randn(3, BLOCK, BLOCK, generator=gen)
    oy, ox = y0 - by0 * BLOCK, x0 - bx0 * BLOCK
    return field[..., oy : oy + y1 - y0, ox : ox + x1 - x0].to(device)


def _block_seed(seed: int, row: int, col: int) -> int:
    # distinct 63-bit seeds for distinct (seed, row, col) up to 2^20 blocks per axis (64 Mpx per side)
    return ((seed * 1_000_003 + row) << 20 | col) & 0x7FFF_FFFF_FFFF_FFFF


def smooth_mask(image: torch.Tensor) -> torch.Tensor:
    """B×3×H×W (uint8 or float) → B×1×H×W in [0, 1]: 1 where the luma is locally smooth, → 0 on edges/texture.

    The luma's gradient magnitude (central differences) is averaged over a (2r+1)² window, mapped through
    ``exp(-(g / SMOOTH_GRADIENT)²)`` and blurred over the same window so the noise fades in softly.
    """
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    luma = (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    p = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    grad = torch.sqrt(
        ((p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2) ** 2 + ((p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2) ** 2
    )
    mask = torch.exp(-((_box(grad) / SMOOTH_GRADIENT) ** 2))
    return _box(mask)


def _box(x: torch.Tensor, r: int = SMOOTH_RADIUS) -> torch.Tensor:
    """B×1×H×W mean over (2r+1)² windows (replicate padding), same shape."""
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)


def smooth_mask_window(image: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """:func:`smooth_mask` of the whole ``image`` (B×3×H×W) cropped to a window, computed from the window plus
    a margin only (B×1×(y1-y0)×(x1-x0), float32, on the image's device)."""
    margin = 2 * SMOOTH_RADIUS + 1
    height, width = image.shape[-2:]
    ty0, ty1, tx0, tx1 = max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin), min(width, x1 + margin)
    mask = smooth_mask(image[..., ty0:ty1, tx0:tx1])
    return mask[..., y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]


def resolve_input_noise(
    strength: float | InputNoise = DEFAULT_SIGMA, smooth_only: bool = DEFAULT_SMOOTH_ONLY
) -> InputNoise:
    """The noise an inference call uses: a strength (0 = off) with ``smooth_only``, or an :class:`InputNoise` as
    given.

    Raises:
        NSTError: a strength outside [0, 1].
    """
    if isinstance(strength, InputNoise):
        return strength
    return InputNoise(strength, bool(smooth_only))
