"""The one inference core: :func:`stylize` turns a PIL image or a tensor into a stylized one with a model.

``stylize.py``, the service and the notebook all call it. The model is a loaded checkpoint, an ``nn.Module``, any
callable such as an exported runtime, or a checkpoint path / shipped-model name (:func:`prepare_model`). It
applies one :class:`~nst_lightning.inference.options.StylizeOptions` (strength, colour preservation, resizing,
stroke scale, input noise, tiling through :mod:`.tiling`, a multi-style network's style) and handles small images
and alpha. Its keyword arguments are a convenience that builds the options value.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from nst_lightning.errors import BadValue, NSTError
from nst_lightning.image import fit_size, preserve_color, resize_tensor, split_alpha, to_float
from nst_lightning.inference.checkpoint import LoadedModel, load_model, resolve_checkpoint, resolve_device
from nst_lightning.inference.noise import InputNoise
from nst_lightning.inference.options import StylizeOptions
from nst_lightning.inference.tiling import GlobalNormStats, PostProcess, stylize_tiled
from nst_lightning.models.blocks import pad_to_multiple
from nst_lightning.models.conditional import num_styles, resolve_style

# Smaller inputs are reflection/replicate padded up to this side before the network and cropped back after it:
# the networks' reflection padding needs more pixels than its width (a 4 px image crashed Johnson's 9×9 conv).
MIN_SIDE = 32

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
    runtime: str = "eager"  # what ``fn`` is: eager, or the runtime the network was converted to

    @property
    def eager(self) -> Stylizer:
        """This runner with the eager network (itself when it is eager already or has none)."""
        if self.module is None or self.fn is self.module:
            return self
        dev, dtype = _module_device(self.module)
        return dataclasses.replace(self, fn=self.module, device=dev, dtype=dtype, runtime="eager")

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


def prepare_model(model: ModelLike, device: str | torch.device | None = None, runtime: str = "eager") -> Stylizer:
    """Turn whatever :func:`stylize` accepts as a model into a :class:`Stylizer` (do it once, then reuse it).

    Args:
        model: a :class:`LoadedModel`; an ``nn.Module`` (run on the device of its parameters, as it is); any
            callable B×3×H×W → B×3×H×W (an exported runtime; run on ``device``, default the CPU); or a checkpoint
            path / shipped-model name, loaded on ``device`` (default ``auto``: CUDA when available) and cached.
        device: see ``model``; for an ``nn.Module`` it must match where its parameters are (or be ``auto``).
        runtime: ``eager``, ``auto`` or a runtime name (:attr:`StylizeOptions.runtime`): a network (not a callable,
            which runs as it is) is converted to it once per process (:mod:`.runtimes`, which logs the choice).
    """
    if isinstance(model, Stylizer):
        return model
    loaded = None
    if isinstance(model, (str, Path)):
        path = resolve_checkpoint(model)
        dev = resolve_device(None if device is None else str(device))
        model = _load_cached(str(path.resolve()), path.stat().st_mtime_ns, str(dev))
    if isinstance(model, LoadedModel):
        loaded, model = model, model.net
    if isinstance(model, nn.Module):
        dev, dtype = _module_device(model)
        if device is not None and str(device) != "auto":
            want = resolve_device(str(device))
            if want.type != dev.type or (want.index is not None and dev.index is not None and want.index != dev.index):
                raise NSTError(f"the model is on {dev} but device={want} was asked for; move it with model.to(...)")
        if runtime == "eager":
            return Stylizer(fn=model, device=dev, dtype=dtype, module=model)
        from nst_lightning.inference.runtimes import convert

        converted = convert(model, runtime, dev, loaded)
        if converted.name == "eager":
            return Stylizer(fn=model, device=dev, dtype=dtype, module=model)
        # the eager network stays beside the runtime: tiling hooks its instance-norm layers (``Stylizer.eager``)
        module = converted.fn if isinstance(converted.fn, nn.Module) else model
        return Stylizer(fn=converted.fn, device=dev, module=module, runtime=converted.name)
    if callable(model):
        return Stylizer(fn=model, device=resolve_device(str(device)) if device is not None else torch.device("cpu"),
                        runtime=str(getattr(model, "name", "") or "callable"))  # fmt: skip
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


def _finish(options: StylizeOptions, styled: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Pixel-wise finishing of float B×3×H×W images: colour preservation, then the blend with the content."""
    if options.preserve_color:
        styled = preserve_color(styled, content)
    if options.strength < 1.0:
        styled = torch.lerp(content, styled, float(options.strength))
    return styled


