"""The runtime a stylize path runs its network in (:attr:`StylizeOptions.runtime`), and its fast variant.

:func:`convert` turns an eager network into the asked runtime once per process and network:

* a style network (a checkpoint, a :class:`LoadedModel`, an ``nn.Module``): ``auto`` is the measured, gated,
  cached choice of :func:`nst_lightning.export.auto.choose_runtime`; a name (``openvino_bf16``,
  ``onnxruntime``, ...) converts it in memory (:func:`nst_lightning.export.runtime.runtime_from_model`);
* the zero-shot model: its VGG encoder and decoders run in OpenVINO
  (:func:`nst_lightning.export.zeroshot_runtime.zeroshot_runtime`); the whitening–colouring maths and the
  refinement steps (which need gradients through VGG-19) stay in torch.

Every choice is logged (which runtime and precision, and why); where the runtime cannot run (no OpenVINO, a GPU)
``auto`` is eager with the reason logged, and a named runtime is a one-line error. The export layer is imported
only here and only when a runtime other than eager is asked for, so eager inference needs none of it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nst_lightning.inference.checkpoint import (
    PRETRAINED_DIR,
    LoadedModel,
    pretrained_students,
    resolve_checkpoint,
    style_names_of_meta,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Converted:
    """A network in a runtime: ``fn`` (B×3×H×W → B×3×H×W; an ``nn.Module`` when eager or zero-shot) and the
    runtime's name (``eager``, ``openvino_bf16``, ...)."""

    fn: Callable[..., torch.Tensor]
    name: str


# Per eager network, what it was converted to: {(runtime, device): Converted}. A network is converted once per
# process; weights changed after that are not seen by the converted copy.
_CONVERTED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], Converted]] = weakref.WeakKeyDictionary()


def convert(net: nn.Module, runtime: str, device: torch.device, loaded: LoadedModel | None = None) -> Converted:
    """``net`` in ``runtime`` on ``device`` (cached per network): see the module docstring.

    Args:
        net: an eager style network or a :class:`~nst_lightning.inference.zeroshot.ZeroShotModel`.
        runtime: ``eager``, ``auto`` or a name of :data:`nst_lightning.export.runtime.RUNTIMES`.
        device: where ``net``'s parameters are.
        loaded: the checkpoint ``net`` came from, if any (its name and metadata go into the converted graph).

    Raises:
        NSTError: a named runtime that cannot run here (OpenVINO missing, bf16 on a CPU without it, a GPU).
    """
    if runtime == "eager":
        return Converted(net, "eager")
    per_net = _CONVERTED.setdefault(net, {})
    key = (runtime, str(device))
    if key not in per_net:
        per_net[key] = _convert(net, runtime, device, loaded)
    return per_net[key]


def _convert(net: nn.Module, runtime: str, device: torch.device, loaded: LoadedModel | None) -> Converted:
    from nst_lightning.inference.zeroshot import ZeroShotModel

    if isinstance(net, ZeroShotModel):
        from nst_lightning.export.zeroshot_runtime import zeroshot_runtime

        model = zeroshot_runtime(net, runtime)
        return Converted(model, model.runtime)
    from nst_lightning.export.auto import auto_runtime
    from nst_lightning.export.torch_runtimes import EagerRuntime

    chosen = auto_runtime(loaded if loaded is not None else _as_loaded(net), runtime, device)
    if isinstance(chosen, EagerRuntime):
        return Converted(net, "eager")
    if runtime != "auto":
        log.info("runtime=%s: as asked (%s)", chosen.name, getattr(chosen, "precision", "fp32"))
    return Converted(chosen, chosen.name)


def _as_loaded(net: nn.Module) -> LoadedModel:
    """A bare network as a :class:`LoadedModel` (its registry name when it has one; its style names as meta)."""
    from nst_lightning.models.conditional import num_styles

    names = list(getattr(net, "style_names", None) or [])
    count = num_styles(net)
    meta: dict[str, Any] = {"styles": [{"name": n} for n in names]} if count > 1 and len(names) == count else {}
    if count > 1 and not meta:
        meta = {"styles": [{"name": str(i)} for i in range(count)]}
    name = str(getattr(net, "model_name", "") or type(net).__name__.lower())
    return LoadedModel(net=net, model_name=name, model_kwargs={}, meta=meta)


def fast_variant(model: Any) -> Any:
    """The fast variant of ``model`` for ``quality=fast``: the shipped distilled student of a shipped network
    (``nst_lightning/pretrained/fast/<name>.pt``, as the service's ``quality=fast``); any other model runs as it
    is, with a logged note."""
    path = _shipped_path(model)
    students = pretrained_students()
    if path is not None and path.parent == PRETRAINED_DIR and path.stem in students:
        log.info("quality=fast: the distilled student %s of %s", students[path.stem], path.stem)
        return students[path.stem]
    log.info("quality=fast: no fast variant of %s is shipped; running the full network", _describe(model))
    return model


def _shipped_path(model: Any) -> Path | None:
    if isinstance(model, (str, Path)):
        try:
            return resolve_checkpoint(model).resolve()
        except Exception:  # an unknown name fails later, with the loader's message
            return None
    if isinstance(model, LoadedModel) and model.meta.get("source"):
        return Path(str(model.meta["source"])).resolve()
    return None


def _describe(model: Any) -> str:
    if isinstance(model, LoadedModel):
        return ", ".join(style_names_of_meta(model.meta))
    return str(model) if isinstance(model, (str, Path)) else type(model).__name__
