"""Capture a transformation network as a TorchScript, torch.export or ONNX graph with dynamic size.

The networks pad their input to a multiple of their total stride (their ``size_multiple``: 4 for Johnson, 32 for
the timm U-Nets; see :mod:`nst_lightning.models.base`) and crop the output back. That padding is shape-dependent
Python (``math.ceil``, an ``if``), which a graph cannot keep for every size: tracing would bake one padding in,
and torch.export refuses it. So the captured graph takes **pre-padded** input: B×3×H×W with H and W multiples
of ``SizeContract.multiple`` and at least ``SizeContract.min_size`` (batch, H and W are dynamic).
:class:`nst_lightning.export.runtime.Runtime` pads before the graph and crops after it, with the network's own
padding function, so it gives the eager network's result on any size. The contract travels inside each exported
file (``nst_lightning.json``).

Imports torch (and onnx for ONNX only): no Lightning, no Hydra.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.models.blocks import pad_to_multiple
from nst_lightning.models.conditional import num_styles

FORMATS = ("nst", "torchscript", "torch_export", "onnx")
SUFFIXES = {"nst": ".pt", "torchscript": ".ts", "torch_export": ".pt2", "onnx": ".onnx"}
META_KEY = "nst_lightning.json"  # extra file (TorchScript, .pt2) or metadata property (ONNX)
META_FORMAT = "nst_lightning.exported"
INPUT_NAME, OUTPUT_NAME = "image", "stylized"
STYLE_INPUT_NAME = "style"  # multi-style networks: B×S style weights (one-hot picks a style; see models/conditional)
ONNX_OPSET = 18


@dataclass(frozen=True)
class SizeContract:
    """What the captured graph accepts: H and W multiples of ``multiple`` and at least ``min_size``."""

    multiple: int
    min_size: int

    def pad(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """B×3×H×W → B×3×H'×W' padded as the network pads itself (reflect, bottom/right), plus (H, W)."""
        return pad_to_multiple(images, self.multiple, self.min_size)


def size_contract(net: nn.Module) -> SizeContract:
    """The size contract of a network, from the ``size_multiple`` it declares (its total stride).

    The minimum is two blocks of the multiple: Johnson's 9×9 reflection pad needs more than 4 px, and instance
    norm needs more than one position at the deepest stage.

    Raises:
        NSTError: the network does not declare a positive integer ``size_multiple``.
    """
    multiple = getattr(net, "size_multiple", None)
    if isinstance(multiple, int) and not isinstance(multiple, bool) and multiple > 0:
        return SizeContract(multiple=multiple, min_size=2 * multiple)
    raise NSTError(
        f"cannot export a {type(net).__name__}: its size multiple is unknown (give the network an integer "
        "attribute `size_multiple`, its total stride; see nst_lightning.models.base)"
    )


@dataclass
class ExportInfo:
    """Metadata stored inside an exported file: enough to pad inputs and to say what the model is."""

    exported_as: str
    model_name: str
    multiple: int
    min_size: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    onnx_exporter: str | None = None
    format: str = META_FORMAT

    @property
    def contract(self) -> SizeContract:
        return SizeContract(self.multiple, self.min_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> ExportInfo:
        try:
            raw = json.loads(text)
            if raw.pop("format", None) != META_FORMAT:
                raise ValueError("not an nst_lightning export")
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise NSTError(f"{source}: unreadable nst_lightning metadata ({exc}); re-export the model") from exc


def example_input(contract: SizeContract, batch: int = 2) -> torch.Tensor:
    """A B×3×H×W example with H ≠ W, both valid and above the minimum (no 0/1 or H = W specialisation)."""
    m = contract.multiple
    return torch.rand(batch, 3, contract.min_size + m, contract.min_size + 2 * m)


def example_inputs(net: nn.Module, contract: SizeContract) -> tuple[torch.Tensor, ...]:
    """The graph's inputs: the image, plus B×S style weights for a multi-style network (a blend, so that no
    style is special-cased)."""
    image = example_input(contract)
    count = num_styles(net)
    return (image,) if count == 1 else (image, torch.full((image.shape[0], count), 1.0 / count))


def input_names(net: nn.Module) -> list[str]:
    return [INPUT_NAME] if num_styles(net) == 1 else [INPUT_NAME, STYLE_INPUT_NAME]


def _dynamic_dims(contract: SizeContract) -> dict[int, Any]:
    """torch.export dims: batch ≥ 1, H = multiple·h and W = multiple·w with h, w ≥ min_size / multiple."""
    from torch.export import Dim

    lo, hi = contract.min_size // contract.multiple, 32768 // contract.multiple
    batch = Dim("batch", min=1, max=1024)
    h, w = Dim("h_blocks", min=lo, max=hi), Dim("w_blocks", min=lo, max=hi)
    return {0: batch, 2: contract.multiple * h, 3: contract.multiple * w}


def _dynamic_shapes(net: nn.Module, contract: SizeContract) -> tuple[dict[int, Any], ...]:
    """Per input: the image's dims, and the style weights' batch (the same dim as the image's)."""
    dims = _dynamic_dims(contract)
    return (dims,) if num_styles(net) == 1 else (dims, {0: dims[0]})


def _fail(fmt: str, net: nn.Module, exc: Exception) -> NSTError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return NSTError(
        f"exporting {type(net).__name__} to {fmt} failed ({type(exc).__name__}: {first[:300]}); "
        "use another format (torch_export or onnx) or run it eagerly"
    )


def to_torchscript(net: nn.Module, contract: SizeContract) -> torch.jit.ScriptModule:
    """Trace the network (torch.jit is deprecated in current PyTorch; kept for deployments that load TorchScript)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about the (no-op) padding branch; deprecation
            return torch.jit.trace(net, example_inputs(net, contract), check_trace=False, _store_inputs=False)
    except Exception as exc:
        raise _fail("torchscript", net, exc) from exc


def to_torch_export(net: nn.Module, contract: SizeContract) -> torch.export.ExportedProgram:
    """``torch.export.export`` with dynamic batch and H, W as multiples of the contract's multiple."""
    try:
        with warnings.catch_warnings():
            # A multi-style network hands its style weights to its layers as plain attributes during the forward.
            warnings.filterwarnings("ignore", message=r".*tensor attributes .*style.* were assigned during export")
            return torch.export.export(
                net, example_inputs(net, contract), dynamic_shapes=_dynamic_shapes(net, contract)
            )
    except Exception as exc:
        raise _fail("torch_export", net, exc) from exc


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The ONNX optimiser logs each rewrite at INFO (under Hydra that reaches the console): warnings only."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def to_onnx(net: nn.Module, contract: SizeContract, exporter: str = "auto") -> tuple[bytes, str]:
    """Serialized ONNX model (dynamic batch, height, width) and the exporter that made it.

    ``exporter``: ``dynamo`` (``torch.onnx.export(..., dynamo=True)``, needs onnxscript), ``torchscript``
    (the legacy tracer-based exporter) or ``auto`` (dynamo, falling back to the legacy one if it fails).
    """
    errors: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            with warnings.catch_warnings(), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    net,
                    example_inputs(net, contract),
                    dynamo=True,
                    dynamic_shapes=_dynamic_shapes(net, contract),
                    input_names=input_names(net),
                    output_names=[OUTPUT_NAME],
                    opset_version=ONNX_OPSET,
                    verbose=False,
                )
            return program.model_proto.SerializeToString(), "dynamo"
        except Exception as exc:
            if exporter == "dynamo":
                raise _fail("onnx (dynamo exporter)", net, exc) from exc
            errors.append(f"dynamo: {type(exc).__name__}: {str(exc).strip()[:200]}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise NSTError(f"unknown ONNX exporter {exporter!r}; use auto, dynamo or torchscript")
    axes = {0: "batch", 2: "height", 3: "width"}
    style_axes = {STYLE_INPUT_NAME: {0: "batch"}} if num_styles(net) > 1 else {}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                example_inputs(net, contract),
                buffer,
                dynamo=False,
                input_names=input_names(net),
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes, **style_axes},
                opset_version=17,
            )
    except Exception as exc:
        errors.append(f"torchscript: {type(exc).__name__}: {str(exc).strip()[:200]}")
        raise NSTError(f"exporting {type(net).__name__} to ONNX failed ({'; '.join(errors)})") from exc
    return buffer.getvalue(), "torchscript"


def with_onnx_metadata(model_bytes: bytes, info: ExportInfo) -> bytes:
    """Add the export metadata as an ONNX model property (readable by onnxruntime's model metadata)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(model, {META_KEY: info.to_json()})
    return model.SerializeToString()
