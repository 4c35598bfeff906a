"""nst_lightning: train and serve feed-forward neural style transfer networks.

The library API (importing it does not import torch until a name is used)::

    from nst_lightning import load_model, stylize, StylizeOptions, create_model, PerceptualLoss, LossConfig

    model = load_model("starry_night")            # a shipped model, a checkpoint or an exported file
    result = stylize(photo, model, strength=0.8)  # PIL image or B×3×H×W tensor in [0, 1]
    options = StylizeOptions(strength=0.8, stroke_scale=2.0)  # one validated value, passed whole
    result = stylize(photo, model, options)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "load_model": "nst_lightning.inference",
    "stylize": "nst_lightning.inference",
    "stylize_paths": "nst_lightning.inference",
    "StylizeOptions": "nst_lightning.inference",
    "pretrained_models": "nst_lightning.inference",
    "export_model": "nst_lightning.inference",
    "load_zeroshot": "nst_lightning.inference.zeroshot",
    "stylize_video": "nst_lightning.inference.video",
    "create_model": "nst_lightning.models",
    "list_models": "nst_lightning.models",
    "PerceptualLoss": "nst_lightning.losses.perceptual",
    "LossConfig": "nst_lightning.losses.config",
    "set_style_targets": "nst_lightning.losses.styles",
    "load_runtime": "nst_lightning.export.runtime",
    "NSTError": "nst_lightning.errors",
    "adapt_style": "nst_lightning.transfer.adapt",
}
__all__ = [
    "LossConfig",
    "NSTError",
    "PerceptualLoss",
    "StylizeOptions",
    "adapt_style",
    "create_model",
    "export_model",
    "list_models",
    "load_model",
    "load_runtime",
    "load_zeroshot",
    "pretrained_models",
    "set_style_targets",
    "stylize",
    "stylize_paths",
    "stylize_video",
]

if TYPE_CHECKING:
    from nst_lightning.errors import NSTError
    from nst_lightning.export.runtime import load_runtime
    from nst_lightning.inference import (
        StylizeOptions,
        export_model,
        load_model,
        pretrained_models,
        stylize,
        stylize_paths,
    )
    from nst_lightning.inference.video import stylize_video
    from nst_lightning.inference.zeroshot import load_zeroshot
    from nst_lightning.losses.config import LossConfig
    from nst_lightning.losses.perceptual import PerceptualLoss
    from nst_lightning.losses.styles import set_style_targets
    from nst_lightning.models import create_model, list_models
    from nst_lightning.transfer.adapt import adapt_style


def __getattr__(name: str) -> Any:
    if name in _API:
        if _API[name].startswith("nst_lightning.inference"):
            importlib.import_module("nst_lightning.export")  # registers the runtimes that runtime= converts to
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nst_lightning' has no attribute {name!r}")