def _network(content: torch.Tensor, runner: Stylizer, options: StylizeOptions, post: PostProcess | None):
    """uint8 or float B×3×H×W → the network's float32 output (with ``post``), whole or in tiles (then on the CPU)."""
    height, width = content.shape[-2:]
    noise = options.noise
    if options.tile_size is None or max(height, width) <= options.tile_size:
        x = to_float(content.to(runner.device))
        styled = runner(noise.add(x))
        return post(styled, x) if post is not None else styled
    stats = None
    if runner.module is not None and runner.fn is not runner.module:
        _log_eager_tiles(runner.runtime)
        runner = runner.eager  # whole-image instance-norm statistics can be imposed on the eager network only
    if runner.module is not None:  # a network with statistics other than norm layers' provides them itself
        own = getattr(runner.module, "tile_statistics", None)
        stats = own() if callable(own) else GlobalNormStats(runner.module)
    if runner.module is None:
        log.warning(
            "tiling with a model that is not an eager nn.Module: its instance-norm layers (if any) cannot be given "
            "whole-image statistics, so tiles may differ in tone; pass the eager model to avoid it"
        )
    outs = [
        stylize_tiled(
            runner,
            content[i : i + 1].cpu(),
            options.tile_size,
            options.overlap,
            stats,
            post,
            options.tile_stats_size,
            noise,
        )  # fmt: skip
        for i in range(content.shape[0])
    ]
    return torch.cat(outs)


@functools.lru_cache(maxsize=8)
def _log_eager_tiles(runtime: str) -> None:
    """Say once per runtime that tiles run eager."""
    log.info(
        "tiles run eager, not %s: tiling imposes whole-image instance-norm statistics on every tile, which only "
        "the eager network can take (whole images below tile_size run in %s)", runtime, runtime,
    )  # fmt: skip


def stroke_size(height: int, width: int, stroke_scale: float) -> tuple[int, int]:
    """The (h, w) the network runs at for ``stroke_scale``: the image's size divided by it (each side ≥ 1)."""
    return max(1, round(height / stroke_scale)), max(1, round(width / stroke_scale))


def _run(content: torch.Tensor, runner: Stylizer, options: StylizeOptions) -> torch.Tensor:
    """uint8 or float B×3×H×W → float32 B×3×H×W in [0, 1] (on the runner's device untiled, else on the CPU).

    With ``stroke_scale`` ≠ 1 the network runs on the image resized to :func:`stroke_size` (tiled if that is
    larger than ``tile_size``); its output is resized back to H×W and finished against the full-size content.
    """
    post = functools.partial(_finish, options)
    if options.stroke_scale == 1.0:
        return _network(content, runner, options, post).clamp_(0, 1)
    height, width = content.shape[-2:]
    full = to_float(content)
    small = resize_tensor(full.float(), stroke_size(height, width, options.stroke_scale))
    styled = _network(small, runner, options, None).clamp_(0, 1)
    styled = resize_tensor(styled, (height, width)).to(full.device)
    return post(styled.clamp_(0, 1), full).clamp_(0, 1)


def _stylize_pil(image: Image.Image, runner: Stylizer, options: StylizeOptions) -> Image.Image:
    rgb, alpha = split_alpha(ImageOps.exif_transpose(image))
    size = fit_size(rgb.width, rgb.height, options.max_size)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        alpha = alpha.resize(size, Image.Resampling.LANCZOS) if alpha is not None else None
    content = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)  # 1×3×H×W uint8
    del rgb
    out = _run(content, runner, options)
    pixels = out[0].mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    result = Image.fromarray(pixels, mode="RGB")
    if alpha is not None:
        result.putalpha(alpha)
    return result


