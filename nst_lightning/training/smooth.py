"""A training regulariser against stripes and hatching on smooth inputs.

Where a photo is smooth (a sky, a wall), a transformation network tends to answer with oriented texture: bands
along the direction the input is constant in, or a regular cross-hatching. Each training step can therefore also
stylize a few random smooth images (:func:`random_smooth_images`: colour ramps in random directions, random
low-frequency fields and heavily blurred training photos), with the input noise inference adds by default
(:class:`~nst_lightning.inference.noise.InputNoise`, a fresh seed each step), and penalise the oriented part of
their texture (:func:`oriented_excess`), the quantity :func:`~nst_lightning.evaluation.metrics.oriented_texture`
reports as ``stripe_rms``.

Synthetic smooth images do not cover every sky a photo holds, so each step may also look at the training photos
themselves (:func:`smoothest_windows`): in each crop the smoothest square window, weighted by how smooth it is,
and the same penalty on the network's answer there (:func:`window_excess`).

Images are float B×3×H×W in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nst_lightning.inference.noise import DEFAULT_SIGMA, DEFAULT_SMOOTH_ONLY, InputNoise, smooth_mask
from nst_lightning.losses.functional import sector_power

KINDS = ("ramp", "field", "blurred")
"""The kinds of smooth image :func:`random_smooth_images` draws, in turn."""


def _ramp(size: int, gen: torch.Generator) -> torch.Tensor:
    """1×3×size×size: a linear blend of two random colours along a random direction."""
    angle = float(torch.rand((), generator=gen)) * 2 * math.pi
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, size), torch.linspace(-0.5, 0.5, size), indexing="ij")
    t = (math.cos(angle) * xx + math.sin(angle) * yy) / math.sqrt(2) + 0.5  # in [0, 1] along the direction
    a, b = torch.rand(2, 3, 1, 1, generator=gen)
    return (a + (b - a) * t)[None]


def _field(size: int, gen: torch.Generator) -> torch.Tensor:
    """1×3×size×size: random colours on a coarse 2–5 cell grid, bicubically upsampled (a low-frequency field)."""
    cells = int(torch.randint(2, 6, (), generator=gen))
    coarse = torch.rand(1, 3, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)


def _blurred(photo: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """1×3×size×size: a random crop (half to all of each side) of a 3×h×w photo, shrunk to 4–8 px and bicubically
    enlarged (only its broad shading is left)."""
    h, w = photo.shape[-2:]
    ch, cw = (int(n * (0.5 + 0.5 * float(torch.rand((), generator=gen)))) for n in (h, w))
    y0, x0 = int(torch.randint(h - ch + 1, (), generator=gen)), int(torch.randint(w - cw + 1, (), generator=gen))
    small = int(torch.randint(4, 9, (), generator=gen))
    tiny = F.interpolate(photo[None, :, y0 : y0 + ch, x0 : x0 + cw].float(), size=(small, small), mode="area")
    return F.interpolate(tiny, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)


def random_smooth_images(count: int, size: int, photos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``count``×3×``size``×``size`` smooth images, the kinds of :data:`KINDS` in turn (the first kind drawn at
    random); ``photos`` (B×3×H×W) are the training photos the ``blurred`` ones come from."""
    first = int(torch.randint(len(KINDS), (), generator=gen))
    images = []
    for i in range(count):
        kind = KINDS[(first + i) % len(KINDS)]
        if kind == "ramp":
            images.append(_ramp(size, gen))
        elif kind == "field":
            images.append(_field(size, gen))
        else:
            pick = int(torch.randint(photos.shape[0], (), generator=gen))
            images.append(_blurred(photos[pick].detach().cpu(), size, gen))
    return torch.cat(images)


def inference_noise(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``images`` plus the input noise inference adds by default (its strength and smoothness mask), with a seed
    drawn from ``gen``, so training sees fields of the same kind but never one fixed field. B×3×H×W → same."""
    seed = int(torch.randint(2**31 - 1, (), generator=gen))
    return InputNoise(DEFAULT_SIGMA, DEFAULT_SMOOTH_ONLY, seed).add(images)


def oriented_excess(images: torch.Tensor, max_period: float = 32.0, sectors: int = 36) -> torch.Tensor:
    """Differentiable RMS luma of the oriented fine texture of B×3×H×W images → B values.

    The strongest orientation sector's power above the median sector's (:func:`sector_power`), square-rooted with
    a floor of 1e-3 RMS so the gradient stays finite on a flat image: ``stripe_rms`` of
    :func:`~nst_lightning.evaluation.metrics.oriented_texture`. Only the strongest sector is penalised, so isotropic
    texture costs little (its sectors' chance spread only); a cross-hatching loses one direction after the other.
    """
    power = sector_power(images.float(), max_period, sectors)
    excess = power.max(1).values - power.median(1).values.detach()
    return (F.relu(excess) + 1e-6).sqrt()


SKY_SMOOTHNESS = 0.5
"""Mean :func:`~nst_lightning.inference.noise.smooth_mask` above which a window counts as sky (weight 0 below,
rising linearly to 1 at a perfectly smooth window)."""


def smoothest_windows(photos: torch.Tensor, window: int) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The smoothest ``window``-px square of each of the B×3×H×W ``photos`` (by the mean of
    :func:`~nst_lightning.inference.noise.smooth_mask`, windows a quarter-window apart) → its top-left (y, x) per
    photo, and a weight per photo (B values in [0, 1]): 0 unless the window is smoother than
    :data:`SKY_SMOOTHNESS`, 1 for a perfectly smooth one.
    """
    stride = max(1, window // 4)
    with torch.no_grad():
        score = F.avg_pool2d(smooth_mask(photos), window, stride=stride)[:, 0]
        best, index = score.flatten(1).max(1)
    columns = score.shape[-1]
    corners = [(int(i) // columns * stride, int(i) % columns * stride) for i in index]
    return corners, ((best - SKY_SMOOTHNESS) / (1 - SKY_SMOOTHNESS)).clamp_min(0)


def window_excess(
    images: torch.Tensor, corners: list[tuple[int, int]], weights: torch.Tensor, window: int
) -> torch.Tensor:
    """Mean over the B×3×H×W ``images`` of ``weights`` (B values) × :func:`oriented_excess` of one ``window``-px
    square per image (top-left at ``corners``) → a scalar; 0 when no window is sky."""
    squares = torch.cat([images[i : i + 1, :, y : y + window, x : x + window] for i, (y, x) in enumerate(corners)])
    return (oriented_excess(squares) * weights.to(images.device, torch.float32)).mean()
