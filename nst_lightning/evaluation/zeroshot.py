"""Evaluate the zero-shot model on paintings it never saw, against per-image L-BFGS on the same objective.

For each painting: the zero-shot model (shipped decoders, the painting's feature statistics) and L-BFGS@k
are scored with the project's perceptual loss whose style targets are that painting's Grams, on every
evaluation photo (:func:`~nst_lightning.evaluation.evaluate.evaluate`, one report per painting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nst_lightning.evaluation.evaluate import EvalSettings, evaluate, score
from nst_lightning.image import load_image
from nst_lightning.inference import LoadedModel
from nst_lightning.inference.zeroshot import DEFAULT_METHOD, REFINE_STEPS, load_zeroshot
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import set_style_targets


def evaluate_zeroshot(
    paintings: list[Path],
    loss_cfg: LossConfig,
    style_size: int | None,
    images: list[Path],
    settings: EvalSettings,
    device: torch.device,
    out_dir: Path,
    method: str = DEFAULT_METHOD,
    cache_dir: str | None = None,
    refine_steps: int = REFINE_STEPS,
) -> dict[str, Any]:
    """One :func:`evaluate` report per painting (under ``out_dir/<painting stem>``) and their summaries.

    ``refine_steps``: the zero-shot model's gradient steps on the objective after decoding (0: none).

    Returns ``{"method", "refine_steps", "levels", "decoders", "paintings": {stem: summary + "photo_objective"}}``
    (``photo_objective``: the mean objective of the unstylized photos, where L-BFGS starts).
    """
    base = load_zeroshot(method=method, device=str(device), refine_steps=refine_steps)
    result: dict[str, Any] = {
        "method": method,
        "refine_steps": refine_steps,
        "levels": base.levels,
        "decoders": {level: getattr(base.decoders[level], "meta", {}) for level in base.levels},
        "paintings": {},
    }
    for painting in paintings:
        loss = PerceptualLoss(loss_cfg)
        set_style_targets(loss, [(painting, style_size)], cache_dir=cache_dir)
        model = base.with_style(painting)
        meta = {"source": f"zero-shot {method}, {refine_steps} refine steps ({painting.name})",
                "style_name": painting.stem, "loss": loss_cfg.to_dict()}  # fmt: skip
        loaded = LoadedModel(net=model, model_name=f"zeroshot_{method}", model_kwargs={}, meta=meta)
        report = evaluate(loaded, loss, images, settings, device, out_dir / painting.stem, tensorboard=False)
        # The photo itself scored on the same objective: where L-BFGS starts, the "no stylization" reference.
        photos = [load_image(path, settings.size).to(device) for path in images]
        unstyled = [score(loss, photo, photo)["objective"] for photo in photos]
        result["paintings"][painting.stem] = {**report["summary"], "photo_objective": sum(unstyled) / len(unstyled)}
    return result
