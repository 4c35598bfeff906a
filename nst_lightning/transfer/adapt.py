"""Learn a new painting in minutes: a new style's instance-norm scales and shifts on a trained multi-style network.

The cheapest way to a new style on a CPU (``docs/results/adapt_cpu.md``): start from a trained network, add one
style whose scales and shifts start from the mean of the network's styles, and train only those (a few thousand
numbers) against the painting's Grams for a wall-clock budget. Every other weight stays frozen, so the network's
own styles are unchanged. The learned rows are cached by the painting's and the network's digests and the budget,
so asking again for the same painting is instant.

Torch only (no Lightning, no Hydra): the library, ``stylize.py style_image=... adapt=MINUTES`` and the service call
:func:`adapt_style`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nst_lightning.cpu_features import has_fast_bf16
from nst_lightning.errors import NSTError
from nst_lightning.image import file_digest, list_images, load_image
from nst_lightning.inference.checkpoint import LoadedModel, load_model, resolve_checkpoint, style_names_of_meta
from nst_lightning.losses.config import TERM_WEIGHTS, LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import default_cache_dir, set_style_targets
from nst_lightning.models import create_model
from nst_lightning.models.conditional import num_styles, style_parameters
from nst_lightning.transfer.add_style import load_with_new_styles, source_styles, train_only_styles

log = logging.getLogger(__name__)
SAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "data" / "sample" / "train"
CACHE_VERSION = 1
PRECISIONS = ("auto", "bf16", "32")
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class AdaptRecipe:
    """How a painting is learned (part of the cache key).

    Attributes:
        crop: side of the square random crops of the photos (px).
        batch: crops per step.
        lr: Adam learning rate of the new scales and shifts (the multi-style recipe's ``optim.style_lr``).
        style_size: longest side of the painting when its Grams are computed (px).
        seed: crops and their order.
        precision: ``"auto"`` (bf16 autocast on CPUs with AVX-512 BF16 or AMX, where it is about twice as fast,
            else fp32), ``"bf16"`` or ``"32"``.
    """

    crop: int = 128
    batch: int = 2
    lr: float = 3e-2
    style_size: int = 512
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise NSTError(f"adapt precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.crop < 16 or self.batch < 1 or not self.lr > 0 or self.style_size < 16:
            raise NSTError(f"adapt recipe needs crop >= 16, batch >= 1, lr > 0 and style_size >= 16, got {self}")


def adapt_style(
    painting: str | Path,
    minutes: float,
    base: str | Path = "multistyle",
    *,
    name: str | None = None,
    photos: Sequence[str | Path] | None = None,
    recipe: AdaptRecipe | None = None,
    max_steps: int | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> LoadedModel:
    """``base`` with ``painting`` added as its last style, learned for ``minutes`` of wall-clock time (or cached).

    Args:
        painting: the painting's image file.
        minutes: training budget (> 0); the cache key holds it, so a longer budget learns anew.
        base: the trained network to start from (shipped name, checkpoint or exported model); a single-style
            network works too (its style becomes style 0).
        name: the new style's name (default: the painting's file stem, made unique among the base's styles).
        photos: training photos (default: the embedded sample's 16 photos, so it runs offline).
        recipe: crops, batch, learning rate, Gram size, seed.
        max_steps: stop after this many steps even if time is left (tests; part of the cache key).
        cache_dir: where learned styles are kept (default: the project's cache dir).
        progress: called after every step with ``{"step", "seconds", "fraction", "objective"}`` (``fraction`` of
            the budget spent, in [0, 1]); not called when the style comes from the cache.

    Returns:
        The extended network (eval mode, no gradients); ``meta["styles"]`` lists the new style last and
        ``meta["adapted"]`` says how it was learned (``steps``, ``seconds``, ``cached``, objectives).

    Raises:
        NSTError: a missing painting or base, a base without instance norms, or a bad budget.
    """
    if not minutes > 0:
        raise NSTError(f"adapt needs a positive number of minutes, got {minutes}")
    painting = Path(painting).expanduser()
    if not painting.is_file():
        raise NSTError(f"painting not found: {painting}")
    recipe = recipe or AdaptRecipe()
    loaded, net = extended(base)
    old = source_styles(loaded.meta)
    name = _unique(name or painting.stem, [str(s["name"]) for s in old])
    key = _cache_key(painting, resolve_checkpoint(base), minutes, recipe, max_steps)
    cache = Path(cache_dir or default_cache_dir()) / "adapt" / f"{key}.pt"
    info = _cached(net, cache, painting) if cache.is_file() else None
    if info is None:
        info = _learn(net, painting, minutes, recipe, photos, max_steps, cache_dir, progress)
        _save(cache, {"rows": [p.detach().clone() for p in style_parameters(net, len(old))], "info": info})
        info = {**info, "cached": False}
    entry = {"name": name, "image": str(painting), "size": recipe.style_size,
             **{k: getattr(LossConfig(), k) for k in TERM_WEIGHTS}}  # fmt: skip
    meta = {**loaded.meta, "styles": [*old, entry], "adapted": {**info, "style": name, "base": str(base)}}
    net.eval().requires_grad_(False)
    net.style_names = style_names_of_meta(meta)
    kwargs = {**loaded.model_kwargs, "num_styles": len(old) + 1}
    return LoadedModel(net=net, model_name=loaded.model_name, model_kwargs=kwargs, meta=meta)


def extended(base: str | Path) -> tuple[LoadedModel, torch.nn.Module]:
    """``base`` as loaded, and a copy of its network with one more style whose scales and shifts are the mean of
    its styles'."""
    loaded = load_model(base)
    net = create_model(loaded.model_name, **{**loaded.model_kwargs, "num_styles": len(source_styles(loaded.meta)) + 1})
    load_with_new_styles(net, base, 1)
    return loaded, net


def _unique(name: str, taken: list[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _cache_key(painting: Path, base: Path, minutes: float, recipe: AdaptRecipe, max_steps: int | None) -> str:
    parts = [str(CACHE_VERSION), file_digest(painting)[:16], file_digest(base)[:16], f"{minutes:g}", repr(recipe),
             str(max_steps)]  # fmt: skip
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _cached(net: torch.nn.Module, cache: Path, painting: Path) -> dict[str, Any]:
    """Set ``net``'s last style from the cache file; returns how it was learned."""
    record = torch.load(cache, map_location="cpu", weights_only=True)
    _set_rows(net, record["rows"])
    info = {**record["info"], "cached": True}
    log.info("adapt: %s from the cache (%s steps learned in %.0f s)", painting.name, info["steps"], info["seconds"])
    return info


def _set_rows(net: torch.nn.Module, rows: list[torch.Tensor]) -> None:
    params = style_parameters(net, num_styles(net) - 1)
    if len(params) != len(rows) or any(p.shape != r.shape for p, r in zip(params, rows, strict=True)):
        raise NSTError("the cached style does not fit this network; delete the adapt cache folder and try again")
    with torch.no_grad():
        for p, r in zip(params, rows, strict=True):
            p.copy_(r)


def _save(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(record, tmp)
    os.replace(tmp, path)


def autocast(precision: str) -> torch.autocast:
    """The CPU autocast context of a recipe's ``precision`` (disabled for fp32)."""
    bf16 = precision == "bf16" or (precision == "auto" and has_fast_bf16())
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def crops(photos: list[torch.Tensor], recipe: AdaptRecipe, rng: random.Random) -> torch.Tensor:
    """``batch`` random ``crop``² crops (B×3×crop×crop) of random photos, each resized so its short side is at
    least the crop."""
    out = []
    for _ in range(recipe.batch):
        img = photos[rng.randrange(len(photos))]
        h, w = img.shape[-2:]
        scale = max(recipe.crop / min(h, w), rng.uniform(0.5, 1.0) * 256 / min(h, w))
        img = F.interpolate(img[None], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)[0]
        h, w = img.shape[-2:]
        y, x = rng.randrange(h - recipe.crop + 1), rng.randrange(w - recipe.crop + 1)
        out.append(img[:, y : y + recipe.crop, x : x + recipe.crop])
    return torch.stack(out)


def _learn(
    net: torch.nn.Module,
    painting: Path,
    minutes: float,
    recipe: AdaptRecipe,
    photos: Sequence[str | Path] | None,
    max_steps: int | None,
    cache_dir: str | Path | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train the last style's scales and shifts of ``net`` for ``minutes``; returns what happened."""
    files = [Path(p) for p in photos] if photos else list_images(SAMPLE_PHOTOS, recursive=False)
    if not files:
        raise NSTError("adapt needs training photos: none found")
    images = [load_image(f)[0] for f in files]
    loss = PerceptualLoss(LossConfig())
    set_style_targets(loss, [(painting, recipe.style_size)], cache_dir=cache_dir)
    index = num_styles(net) - 1
    params = train_only_styles(net, [index])
    net.train()
    optimizer = torch.optim.Adam(params, lr=recipe.lr)
    rng = random.Random(recipe.seed)
    start, deadline, steps, first, last = time.monotonic(), time.monotonic() + 60 * minutes, 0, None, None
    log.info("adapt: learning %s for %g min (%d photos, %d-px crops, batch %d)", painting.name, minutes, len(images),
             recipe.crop, recipe.batch)  # fmt: skip
    while (steps == 0 or time.monotonic() < deadline) and (max_steps is None or steps < max_steps):
        batch = crops(images, recipe, rng)
        with autocast(recipe.precision):
            out = net(batch, torch.full((batch.shape[0],), index))
            objective = loss(out, batch)["objective"]
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        steps += 1
        last = float(objective.detach())
        first = last if first is None else first
        if progress is not None:
            spent = time.monotonic() - start
            fraction = min(1.0, max(spent / (60 * minutes), steps / max_steps if max_steps else 0.0))
            progress({"step": steps, "seconds": round(spent, 1), "fraction": round(fraction, 4), "objective": last})
    seconds = time.monotonic() - start
    log.info("adapt: %d steps in %.0f s, objective %.3g -> %.3g", steps, seconds, first, last)
    return {"steps": steps, "seconds": round(seconds, 1), "first_objective": first, "last_objective": last,
            "minutes": minutes, "painting_sha256": file_digest(painting)[:16]}  # fmt: skip
