"""The one inference core: :func:`stylize` turns a PIL image or a tensor into a stylized one with a model.

``stylize.py``, the service and the notebook all call it. The model is a loaded checkpoint, an ``nn.Module``, any
callable such as an exported runtime, or a checkpoint path / shipped-model name (:func:`prepare_model`). It
handles strength, colour preservation, resizing, small images, alpha and tiling (:mod:`.tiling`). Its keyword
defaults are the library's defaults; ``conf/stylize.yaml`` is checked against them by a test.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.image import fit_size, preserve_color, resize_tensor, split_alpha, to_float
from nst_lightning.inference.checkpoint import LoadedModel, load_model, resolve_checkpoint, resolve_device
from nst_lightning.inference.noise import DEFAULT_SIGMA, DEFAULT_SMOOTH_ONLY, InputNoise, resolve_input_noise
from nst_lightning.inference.tiling import GlobalNormStats, stylize_tiled
from nst_lightning.models.blocks import pad_to_multiple
from nst_lightning.models.conditional import num_styles, resolve_style

# Smaller inputs are reflection/replicate padded up to this side before the network and cropped back after it:
# the networks' reflection padding needs more pixels than its width (a 4 px image crashed Johnson's 9×9 conv).
MIN_SIDE = 32
MIN_TILE = 64
# Images whose longest side exceeds this many pixels are stylized in overlapping tiles (peak network memory is
# that of one tile); the default of stylize(), stylize_file(), stylize_paths(), stylize.py and the service.
DEFAULT_TILE_SIZE = 1024
DEFAULT_TILE_OVERLAP = 128  # tiles overlap this much (or tile_size // 4) and cross-fade over its middle half

log = logging.getLogger(__name__)

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Stylizer:
    """A model ready to run: float B×3×H×W in [0, 1] (any device) → float32 B×3×H×W in [0, 1] on ``device``.

    Inputs smaller than ``MIN_SIDE`` pixels are padded for the network and cropped back.
    """

    fn: ModelFn
    device: torch.device
    dtype: torch.dtype = torch.float32
    module: nn.Module | None = None  # the eager network, whose instance-norm layers tiling can hook
    style: torch.Tensor | None = None  # a multi-style network's S style weights (None: its default, style 0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(images, 1, min_size=MIN_SIDE)
        x = padded.to(self.device, self.dtype)
        out = self.fn(x) if self.style is None else self.fn(x, self.style.to(self.device).expand(x.shape[0], -1))
        if not isinstance(out, torch.Tensor) or out.shape != padded.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NSTError(
                f"the model returned {got} for an input of shape {tuple(padded.shape)}; "
                "it must map B×3×H×W images to B×3×H×W images"
            )
        return out[..., :h, :w].float().clamp(0, 1)


ModelLike = LoadedModel | nn.Module | ModelFn | Stylizer | str | Path


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, device: str) -> LoadedModel:
    return load_model(path, device)


def _module_device(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def prepare_model(model: ModelLike, device: str | torch.device | None = None) -> Stylizer:
    """Turn whatever :func:`stylize` accepts as a model into a :class:`Stylizer` (do it once, then reuse it).

    Args:
        model: a :class:`LoadedModel`; an ``nn.Module`` (run on the device of its parameters, as it is); any
            callable B×3×H×W → B×3×H×W (an exported runtime; run on ``device``, default the CPU); or a checkpoint
            path / shipped-model name, loaded on ``device`` (default ``auto``: CUDA when available) and cached.
        device: see ``model``; for an ``nn.Module`` it must match where its parameters are (or be ``auto``).
    """
    if isinstance(model, Stylizer):
        return model
    if isinstance(model, (str, Path)):
        path = resolve_checkpoint(model)
        dev = resolve_device(None if device is None else str(device))
        model = _load_cached(str(path.resolve()), path.stat().st_mtime_ns, str(dev))
    if isinstance(model, LoadedModel):
        model = model.net
    if isinstance(model, nn.Module):
        dev, dtype = _module_device(model)
        if device is not None and str(device) != "auto":
            want = resolve_device(str(device))
            if want.type != dev.type or (want.index is not None and dev.index is not None and want.index != dev.index):
                raise NSTError(f"the model is on {dev} but device={want} was asked for; move it with model.to(...)")
        return Stylizer(fn=model, device=dev, dtype=dtype, module=model)
    if callable(model):
        return Stylizer(fn=model, device=resolve_device(str(device)) if device is not None else torch.device("cpu"))
    raise NSTError(
        f"cannot use a {type(model).__name__} as a model; pass a checkpoint path, a shipped model name, "
        "a LoadedModel, an nn.Module or a callable mapping B×3×H×W images to B×3×H×W images"
    )


def choose_style(
    runner: Stylizer, style: str | int | None = None, style_mix: dict[str, float] | None = None
) -> Stylizer:
    """``runner`` with a multi-style network's style (name or index) or blend (``{name: weight}``) chosen.

    A single-style network accepts only its own name (or 0) and runs as before.

    Raises:
        NSTError: both given, an unknown style (the message lists the network's), or bad mix weights.
    """
    if style is None and not style_mix:
        return runner
    model = runner.module if runner.module is not None else runner.fn
    names = getattr(model, "style_names", None)
    count = num_styles(model) if isinstance(model, nn.Module) else len(names or [None])
    if not names or len(names) != count:
        names = [str(i) for i in range(count)]
    weights = resolve_style(names, style, style_mix)
    return runner if count == 1 else dataclasses.replace(runner, style=weights)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_options(
    *,
    strength: float = 1.0,
    max_size: int | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
) -> None:
    """Validate :func:`stylize`'s options (the service calls it on form fields before any work).

    Raises:
        NSTError: a value out of range, with the range that is allowed.
    """
    if (
        not isinstance(strength, (int, float, np.floating))
        or isinstance(strength, bool)
        or not (math.isfinite(strength) and 0.0 <= strength <= 1.0)
    ):
        raise NSTError(f"strength must be a number between 0 and 1 (1 = fully stylized), got {strength!r}")
    if max_size is not None and not (_is_int(max_size) and max_size >= 1):
        raise NSTError(f"max_size must be a positive number of pixels (or null for the full size), got {max_size!r}")
    if tile_size is not None and not (_is_int(tile_size) and tile_size >= MIN_TILE):
        raise NSTError(f"tile_size must be at least {MIN_TILE} pixels (or null: no tiling), got {tile_size!r}")
    if tile_overlap is not None and not (_is_int(tile_overlap) and tile_overlap >= 0):
        raise NSTError(f"tile_overlap must be a number of pixels ≥ 0 (or null: automatic), got {tile_overlap!r}")
    if tile_size is not None and tile_overlap is not None and tile_overlap > tile_size // 4:
        raise NSTError(
            f"tile_overlap={tile_overlap} is too large for tile_size={tile_size}; use at most {tile_size // 4}"
        )


def auto_overlap(tile_size: int, tile_overlap: int | None) -> int:
    """The overlap used: as given, or ``min(DEFAULT_TILE_OVERLAP, tile_size // 4)``."""
    return min(DEFAULT_TILE_OVERLAP, tile_size // 4) if tile_overlap is None else tile_overlap


@dataclass(frozen=True)
class _Options:
    strength: float
    preserve_color: bool
    max_size: int | None
    tile_size: int | None
    tile_overlap: int | None
    tile_stats_size: int | None = None
    noise: InputNoise = InputNoise(0.0)  # added to the network's input only (post() blends with the clean photo)

    def post(self, styled: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """Pixel-wise finishing of float B×3×H×W images: colour preservation, then the blend with the content."""
        if self.preserve_color:
            styled = preserve_color(styled, content)
        if self.strength < 1.0:
            styled = torch.lerp(content, styled, float(self.strength))
        return styled


def _run(content: torch.Tensor, runner: Stylizer, opts: _Options) -> torch.Tensor:
    """uint8 or float B×3×H×W → float32 B×3×H×W in [0, 1] (on the runner's device untiled, else on the CPU)."""
    height, width = content.shape[-2:]
    if opts.tile_size is None or max(height, width) <= opts.tile_size:
        x = to_float(content.to(runner.device))
        return opts.post(runner(opts.noise.add(x)), x).clamp_(0, 1)
    stats = None
    if runner.module is not None:  # a network with statistics other than norm layers' provides them itself
        own = getattr(runner.module, "tile_statistics", None)
        stats = own() if callable(own) else GlobalNormStats(runner.module)
    if runner.module is None:
        log.warning(
            "tiling with a model that is not an eager nn.Module: its instance-norm layers (if any) cannot be given "
            "whole-image statistics, so tiles may differ in tone; pass the eager model to avoid it"
        )
    overlap = auto_overlap(opts.tile_size, opts.tile_overlap)
    outs = [
        stylize_tiled(
            runner,
            content[i : i + 1].cpu(),
            opts.tile_size,
            overlap,
            stats,
            opts.post,
            opts.tile_stats_size,
            opts.noise,
        )
        for i in range(content.shape[0])
    ]
    return torch.cat(outs).clamp_(0, 1)


def _stylize_pil(image: Image.Image, runner: Stylizer, opts: _Options) -> Image.Image:
    rgb, alpha = split_alpha(ImageOps.exif_transpose(image))
    size = fit_size(rgb.width, rgb.height, opts.max_size)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        alpha = alpha.resize(size, Image.Resampling.LANCZOS) if alpha is not None else None
    content = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)  # 1×3×H×W uint8
    del rgb
    out = _run(content, runner, opts)
    pixels = out[0].mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    result = Image.fromarray(pixels, mode="RGB")
    if alpha is not None:
        result.putalpha(alpha)
    return result


def _stylize_tensor(image: torch.Tensor, runner: Stylizer, opts: _Options) -> torch.Tensor:
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
        raise NSTError(
            f"a tensor image must be float 3×H×W or B×3×H×W in [0, 1], got {image.dtype} {tuple(image.shape)}"
        )
    if min(image.shape[-2:]) < 1:
        raise NSTError(f"the image has no pixels ({tuple(image.shape)})")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    width, height = fit_size(batch.shape[-1], batch.shape[-2], opts.max_size)
    if (height, width) != tuple(batch.shape[-2:]):
        batch = resize_tensor(batch.float(), (height, width))
    out = _run(batch, runner, opts).to(image.device)
    return out if image.dim() == 4 else out[0]


@torch.inference_mode()
def stylize(
    image: Image.Image | torch.Tensor,
    model: ModelLike | None = None,
    *,
    style_image: str | Path | Image.Image | torch.Tensor | None = None,
    strength: float = 1.0,
    preserve_color: bool = False,
    max_size: int | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_overlap: int | None = None,
    device: str | torch.device | None = None,
    tile_stats_size: int | None = None,
    input_noise: float | InputNoise = DEFAULT_SIGMA,
    input_noise_smooth_only: bool = DEFAULT_SMOOTH_ONLY,
    style: str | int | None = None,
    style_mix: dict[str, float] | None = None,
) -> Image.Image | torch.Tensor:
    """Stylize one image (PIL) or a batch (tensor) with ``model``.

    Args:
        image: a PIL image of any mode (EXIF orientation applied; 16-bit scaled; alpha kept) → an RGB image, or
            RGBA when it had transparency; or a float tensor 3×H×W / B×3×H×W in [0, 1] → the same shape (smaller
            with ``max_size``), float32, on the input's device.
        model: see :func:`prepare_model` (LoadedModel, nn.Module, callable, path or shipped-model name).
        style_image: instead of ``model``, any painting (path, PIL, 3×H×W tensor): zero-shot style transfer
            with the shipped decoders (:mod:`nst_lightning.inference.zeroshot`).
        strength: 1 = the network's output, 0 = the content unchanged; values in between blend linearly.
        preserve_color: keep the content's colours (the stylized luminance with the content's chroma).
        max_size: shrink so that the longest side is at most this many pixels (never enlarges); ``None``: as is.
        tile_size: stylize images whose longest side exceeds this many pixels in overlapping tiles of this size
            (peak network memory is that of one tile; default ``DEFAULT_TILE_SIZE``); ``None``: always the whole
            image at once.
        tile_overlap: how many pixels neighbouring tiles share (at most ``tile_size // 4``); they cross-fade over
            its middle half. ``None``: ``min(128, tile_size // 4)``.
        device: where to load a model given by path or name, or to run a callable (default: auto / the CPU).
        tile_stats_size: longest side of the downscaled whole-image pass that gives the instance-norm layers
            their statistics when tiling (default ``tile_size``; larger is closer to the untiled result and
            needs the memory of a tile of that size).
        input_noise: strength of the seeded Gaussian noise added to the network's input, so that smooth regions
            (skies) get the style's texture instead of stripes (:mod:`.noise`); 0 turns it off. An
            :class:`~nst_lightning.inference.noise.InputNoise` also sets the seed.
        input_noise_smooth_only: add it only where the photo is smooth (a mask from the local gradient).
        style: a multi-style network's style, by name or index (default: style 0).
        style_mix: a blend of its styles, ``{name: weight}`` (weights normalised to sum 1): the convex combination
            of the styles' instance-norm scales and shifts.

    Raises:
        NSTError: an option out of range, an unusable image or model, an unknown style.
    """
    check_options(strength=strength, max_size=max_size, tile_size=tile_size, tile_overlap=tile_overlap)
    if tile_stats_size is not None and not (_is_int(tile_stats_size) and tile_stats_size >= 1):
        raise NSTError(f"tile_stats_size must be a positive number of pixels, got {tile_stats_size!r}")
    noise = resolve_input_noise(input_noise, input_noise_smooth_only)
    opts = _Options(float(strength), bool(preserve_color), max_size, tile_size, tile_overlap, tile_stats_size, noise)
    if style_image is not None:
        if model is not None:
            raise NSTError("give either a model or a style_image (zero-shot), not both")
        from nst_lightning.inference.zeroshot import load_zeroshot

        model = load_zeroshot(style_image, device=str(resolve_device(None if device is None else str(device))))
    if model is None:
        raise NSTError("no model given: pass a model (checkpoint, shipped name, network) or style_image=PAINTING")
    runner = choose_style(prepare_model(model, device), style, style_mix)
    if isinstance(image, Image.Image):
        return _stylize_pil(image, runner, opts)
    if isinstance(image, torch.Tensor):
        return _stylize_tensor(image, runner, opts)
    raise NSTError(f"cannot stylize a {type(image).__name__}: pass a PIL image or a B×3×H×W / 3×H×W tensor")


@torch.inference_mode()
def stylize_tensor(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W in [0, 1] → stylized B×3×H×W in [0, 1] on the network's device (whole images, no options)."""
    return prepare_model(net)(images)
