"""Capture a transformation network as a TorchScript, torch.export or ONNX graph with dynamic size.

The networks pad their input to a multiple of their total stride (their ``size_multiple``: 4 for Johnson, 32 for
the timm U-Nets; see :mod:`nst_lightning.models.base`) and crop the output back. That padding is shape-dependent
Python (``math.ceil``, an ``if``), which a graph cannot keep for every size as written. So the torch.export and
ONNX graphs are captured around :class:`SelfPadding`, which does the same reflection padding and crop with shape
arithmetic a graph keeps (an index gather, no branch): **those files take any B×3×H×W with H, W ≥
``SizeContract.min_size``** and give the eager network's result, with no project code around them (the
network's own no-op padding check becomes a runtime assert that always holds). TorchScript (traced,
deprecated) still takes **pre-padded** input: H and W multiples of ``SizeContract.multiple``.
:class:`nst_lightning.export.runtime.Runtime` pads before every graph anyway (a no-op for the self-padding ones),
so any size from 1×1 works through it. The contract and the input/output description travel inside each
exported file (``nst_lightning.json``; ONNX also has plain metadata keys).

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

FORMATS = ("nst", "torchscript", "torch_export", "onnx", "openvino")
SUFFIXES = {"nst": ".pt", "torchscript": ".ts", "torch_export": ".pt2", "onnx": ".onnx", "openvino": ".xml"}
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


class SelfPadding(nn.Module):
    """``net`` with its reflection padding to ``contract.multiple`` and the crop back done in graph-friendly ops.

    B×3×H×W (H, W ≥ ``contract.min_size``, any value) → B×3×H×W. The padded size is
    ``multiple · ceil(H / multiple)``; rows and columns beyond H, W repeat the image mirrored (reflect mode, as
    :func:`nst_lightning.models.blocks.pad_to_multiple`), gathered by index so no shape-dependent branch is
    traced; the network then sees a multiple of its stride and pads nothing itself.
    """

    def __init__(self, net: nn.Module, contract: SizeContract) -> None:
        super().__init__()
        self.net = net
        self.multiple = contract.multiple

    @staticmethod
    def _reflect_index(n: Any, size: Any) -> torch.Tensor:
        """Indices 0..n-1, then n-2, n-3, ... (reflection without the edge) up to ``size`` entries."""
        index = torch.arange(size)
        return torch.where(index < n, index, 2 * (n - 1) - index)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """``style``: a multi-style network's B×S style weights, passed through to it."""
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        padded = x.index_select(2, self._reflect_index(h, (h + m - 1) // m * m))
        padded = padded.index_select(3, self._reflect_index(w, (w + m - 1) // m * m))
        out = self.net(padded) if style is None else self.net(padded, style)
        return out.index_select(2, torch.arange(h)).index_select(3, torch.arange(w))


def io_description(contract: SizeContract, pads_inside: bool) -> dict[str, Any]:
    """What an exported graph takes and gives, for clients without this package (stored in the file)."""
    if pads_inside:
        sizes = f"any H, W >= {contract.min_size} (the graph pads and crops itself)"
    else:
        sizes = f"H, W multiples of {contract.multiple}, >= {contract.min_size} (reflect-pad bottom/right, crop after)"
    tensor = {"layout": "NCHW", "dtype": "float32", "channels": "RGB", "range": [0.0, 1.0]}
    return {"input": {"name": INPUT_NAME, **tensor, "sizes": sizes},
            "output": {"name": OUTPUT_NAME, **tensor, "sizes": "same as the input"}}  # fmt: skip


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
    pads_inside: bool = False  # the graph pads to its multiple and crops itself (torch.export, ONNX)
    io: dict[str, Any] = field(default_factory=dict)  # see :func:`io_description`
    fixed_size: list[int] | None = None  # [H, W] the only size a fixed-size file takes (tflite, executorch, coreml)
    precision: str = "fp32"  # the weights' precision (fp16, int8 for the phone formats that offer them)

    @property
    def contract(self) -> SizeContract:
        return SizeContract(self.multiple, self.min_size)

    def set_padding(self, pads_inside: bool) -> None:
        """Record whether the graph pads itself, and describe its input and output accordingly."""
        self.pads_inside = pads_inside
        self.io = io_description(self.contract, pads_inside)

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


def example_input(contract: SizeContract, batch: int = 2, padded: bool = True) -> torch.Tensor:
    """A B×3×H×W example with H ≠ W, both above the minimum (no 0/1 or H = W specialisation); multiples of the
    contract's multiple when ``padded``, else sizes that need padding."""
    m = contract.multiple
    h, w = contract.min_size + m, contract.min_size + 2 * m
    return torch.rand(batch, 3, h, w) if padded else torch.rand(batch, 3, h + m // 2 + 1, w + 1)


def example_inputs(net: nn.Module, contract: SizeContract, padded: bool = True) -> tuple[torch.Tensor, ...]:
    """The graph's inputs: the image (:func:`example_input`), plus B×S style weights for a multi-style network
    (a blend, so that no style is special-cased)."""
    image = example_input(contract, padded=padded)
    count = num_styles(net)
    return (image,) if count == 1 else (image, torch.full((image.shape[0], count), 1.0 / count))


def input_names(net: nn.Module) -> list[str]:
    return [INPUT_NAME] if num_styles(net) == 1 else [INPUT_NAME, STYLE_INPUT_NAME]


def _dynamic_dims(contract: SizeContract, padded: bool = True) -> dict[int, Any]:
    """torch.export dims: batch ≥ 1; H, W ≥ min_size, multiples of the contract's multiple when ``padded``."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    if not padded:
        h, w = Dim("height", min=contract.min_size, max=32768), Dim("width", min=contract.min_size, max=32768)
        return {0: batch, 2: h, 3: w}
    lo, hi = contract.min_size // contract.multiple, 32768 // contract.multiple
    h, w = Dim("h_blocks", min=lo, max=hi), Dim("w_blocks", min=lo, max=hi)
    return {0: batch, 2: contract.multiple * h, 3: contract.multiple * w}


def _dynamic_shapes(net: nn.Module, contract: SizeContract, padded: bool = True) -> tuple[dict[int, Any], ...]:
    """Per input: the image's dims, and the style weights' batch (the same dim as the image's)."""
    dims = _dynamic_dims(contract, padded)
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
    """``torch.export.export`` of :class:`SelfPadding` around ``net``: dynamic batch, any H, W ≥ min_size.

    The network's own padding check (a no-op after :class:`SelfPadding`) is kept as a runtime assert rather
    than a guard that symbolic shapes cannot prove (``prefer_deferred_runtime_asserts_over_guards``)."""
    try:
        with warnings.catch_warnings():
            # A multi-style network hands its style weights to its layers as plain attributes during the forward.
            warnings.filterwarnings("ignore", message=r".*tensor attributes .*style.* were assigned during export")
            return torch.export.export(
                SelfPadding(net, contract).eval(),
                example_inputs(net, contract, padded=False),
                dynamic_shapes=_dynamic_shapes(net, contract, padded=False),
                prefer_deferred_runtime_asserts_over_guards=True,
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

    ``exporter``: ``dynamo`` (the :func:`to_torch_export` program, which pads and crops itself, converted by
    ``torch.onnx.export``; needs onnxscript), ``torchscript`` (the legacy tracer-based exporter; its graph takes
    pre-padded input) or ``auto`` (dynamo, falling back to the legacy one if it fails).
    """
    errors: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            with warnings.catch_warnings(), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    to_torch_export(net, contract),
                    dynamo=True,
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
    """Add the export metadata as ONNX model properties (onnxruntime: ``session.get_modelmeta()
    .custom_metadata_map``): the full ``nst_lightning.json`` and plain keys a client reads without this package."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    sizes = info.io.get("input", {}).get("sizes", "")
    plain = {"layout": "NCHW", "channels": "RGB", "dtype": "float32", "input_range": "0..1", "output_range": "0..1",
             "sizes": sizes, "style": str(info.meta.get("style_name", ""))}  # fmt: skip
    onnx.helper.set_model_props(model, {META_KEY: info.to_json(), **plain})
    model.doc_string = f"nst_lightning {info.model_name}: B×3×H×W RGB float32 in [0, 1] → the same; {sizes}"
    return model.SerializeToString()
