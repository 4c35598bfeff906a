"""The export layer's converter for the stylize paths (:func:`nst_lightning.inference.runtimes.convert`).

Importing :mod:`nst_lightning.export` registers :func:`convert_network`: a style network goes to
:func:`nst_lightning.export.auto.auto_runtime` (``auto``: the measured, gated, cached choice; a name: converted
in memory), the zero-shot model to :func:`nst_lightning.export.zeroshot_runtime.zeroshot_runtime`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from nst_lightning.export.auto import auto_runtime
from nst_lightning.export.torch_runtimes import EagerRuntime
from nst_lightning.export.zeroshot_runtime import zeroshot_runtime
from nst_lightning.inference.checkpoint import LoadedModel
from nst_lightning.inference.runtimes import Converted, as_loaded, register_converter
from nst_lightning.inference.zeroshot import ZeroShotModel

log = logging.getLogger(__name__)


def convert_network(net: nn.Module, runtime: str, device: torch.device, loaded: LoadedModel | None) -> Converted:
    """``net`` (an eager style network or a zero-shot model on ``device``) in ``runtime`` (``auto`` or a name).

    Raises:
        NSTError: a named runtime that cannot run here.
    """
    if isinstance(net, ZeroShotModel):
        model = zeroshot_runtime(net, runtime)
        return Converted(model, model.runtime)
    chosen = auto_runtime(loaded if loaded is not None else as_loaded(net), runtime, device)
    if isinstance(chosen, EagerRuntime):
        return Converted(net, "eager")
    if runtime != "auto":
        log.info("runtime=%s: as asked (%s)", chosen.name, getattr(chosen, "precision", "fp32"))
    return Converted(chosen, chosen.name)


register_converter(convert_network)
