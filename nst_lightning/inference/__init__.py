"""Inference without Hydra or Lightning (torch only): load a trained network and stylize tensors, images, files.

* :mod:`.checkpoint`: find, read and rebuild a network (``load_model``, ``resolve_checkpoint``, ``export_model``).
* :mod:`.options`: how to stylize, one validated value (``StylizeOptions``) with the library's defaults.
* :mod:`.stylize`: the one inference core (``stylize``, ``prepare_model``).
* :mod:`.tiling`: overlapping tiles with whole-image instance-norm statistics.
* :mod:`.files`: image and video files and folder trees (``stylize_file``, ``stylize_paths``).
* :mod:`.zeroshot`: any painting without training (``load_zeroshot``; ``stylize(image, style_image=...)``).
* :mod:`.video`: videos, streamed (``stylize_video``); :mod:`.temporal`: flow consistency and the flicker metric.
"""

from nst_lightning.inference.checkpoint import (
    EXPORT_FORMAT,
    PRETRAINED_DIR,
    LoadedModel,
    export_model,
    load_model,
    pretrained_models,
    pretrained_students,
    resolve_checkpoint,
    resolve_device,
)
from nst_lightning.inference.files import StylizeReport, plan_outputs, stylize_file, stylize_paths
from nst_lightning.inference.options import (
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    MIN_TILE,
    StylizeOptions,
    auto_overlap,
)
from nst_lightning.inference.stylize import (
    MIN_SIDE,
    ModelLike,
    Stylizer,
    build_options,
    choose_style,
    prepare_model,
    stylize,
    stylize_tensor,
)

__all__ = [
    "DEFAULT_TILE_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "EXPORT_FORMAT",
    "PRETRAINED_DIR",
    "MIN_SIDE",
    "MIN_TILE",
    "LoadedModel",
    "ModelLike",
    "StylizeReport",
    "StylizeOptions",
    "Stylizer",
    "auto_overlap",
    "build_options",
    "choose_style",
    "export_model",
    "load_model",
    "plan_outputs",
    "pretrained_models",
    "pretrained_students",
    "prepare_model",
    "resolve_checkpoint",
    "resolve_device",
    "stylize",
    "stylize_file",
    "stylize_paths",
    "stylize_tensor",
]
