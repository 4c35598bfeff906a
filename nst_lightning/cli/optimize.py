"""``python optimize.py content=PATH style=starry_night output=PATH``: the per-image L-BFGS baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from nst_lightning.baseline.optimize import OptimizeSettings, initial_image, optimize_multiscale
from nst_lightning.cli.presets import config_loss, style_image_path, style_source
from nst_lightning.errors import BadValue, NotFound, NSTError
from nst_lightning.image import IMAGE_SUFFIXES, load_image, preserve_color, save_image
from nst_lightning.inference import resolve_device
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import StyleSource, set_style_targets
from nst_lightning.settings import from_mapping
from nst_lightning.training.hparams import StyleGroup

log = logging.getLogger(__name__)


def schedule(size: int, sizes: Sequence[int] | None, iterations: int | Sequence[int]) -> tuple[list[int], list[int]]:
    """Longest-side sizes (smallest first) and loss evaluations per size, validated."""
    size_list = [int(s) for s in sizes] if sizes else [int(size)]
    if any(s < 1 for s in size_list):
        raise NSTError(f"sizes must be positive pixel counts, got {size_list}")
    if size_list != sorted(size_list):
        raise NSTError(f"sizes go coarse to fine: list them smallest first, got {size_list}")
    if isinstance(iterations, Sequence) and not isinstance(iterations, str):
        iters = [int(n) for n in iterations]
        if len(iters) != len(size_list):
            raise NSTError(f"iterations has {len(iters)} entries but sizes has {len(size_list)}: give one per size")
    else:
        iters = [int(iterations)] * len(size_list)
    if any(n < 1 for n in iters):
        raise NSTError(f"iterations must be at least 1, got {iters}")
    return size_list, iters


def style_sources(cfg: DictConfig) -> list[StyleSource]:
    """(image file, Gram size) of ``cfg.style`` followed by each of ``cfg.extra_styles``.

    Extra entries are preset names (``conf/style/<name>.yaml``, downloaded like ``style=<name>`` when missing)
    or image paths (Grams at ``cfg.style.size``).
    """
    sources: list[StyleSource] = [(style_image_path(cfg.style), int(cfg.style.size))]
    for entry in cfg.extra_styles:
        sources.append(style_source(str(entry), cfg.paths.data_dir, int(cfg.style.size)))
    return sources


def style_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """One non-negative weight per style (equal when None), normalised to sum to 1."""
    if weights is None:
        return [1.0 / n] * n
    ws = [float(w) for w in weights]
    if len(ws) != n:
        raise NSTError(f"style_weights has {len(ws)} entries but there are {n} styles (style + extra_styles)")
    if any(w < 0 for w in ws) or sum(ws) <= 0:
        raise NSTError(f"style_weights must be non-negative with a positive sum, got {ws}")
    return [w / sum(ws) for w in ws]


def build_loss(cfg: DictConfig, device: torch.device) -> PerceptualLoss:
    """The perceptual loss (layers from ``cfg.loss``, weights from ``cfg.style``) with the blended style targets."""
    loss = PerceptualLoss(config_loss(cfg)).to(device)
    sources = style_sources(cfg)
    weights = style_weights(cfg.style_weights, len(sources))
    set_style_targets(loss, sources, weights, cfg.paths.cache_dir)
    return loss


def output_path(cfg: DictConfig) -> Path:
    """The output file; its suffix must be an image format."""
    if not cfg.output:
        raise NSTError("no output given: use output=PATH.png")
    path = Path(cfg.output)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise NSTError(f"output must be an image file ({', '.join(IMAGE_SUFFIXES)}), got {path}")
    return path


@dataclass(frozen=True)
class OptimizeJob:
    """What to optimise and how to report it: the top-level keys of ``conf/optimize.yaml`` that are not the
    optimizer's (:class:`OptimizeSettings`) nor a group's. No defaults: the YAML is where they live."""

    content: str | None
    output: str | None
    extra_styles: list[str]
    style_weights: list[float] | None
    size: int
    sizes: list[int] | None
    iterations: int | list[int]
    init: str
    preserve_color: bool
    device: str
    progress: bool
    save_every: int
    intermediate_dir: str


GROUPS = ("style", "loss", "paths", "hydra")


def settings_from_config(cfg: DictConfig) -> tuple[OptimizeSettings, OptimizeJob]:
    """The optimizer's settings and the job of a ``conf/optimize.yaml`` config, every value's type checked."""
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in GROUPS}  # type: ignore[union-attr]
    optimizer_keys = tuple(f.name for f in fields(OptimizeSettings))
    job = from_mapping(OptimizeJob, values, "optimize", ignore=optimizer_keys)
    StyleGroup.from_dict({k: v for k, v in cfg.style.items() if k in ("name", "image", "size")}, "style")
    return from_mapping(OptimizeSettings, values, "optimize", ignore=tuple(f.name for f in fields(OptimizeJob))), job


def run(cfg: DictConfig) -> Path:
    """Run the optimisation described by ``conf/optimize.yaml`` and write the result; returns its path."""
    settings, job = settings_from_config(cfg)
    if not job.content:
        raise BadValue("no content image given: use content=PATH")
    out = output_path(cfg)
    iters_cfg = cfg.iterations
    iterations = list(iters_cfg) if isinstance(iters_cfg, ListConfig) else iters_cfg
    sizes, iterations = schedule(cfg.size, cfg.sizes, iterations)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    contents = [load_image(cfg.content, s).to(device) for s in sizes]
    init_name = str(cfg.init)
    init_img = None
    if init_name not in ("content", "noise"):
        if not Path(init_name).is_file():
            raise NotFound(f"init must be content, noise or an image file; {init_name} is none of them")
        init_img, init_name = load_image(init_name), "image"
    init = initial_image(init_name, contents[0], settings.seed, init_img)
    loss = build_loss(cfg, device)

    preserve = bool(cfg.preserve_color)
    inter_dir = Path(cfg.intermediate_dir)

    def save_intermediate(scale: int, iteration: int, image: torch.Tensor) -> None:
        if preserve:
            image = preserve_color(image, contents[scale])
        h, w = image.shape[-2:]
        save_image(image, inter_dir / f"scale{scale}_{w}x{h}_it{iteration:05d}.png")

    results = optimize_multiscale(
        loss,
        contents,
        init,
        iterations,
        settings,
        int(cfg.save_every),
        save_intermediate,
        progress=bool(cfg.progress),
    )
    final = results[-1].image
    if preserve:
        final = preserve_color(final, contents[-1])
    save_image(final, out)
    for size, r in zip(sizes, results, strict=True):
        log.info(
            "%dpx: %d iterations in %.1fs (%.3fs/it), %s",
            size,
            r.evaluations,
            r.seconds,
            r.seconds / max(r.evaluations, 1),
            r.terms,
        )
    log.info("wrote %s", out)
    return out