def _stylize_tensor(image: torch.Tensor, runner: Stylizer, options: StylizeOptions) -> torch.Tensor:
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or not image.is_floating_point():
        raise BadValue(
            f"a tensor image must be float 3×H×W or B×3×H×W in [0, 1], got {image.dtype} {tuple(image.shape)}"
        )
    if min(image.shape[-2:]) < 1:
        raise BadValue(f"the image has no pixels ({tuple(image.shape)})")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    width, height = fit_size(batch.shape[-1], batch.shape[-2], options.max_size)
    if (height, width) != tuple(batch.shape[-2:]):
        batch = resize_tensor(batch.float(), (height, width))
    out = _run(batch, runner, options).to(image.device)
    return out if image.dim() == 4 else out[0]


def build_options(options: StylizeOptions | None = None, **changes: Any) -> StylizeOptions:
    """``options`` (default: the defaults) with keyword ``changes``: the library's keyword convenience.

    ``input_noise`` may be an :class:`~nst_lightning.inference.noise.InputNoise` (its strength, mask and seed).

    Raises:
        BadValue: an unknown keyword or a bad value.
    """
    noise = changes.get("input_noise")
    if isinstance(noise, InputNoise):
        changes.update(input_noise=noise.sigma, input_noise_smooth_only=noise.smooth_only, noise_seed=noise.seed)
    base = options if options is not None else StylizeOptions()
    if not changes:
        return base
    known = {f.name for f in dataclasses.fields(StylizeOptions)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise BadValue(f"unknown stylize option(s) {unknown}; known: {sorted(known)}")
    return base.replace(**changes)


def stylize_runner(model: ModelLike, options: StylizeOptions, device: str | torch.device | None = None) -> Stylizer:
    """The model ready to run with the options' style, quality and runtime (load it once, then stylize many images
    or frames)."""
    if options.quality == "fast" and not isinstance(model, Stylizer):  # a Stylizer is prepared already
        from nst_lightning.inference.runtimes import fast_variant

        model = fast_variant(model)
    return choose_style(prepare_model(model, device, options.runtime), options.style, options.style_mix)


@torch.inference_mode()
def stylize(
    image: Image.Image | torch.Tensor,
    model: ModelLike | None = None,
    options: StylizeOptions | None = None,
    *,
    style_image: str | Path | Image.Image | torch.Tensor | None = None,
    device: str | torch.device | None = None,
    **option_kwargs: Any,
) -> Image.Image | torch.Tensor:
    """Stylize one image (PIL) or a batch (tensor) with ``model``.

    Args:
        image: a PIL image of any mode (EXIF orientation applied; 16-bit scaled; alpha kept) → an RGB image, or
            RGBA when it had transparency; or a float tensor 3×H×W / B×3×H×W in [0, 1] → the same shape (smaller
            with ``max_size``), float32, on the input's device.
        model: see :func:`prepare_model` (LoadedModel, nn.Module, callable, path or shipped-model name).
        options: how to stylize (:class:`~nst_lightning.inference.options.StylizeOptions`; default: its
            defaults).
        style_image: instead of ``model``, any painting (path, PIL, 3×H×W tensor): zero-shot style transfer
            with the shipped decoders (:mod:`nst_lightning.inference.zeroshot`).
        device: where to load a model given by path or name, or to run a callable (default: auto / the CPU).
        option_kwargs: any :class:`StylizeOptions` field (``strength=0.8``, ``stroke_scale=2``, ...), applied on
            top of ``options``; ``input_noise`` may also be an :class:`InputNoise`.

    Raises:
        NSTError: an option out of range (:class:`BadValue`), an unusable image or model, an unknown style.
    """
    options = build_options(options, **option_kwargs)
    if style_image is not None:
        if model is not None:
            raise BadValue("give either a model or a style_image (zero-shot), not both")
        from nst_lightning.inference.zeroshot import load_zeroshot

        model = load_zeroshot(style_image, device=str(resolve_device(None if device is None else str(device))))
    if model is None:
        raise BadValue("no model given: pass a model (checkpoint, shipped name, network) or style_image=PAINTING")
    runner = stylize_runner(model, options, device)
    if isinstance(image, Image.Image):
        return _stylize_pil(image, runner, options)
    if isinstance(image, torch.Tensor):
        return _stylize_tensor(image, runner, options)
    raise BadValue(f"cannot stylize a {type(image).__name__}: pass a PIL image or a B×3×H×W / 3×H×W tensor")


@torch.inference_mode()
def stylize_tensor(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W in [0, 1] → stylized B×3×H×W in [0, 1] on the network's device (whole images, no options)."""
    return prepare_model(net)(images)
