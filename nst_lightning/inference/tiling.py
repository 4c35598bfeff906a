"""Tiled inference for images too large to stylize at once, without visible seams.

An image is cut into overlapping tiles of ``tile_size`` pixels; each tile is stylized on its own and the tiles
are cross-faded over ``overlap`` pixels with a raised-cosine window whose weights sum to one everywhere. The
fade sits in the middle of each overlap, so the pixels at a tile's own border (where the network sees
reflection padding instead of the neighbouring content) get little or no weight. Peak memory is that of one
tile plus the input and output images.

Instance norm normalises each tile by its own statistics, so a dark tile next to a bright one would come out
with different contrast and colour. :class:`GlobalNormStats` fixes this without touching the model classes: a
first pass over the whole image, downscaled to fit in one tile, records the per-channel mean and variance of
every layer the network names in ``norm_layers()`` (forward pre-hooks; see :mod:`nst_lightning.models.base`),
and the tile pass then normalises with those fixed statistics (forward hooks that replace the layer's output).

Tensors are B×C×H×W (B = 1 for the tiled path), RGB, float in [0, 1] (or uint8 in [0, 255] for the input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.image import fit_size, to_float
from nst_lightning.models.base import norm_layers, normalize_with

Span = tuple[int, int]  # [start, stop) along one axis


def axis_spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Evenly spaced tiles of ``tile`` pixels covering ``length``, neighbours overlapping by ≥ ``overlap``."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (n - 1)) for i in range(n)]
    return [(s, s + tile) for s in starts]


def _ramp(r: int) -> torch.Tensor:
    """Raised cosine rising from ~0 to ~1 over ``r`` samples; ``ramp + ramp.flip(0) == 1``."""
    return 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(r, dtype=torch.float64) + 0.5) / r)


def fade_bands(spans: list[Span], overlap: int) -> list[Span]:
    """Where neighbouring tiles cross-fade: the middle half of each overlap (``min(overlap, actual) // 2`` px).

    The outer quarters are left to the tile that is not near its border there. A zero-width band
    (``overlap`` < 2) is a hard cut at the middle of the overlap.
    """
    bands = []
    for (_, stop), (start, _) in zip(spans[:-1], spans[1:], strict=True):
        shared = stop - start
        width = min(overlap, shared) // 2
        first = start + (shared - width) // 2
        bands.append((first, first + width))
    return bands


def axis_weights(spans: list[Span], overlap: int) -> list[torch.Tensor]:
    """One 1-D blending weight per tile; summed over the tiles they are 1 at every pixel."""
    bands = fade_bands(spans, overlap)
    weights = []
    for i, (start, stop) in enumerate(spans):
        w = torch.ones(stop - start, dtype=torch.float64)
        if i > 0:  # fade in over the band shared with the previous tile; nothing before it
            a, b = bands[i - 1]
            w[: a - start] = 0
            w[a - start : b - start] = _ramp(b - a)
        if i < len(spans) - 1:  # fade out over the band shared with the next tile; nothing after it
            a, b = bands[i]
            w[a - start : b - start] *= _ramp(b - a).flip(0)
            w[b - start :] = 0
        weights.append(w.float())
    return weights


@dataclass
class TileLayout:
    """The tiles of an H×W image along each axis: spans, blending weights and fade bands."""

    rows: list[Span]
    cols: list[Span]
    row_weights: list[torch.Tensor]
    col_weights: list[torch.Tensor]
    row_bands: list[Span]
    col_bands: list[Span]

    @classmethod
    def create(cls, height: int, width: int, tile_size: int, overlap: int) -> TileLayout:
        rows, cols = axis_spans(height, tile_size, overlap), axis_spans(width, tile_size, overlap)
        return cls(
            rows, cols, axis_weights(rows, overlap), axis_weights(cols, overlap),
            fade_bands(rows, overlap), fade_bands(cols, overlap),
        )  # fmt: skip

    @property
    def num_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    def tiles(self) -> Iterator[tuple[tuple[int, int, int, int], torch.Tensor]]:
        """Per tile: its (y0, y1, x0, x1) and its h×w blending weight."""
        for (y0, y1), wy in zip(self.rows, self.row_weights, strict=True):
            for (x0, x1), wx in zip(self.cols, self.col_weights, strict=True):
                yield (y0, y1, x0, x1), wy.view(-1, 1) * wx.view(1, -1)


class GlobalNormStats:
    """Per-channel statistics of every per-image norm layer of ``module``, recorded once and then imposed.

    ``with stats.record(): module(small_image)`` stores each layer's input mean and variance (C values each);
    ``with stats.apply(): module(tile)`` normalises every tile with them instead of the tile's own.
    """

    def __init__(self, module: nn.Module) -> None:
        self.layers = norm_layers(module)
        self.stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def __bool__(self) -> bool:
        return bool(self.layers)

    @contextmanager
    def record(self) -> Iterator[None]:
        def pre_hook(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].float()  # B×C×H×W; the statistics are averaged over the batch too
            var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            self.stats[layer] = (mean, var)

        with _hooks(self.layers, pre_hook=pre_hook):
            yield

    @contextmanager
    def apply(self) -> Iterator[None]:
        missing = [layer for layer in self.layers if layer not in self.stats]
        if missing:
            raise RuntimeError(f"{len(missing)} instance-norm layers have no recorded statistics")

        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return normalize_with(layer, args[0], *self.stats[layer])

        with _hooks(self.layers, hook=hook):
            yield


@contextmanager
def _hooks(layers: list[nn.Module], pre_hook: Callable | None = None, hook: Callable | None = None) -> Iterator[None]:
    handles = [layer.register_forward_pre_hook(pre_hook) for layer in layers] if pre_hook else []
    handles += [layer.register_forward_hook(hook) for layer in layers] if hook else []
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def downscale(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """1×3×H×W (uint8 or float) → float 1×3×h×w with max(h, w) ≤ ``long_side`` (antialiased bilinear)."""
    height, width = image.shape[-2:]
    size = fit_size(width, height, long_side)[::-1]
    if tuple(image.shape[-2:]) == size:
        return to_float(image)
    if image.dtype == torch.uint8:  # antialiased uint8 resize needs no float copy of the whole image
        small = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
        return to_float(small)
    return F.interpolate(image.float(), size=size, mode="bilinear", antialias=True, align_corners=False)


Runner = Callable[[torch.Tensor], torch.Tensor]
PostProcess = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def stylize_tiled(
    run: Runner,
    image: torch.Tensor,
    tile_size: int,
    overlap: int,
    norm_stats: GlobalNormStats | None = None,
    post: PostProcess | None = None,
    stats_size: int | None = None,
) -> torch.Tensor:
    """Stylize a 1×3×H×W image (uint8 or float, on the CPU) tile by tile; returns float 1×3×H×W on the CPU.

    Args:
        run: float 1×3×h×w in [0, 1] → stylized 1×3×h×w (any device; moved back to the CPU here).
        tile_size: tile side in pixels (the stylized content of one tile is what must fit in memory).
        overlap: how much neighbouring tiles overlap; they cross-fade over its middle half.
        norm_stats: the instance-norm layers of the network behind ``run``: their statistics are recorded from
            the whole image downscaled so that its longest side is ``stats_size`` (default ``tile_size``), then
            imposed in every tile. ``None``: each tile is normalised by its own statistics.
        post: ``post(stylized_tile, content_tile)`` applied to each tile before blending (both float in [0, 1]);
            must be pixel-wise (strength, colour preservation) so that it commutes with the blending.
        stats_size: longest side of the statistics pass (its memory is that of one tile of this size).
    """
    _, _, height, width = image.shape
    layout = TileLayout.create(height, width, tile_size, overlap)
    if norm_stats:
        with norm_stats.record():
            run(downscale(image, stats_size or tile_size))
    out = torch.zeros(1, 3, height, width)
    with norm_stats.apply() if norm_stats else _nothing():
        for (y0, y1, x0, x1), weight in layout.tiles():
            content = to_float(image[..., y0:y1, x0:x1])
            styled = run(content).float().cpu()
            if post is not None:
                styled = post(styled, content)
            out[..., y0:y1, x0:x1].addcmul_(styled, weight)
    return out


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def seam_metric(image: torch.Tensor, tile_size: int, overlap: int) -> float:
    """Gradient energy across the tile boundaries relative to everywhere else (1.0: no visible seam).

    For a 3×H×W or 1×3×H×W image produced with ``tile_size``/``overlap``: the mean absolute difference between
    neighbouring pixels across every line of the cross-fade bands (the hard cut when ``overlap=0``), divided
    by the same mean over all other lines, pooled over vertical and horizontal boundaries. A hard seam (a step in
    tone or contrast) raises it well above 1.
    """
    img = image.float().reshape(-1, *image.shape[-2:])
    layout = TileLayout.create(img.shape[-2], img.shape[-1], tile_size, overlap)
    seam_sum, seam_n, rest_sum, rest_n = 0.0, 0, 0.0, 0
    for dim, bands in ((-1, layout.col_bands), (-2, layout.row_bands)):
        grad = img.diff(dim=dim).abs().mean(dim=(0, -dim))  # one value per line between pixel i-1 and i
        is_seam = torch.zeros_like(grad, dtype=torch.bool)
        for a, b in bands:  # line i-1 (between pixels i-1 and i) for i in [a, b], so a hard cut is one line
            is_seam[max(a - 1, 0) : max(b, a)] = True
        seam_sum, seam_n = seam_sum + grad[is_seam].sum().item(), seam_n + int(is_seam.sum())
        rest_sum, rest_n = rest_sum + grad[~is_seam].sum().item(), rest_n + int((~is_seam).sum())
    if seam_n == 0:
        return 1.0
    return (seam_sum / seam_n) / max(rest_sum / max(rest_n, 1), 1e-12)
