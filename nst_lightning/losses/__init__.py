"""Loss network and perceptual losses (imported lazily, so that reading ``LossConfig`` does not load torch)."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "LossConfig": "nst_lightning.losses.config",
    "PerceptualLoss": "nst_lightning.losses.perceptual",
    "LAYER_NAMES": "nst_lightning.losses.vgg",
    "VGG19Features": "nst_lightning.losses.vgg",
}
__all__ = ["LAYER_NAMES", "LossConfig", "PerceptualLoss", "VGG19Features"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
