"""Zero-shot style transfer: any painting, no training, one forward pass.

A photo's VGG-19 features at ``relu{b}_1`` are given the style image's feature statistics, then a decoder
trained only to invert VGG-19 features of photos turns them back into an image:

* ``adain`` (Huang & Belongie 2017): per channel, the content's mean and standard deviation are replaced by
  the style's.
* ``wct`` (Li et al. 2017, whitening–colouring transform): the content features are whitened (covariance →
  identity) and coloured with the style's covariance, so channel correlations are matched too. With decoders
  for several levels this runs coarse to fine (``relu4_1`` → decode → ``relu3_1`` → decode …).

By default the decoded image then takes two signed gradient steps on the project's objective against the
painting's Grams (:mod:`nst_lightning.inference.refine`; ``refine_steps=0``: the decoder's image as it is).

Both transforms are affine per pixel once the content statistics are fixed (``A f + b``), which is what lets
tiling and video reuse statistics of the whole image: :class:`ZeroShotModel` records them from a downscaled
pass and imposes them on every tile.

Features are B×C×H×W (C = VGG channels at the level); statistics are per image.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.image import pil_to_tensor, resize_to_long_side, tensor_to_pil
from nst_lightning.inference.feature_transforms import (  # noqa: F401 (re-exported: the zero-shot API)
    METHODS,
    FeatureStats,
    adain,
    feature_stats,
    transform,
    wct,
)
from nst_lightning.inference.refine import REFINE_STEPS, check_refine_steps, refine
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.vgg import VGG19Features
from nst_lightning.models.base import TransformNet
from nst_lightning.models.decoder import DECODER_LEVELS, VGGDecoder, level_block

DECODER_FORMAT = "nst_lightning.decoder"
DECODER_DIR = Path(__file__).parent.parent / "pretrained" / "zeroshot"
DEFAULT_METHOD = "wct"
STYLE_SIZE = 512  # larger style images are shrunk to this longest side before their statistics are computed
MIN_PAINTING_SIDE = 32  # pixels: smaller paintings are enlarged (nearest neighbour) before encoding
STATS_CACHE_ENTRIES = 32  # paintings whose statistics the process keeps (by the sha256 of their pixels)
PartFn = Callable[[torch.Tensor], torch.Tensor]  # an encoder or a decoder of one level


def decoder_path(level: str) -> Path:
    """Where the package ships the decoder for ``level`` (``relu4_1`` → ``pretrained/zeroshot/relu4_1.pt``)."""
    return DECODER_DIR / f"{level}.pt"


def shipped_levels() -> list[str]:
    """Levels with a shipped decoder, deepest first (the order a multi-level transform runs)."""
    return sorted((p.stem for p in DECODER_DIR.glob("relu*_1.pt")), key=level_block, reverse=True)


@dataclass(frozen=True)
class PaintingStats:
    """What the zero-shot model keeps of a painting: WCT/AdaIN statistics per decoder level, and the objective's
    style Grams ``{layer: 1×C×C}`` (of the painting at ``STYLE_SIZE`` on its longest side) for refinement, or
    ``None`` when the model does not refine."""

    levels: dict[str, FeatureStats]
    grams: dict[str, torch.Tensor] | None = None


# --- decoders and the model ----------------------------------------------------------------------------------


def read_decoder(path: Path) -> VGGDecoder:
    """Rebuild a decoder (fp32, eval mode) from a file written by ``scripts/train_decoder.py``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise NSTError(f"could not read decoder {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != DECODER_FORMAT:
        raise NSTError(f"{path} is not a zero-shot decoder file (format {DECODER_FORMAT!r})")
    decoder = VGGDecoder(data["level"], data.get("width", 1.0), data.get("input_scale", 1.0))
    decoder.load_state_dict({k: v.float() for k, v in data["state_dict"].items()})
    decoder.meta = data.get("meta", {})
    return decoder.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def _shipped_decoders() -> tuple[VGGDecoder, ...]:
    levels = shipped_levels()
    if not levels:
        raise NSTError(
            f"no zero-shot decoder is installed in {DECODER_DIR}; reinstall the package or train one with "
            "scripts/train_decoder.py"
        )
    return tuple(read_decoder(decoder_path(level)) for level in levels)


@functools.lru_cache(maxsize=4)
def _vgg(deepest: str, weights: str) -> VGG19Features:
    return VGG19Features([deepest], weights=weights)


def load_image_tensor(image) -> torch.Tensor:
    """A PIL image, a path or a float 3×H×W / 1×3×H×W tensor in [0, 1] → float 1×3×H×W."""
    from PIL import Image

    from nst_lightning.image import load_image

    if isinstance(image, (str, Path)):
        image = load_image(Path(image))
    if isinstance(image, Image.Image):
        import numpy as np

        image = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.shape[-3] != 3:
        raise NSTError("a style image must be a file, a PIL image or a float 3×H×W tensor in [0, 1]")
    return image.float().reshape(1, 3, *image.shape[-2:])


_STATS_CACHE: OrderedDict[tuple, PaintingStats] = OrderedDict()
_STATS_LOCK = threading.Lock()


def _resized(image: torch.Tensor, size: int) -> torch.Tensor:
    """1×3×H×W → 1×3×h×w with ``size`` on the longest side, resized as ``load_image`` does (through PIL)."""
    return pil_to_tensor(resize_to_long_side(tensor_to_pil(image[0]), size)).unsqueeze(0)


def _at_least_min_side(image: torch.Tensor) -> torch.Tensor:
    """1×3×H×W enlarged (nearest neighbour) to at least MIN_PAINTING_SIDE on both sides: VGG-19's pooling needs
    a few pixels per level."""
    if min(image.shape[-2:]) >= MIN_PAINTING_SIDE:
        return image
    return F.interpolate(image, size=[max(MIN_PAINTING_SIDE, s) for s in image.shape[-2:]], mode="nearest")


class ZeroShotModel(TransformNet):
    """VGG-19 encoder + feature transform + decoder, coarse to fine over ``decoders``: images → stylized images.

    It behaves like any style network (B×3×H×W in [0, 1] → B×3×H×W), so ``stylize``, tiling, video and the
    service take it as they take a trained network.

    Args:
        decoders: one :class:`VGGDecoder` per level; they run deepest first.
        style: the style's statistics per level (:meth:`style_stats`), or ``None`` until :meth:`with_style`.
        method: ``wct`` or ``adain``.
        vgg: the encoder (default: the Caffe VGG-19 cut at the deepest decoder's level).
        refine_steps: gradient steps on the objective after decoding (:func:`~nst_lightning.inference.refine.refine`;
            0: none). The objective is ``LossConfig()``'s perceptual loss with the painting's Grams.
    """

    def __init__(
        self,
        decoders: Sequence[VGGDecoder],
        style: PaintingStats | None = None,
        method: str = DEFAULT_METHOD,
        vgg: VGG19Features | None = None,
        refine_steps: int = REFINE_STEPS,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise NSTError(f"unknown zero-shot method {method!r}; use one of {', '.join(METHODS)}")
        ordered = sorted(decoders, key=lambda d: level_block(d.level), reverse=True)
        self.levels = [d.level for d in ordered]
        self.decoders = nn.ModuleDict({d.level: d for d in ordered})
        self.vgg = vgg or _vgg(self.levels[0], "caffe")
        self.method = method
        self.style = style
        self.refine_steps = check_refine_steps(refine_steps)
        self.objective = None
        if refine_steps:
            with torch.inference_mode(False):  # its VGG must take gradients even when built inside inference mode
                self.objective = PerceptualLoss(LossConfig()).eval().requires_grad_(False)
        self.size_multiple = max(d.scale for d in ordered)
        self._content: dict[str, list[FeatureStats]] | None = None  # fixed content statistics (tiling)
        self._recording = False
        # Per level, the encoder (image → features) and decoder (features → image) as run; None: the eager modules.
        # A runtime replaces them (:func:`nst_lightning.export.zeroshot_runtime.zeroshot_runtime`).
        self.parts: dict[str, tuple[PartFn, PartFn]] | None = None
        self.runtime = "eager"

    @torch.no_grad()
    def style_stats(self, style_image, size: int | None = STYLE_SIZE) -> PaintingStats:
        """Statistics of a style image (path, PIL or 3×H×W tensor) at every level, shrunk to ``size`` on its
        longest side when it is larger; with refinement, also the objective's Grams of the image at ``size``.

        The statistics of the STATS_CACHE_ENTRIES most recent paintings are kept by the sha256 of their pixels, for
        every model of the process (a folder, repeated library calls, the service): a kept painting costs no VGG
        pass. Images are resized as :func:`~nst_lightning.image.load_image` resizes them (PIL, Lanczos when shrinking),
        the way the objective's Grams are made: a bilinear shrink instead changes the Grams by 20-28 % on a
        Mondrian and costs the zero-shot objective about 8 %."""
        painting = load_image_tensor(style_image)
        key = self._stats_key(painting, size)
        with _STATS_LOCK:
            if key is not None and key in _STATS_CACHE:
                _STATS_CACHE.move_to_end(key)
                return _STATS_CACHE[key]
        stats = self._compute_stats(painting, size)
        if key is not None:
            with _STATS_LOCK:
                _STATS_CACHE[key] = stats
                while len(_STATS_CACHE) > STATS_CACHE_ENTRIES:
                    _STATS_CACHE.popitem(last=False)
        return stats

    def _stats_key(self, painting: torch.Tensor, size: int | None) -> tuple | None:
        """What a painting's statistics depend on: its pixels (sha256), the size, the encoder's levels and weights,
        refinement, the device; ``None`` (never cached) for an encoder with random weights."""
        if self.vgg.weights == "random":
            return None
        digest = hashlib.sha256(painting.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        shape = tuple(painting.shape)
        return (digest, shape, size, tuple(self.levels), self.vgg.weights, self.vgg.pooling,
                self.objective is not None, str(self._device()))  # fmt: skip

    def _compute_stats(self, painting: torch.Tensor, size: int | None) -> PaintingStats:
        larger = size is not None and max(painting.shape[-2:]) > size
        shrunk = _resized(painting, size) if larger else painting
        x = _at_least_min_side(shrunk).to(self._device())
        feats = self.vgg(x, self.levels)
        levels = {level: feature_stats(feats[level][0]) for level in self.levels}
        if self.objective is None:
            return PaintingStats(levels)
        at_size = shrunk if larger or size is None else _resized(painting, size)  # exactly ``size``, up or down
        return PaintingStats(levels, self.objective.compute_grams(_at_least_min_side(at_size).to(x.device)))

    def with_style(self, style) -> ZeroShotModel:
        """A model sharing this one's networks with another style (:class:`PaintingStats`, or an image to compute
        them)."""
        stats = style if isinstance(style, PaintingStats) else self.style_stats(style)
        if self.objective is not None and stats.grams is None:
            raise NSTError("these painting statistics have no Grams: compute them with a refining model")
        other = copy.copy(self)
        other.__dict__["_modules"] = dict(self._modules)
        other.style, other._content = stats, None
        return other

    def _device(self) -> torch.device:
        return next(self.decoders.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W in [0, 1] → stylized B×3×H×W (not clamped); any H, W (reflect padded internally)."""
        if self.style is None:
            raise NSTError("the zero-shot model has no style yet: give it a style image (style_image=...)")
        h, w = images.shape[-2:]
        ph, pw = -h % self.size_multiple, -w % self.size_multiple
        x = F.pad(images, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        outs = torch.cat([self._one(x[i : i + 1], i) for i in range(x.shape[0])])
        if self.objective is not None and not self._recording:
            outs = refine(outs, x, self.objective, self.style.grams, self.refine_steps)
        return outs[..., :h, :w]

    def _one(self, x: torch.Tensor, index: int) -> torch.Tensor:
        for level in self.levels:
            encode, decode = self.part(level)
            f = encode(x)
            content = self._content_stats(level, index, f)
            x = decode(transform(f[0], self.method, self.style.levels[level], content).unsqueeze(0))
        return x

    def part(self, level: str) -> tuple[PartFn, PartFn]:
        """The encoder (1×3×H×W image → 1×C×h×w features at ``level``) and the decoder (features → 1×3×H×W)
        of ``level``, as this model runs them (eager, or in its runtime)."""
        if self.parts is not None:
            return self.parts[level]
        return functools.partial(_encode, self.vgg, level), self.decoders[level]

    def _content_stats(self, level: str, index: int, f: torch.Tensor) -> FeatureStats | None:
        if self._recording:
            stats = feature_stats(f[0])
            self._content.setdefault(level, []).append(stats)
            return stats
        if self._content is not None:
            per_image = self._content[level]
            return per_image[min(index, len(per_image) - 1)]
        return None

    def norm_layers(self) -> list[nn.Module]:
        """None: the per-image statistics of this network are its content statistics (:meth:`tile_statistics`)."""
        return []

    def tile_statistics(self) -> ContentStatistics:
        """Record content statistics from a downscaled whole image, then impose them on every tile."""
        return ContentStatistics(self)


def _encode(vgg: VGG19Features, level: str, images: torch.Tensor) -> torch.Tensor:
    return vgg(images, [level])[level]


class ContentStatistics:
    """Whole-image content statistics of a :class:`ZeroShotModel` (the tiling protocol: record, apply)."""

    def __init__(self, model: ZeroShotModel) -> None:
        self.model = model
        self.stats: dict[str, list[FeatureStats]] = {}

    def __bool__(self) -> bool:
        return True

    @contextmanager
    def record(self) -> Iterator[None]:
        """Within it, forward passes store their content statistics (per level, per image)."""
        self.stats = {}
        self.model._content, self.model._recording = self.stats, True
        try:
            yield
        finally:
            self.model._content, self.model._recording = None, False

    @contextmanager
    def apply(self) -> Iterator[None]:
        """Within it, forward passes use the recorded statistics instead of each input's own."""
        if not self.stats:
            raise RuntimeError("no content statistics recorded")
        self.model._content = self.stats
        try:
            yield
        finally:
            self.model._content = None


def load_zeroshot(
    style_image=None,
    method: str = DEFAULT_METHOD,
    levels: Sequence[str] | None = None,
    device: str = "cpu",
    refine_steps: int = REFINE_STEPS,
) -> ZeroShotModel:
    """The shipped zero-shot model (all shipped decoder levels, or ``levels``), optionally with a style image.

    Args:
        style_image: path, PIL image or 3×H×W tensor of the painting; ``None``: set it later with ``with_style``.
        method: ``wct`` (default) or ``adain`` (uses the deepest level only).
        levels: a subset of the shipped levels (e.g. ``["relu4_1"]``).
        device: where to run.
        refine_steps: gradient steps on the objective after decoding (0: the decoder's image as it is).
    """
    decoders = list(_shipped_decoders())
    if levels is not None:
        unknown = [lv for lv in levels if lv not in DECODER_LEVELS or lv not in {d.level for d in decoders}]
        if unknown:
            raise NSTError(f"no shipped decoder for {unknown}; shipped: {', '.join(d.level for d in decoders)}")
        decoders = [d for d in decoders if d.level in levels]
    if method == "adain":
        decoders = decoders[:1]
    with torch.inference_mode(False):  # parameters moved inside inference mode could not take gradients
        model = ZeroShotModel(decoders, method=method, refine_steps=refine_steps).to(device)
    return model.with_style(style_image) if style_image is not None else model
