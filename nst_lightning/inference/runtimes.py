"""The runtime a stylize path runs its network in (:attr:`StylizeOptions.runtime`), and its fast variant.

The runtime names live here (:data:`RUNTIMES`, :func:`normalize_runtime`), so that options are checked without
the export layer. :func:`convert` turns an eager network into the asked runtime once per process and network,
through the converter that the export layer registers when it is imported
(:mod:`nst_lightning.export.convert`; ``nst_lightning.stylize``, ``stylize.py`` and the service import it):

* a style network (a checkpoint, a :class:`LoadedModel`, an ``nn.Module``): ``auto`` is the measured, gated,
  cached choice of :func:`nst_lightning.export.auto.choose_runtime`; a name (``openvino_bf16``,
  ``onnxruntime``, ...) converts it in memory (:func:`nst_lightning.export.runtime.runtime_from_model`);
* the zero-shot model: its VGG encoder and decoders run in OpenVINO
  (:func:`nst_lightning.export.zeroshot_runtime.zeroshot_runtime`); the whitening–colouring maths and the
  refinement steps (which need gradients through VGG-19) stay in torch.

Every choice is logged (which runtime and precision, and why); where the runtime cannot run (no OpenVINO, a GPU,
the export layer not imported) ``auto`` is eager with the reason logged, and a named runtime is a one-line error.
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

from nst_lightning.errors import NSTError
from nst_lightning.inference.checkpoint import (
    PRETRAINED_DIR,
    LoadedModel,
    pretrained_students,
    resolve_checkpoint,
    style_names_of_meta,
)

log = logging.getLogger(__name__)

# Every runtime a network can be converted to (the export layer implements them: nst_lightning/export/).
RUNTIMES = ("eager", "torchscript", "torch_export", "onnxruntime", "onnxruntime_int8", "openvino", "openvino_bf16",
            "openvino_int8")  # fmt: skip
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "torch.export": "torch_export", "jit": "torchscript",
           "ov": "openvino", "openvino_fp32": "openvino"}  # fmt: skip
NO_EXPORT_LAYER = ("the runtimes live in nst_lightning.export, which is not imported (import it, or use "
                   "nst_lightning.stylize)")  # fmt: skip


def normalize_runtime(runtime: str | None) -> str | None:
    """A runtime name (aliases ``onnx``, ``ort``, ``ov``, ``torch.export``, ``jit`` accepted), ``auto`` or None.

    Raises:
        NSTError: an unknown name (the message lists the known ones).
    """
    if runtime in (None, ""):
        return None
    if runtime == "auto":
        return "auto"
    name = ALIASES.get(str(runtime), runtime)
    if name not in RUNTIMES:
        raise NSTError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return name


@dataclass(frozen=True)
class Converted:
    """A network in a runtime: ``fn`` (B×3×H×W → B×3×H×W; an ``nn.Module`` when eager or zero-shot) and the
    runtime's name (``eager``, ``openvino_bf16``, ...)."""

    fn: Callable[..., torch.Tensor]
    name: str


Converter = Callable[[nn.Module, str, torch.device, LoadedModel | None], Converted]
_CONVERTER: list[Converter] = []  # the export layer's converter, once registered


def register_converter(converter: Converter) -> None:
    """Install the function that converts a network to a runtime (the export layer does, on import)."""
    _CONVERTER[:] = [converter]


# Per eager network, what it was converted to: {(runtime, device): Converted}. A network is converted once per
# process; weights changed after that are not seen by the converted copy.
_CONVERTED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, str], Converted | None]] = weakref.WeakKeyDictionary()


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
    if not _CONVERTER:
        if runtime == "auto":
            log.info("runtime=auto: eager (%s)", NO_EXPORT_LAYER)
            return Converted(net, "eager")
        raise NSTError(f"runtime={runtime}: {NO_EXPORT_LAYER}")
    per_net = _CONVERTED.setdefault(net, {})
    key = (runtime, str(device))
    if key not in per_net:
        converted = _CONVERTER[0](net, runtime, device, loaded)
        per_net[key] = None if converted.fn is net else converted  # None: eager (a value must not hold its key)
    return per_net[key] or Converted(net, "eager")


def as_loaded(net: nn.Module) -> LoadedModel:
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
