"""Inference without Hydra or Lightning (torch only): load a trained network and stylize tensors, images, files.

* :mod:`.checkpoint`: find, read and rebuild a network (``load_model``, ``resolve_checkpoint``, ``export_model``).
* :mod:`.stylize`: the one inference core (``stylize``, ``prepare_model``, the options and their defaults).
* :mod:`.tiling`: overlapping tiles with whole-image instance-norm statistics.
* :mod:`.files`: image files and folder trees (``stylize_file``, ``stylize_paths``).
* :mod:`.zeroshot`: any painting without training (``load_zeroshot``; ``stylize(image, style_image=...)``).
* :mod:`.video`: videos, streamed, with temporal consistency and a flicker metric (``stylize_video``).
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
from nst_lightning.inference.stylize import (
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    MIN_SIDE,
    MIN_TILE,
    ModelLike,
    Stylizer,
    auto_overlap,
    check_options,
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
    "Stylizer",
    "auto_overlap",
    "check_options",
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
