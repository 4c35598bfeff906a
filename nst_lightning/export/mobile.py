"""Phone formats: a LiteRT ``.tflite`` flatbuffer, an ExecuTorch ``.pte`` program (XNNPACK) and a Core ML
``.mlpackage``, each captured at one fixed size.

The three converters plan memory (ExecuTorch), allocate tensors (LiteRT) or compile (Core ML) for the input
shape they see, so each file takes exactly one 1×3×H×W image (``size=HxW``; the network's own reflection
padding to its stride is folded into the graph, so H and W need not be multiples of anything) and, for a
multi-style network, a 1×S ``style`` weight row. What the file takes and gives travels inside it as the same
``nst_lightning.json`` the other formats carry (with ``fixed_size`` and ``precision`` set): a LiteRT metadata
entry, an ExecuTorch constant method, Core ML user-defined metadata.

Converters: ``litert-torch`` (tflite; ``ai-edge-litert`` runs the file), ``executorch`` (its Python runtime runs
the file), ``coremltools`` (converts on Linux; running the model needs macOS). Each is imported only here, when
its format is asked for, and its absence is a one-line :class:`NSTError` naming the package.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nst_lightning.errors import BadValue, NSTError
from nst_lightning.export import graph
from nst_lightning.export.base import export_info
from nst_lightning.export.graph import ExportInfo
from nst_lightning.image import list_images, load_image, resize_tensor
from nst_lightning.inference.checkpoint import LoadedModel
from nst_lightning.models.conditional import num_styles

MOBILE_FORMATS = ("tflite", "executorch", "coreml")
MOBILE_SUFFIXES = {"tflite": ".tflite", "executorch": ".pte", "coreml": ".mlpackage"}
PRECISIONS = {"tflite": ("fp32", "fp16"), "executorch": ("fp32", "int8"), "coreml": ("fp32", "fp16")}
DEFAULT_SIZE = (512, 512)
METHOD_META = "nst_lightning_json"  # the ExecuTorch constant method that returns the metadata (method names: no dots)
# Why a converter may be missing, said with the error (litert-torch: see pyproject.toml's `tflite` extra).
INSTALL = {
    "litert_torch": "pip install 'nst_lightning[tflite]' (litert-torch; it pins typing-extensions<4.13 through "
    "xdsl, which downgrades pydantic, so install it in its own virtual environment)",
    "ai_edge_litert": "pip install 'nst_lightning[mobile]' (ai-edge-litert, the LiteRT interpreter)",
    "executorch": "pip install 'nst_lightning[mobile]' (executorch)",
    "coremltools": "pip install 'nst_lightning[mobile]' (coremltools)",
}
CALIBRATION_PHOTOS = 8
log = logging.getLogger(__name__)


def require(module: str, fmt: str) -> Any:
    """Import a converter or runtime package, or raise a one-line error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise NSTError(
            f"format={fmt} needs the {package} package, which is not installed here: {INSTALL[package]}"
        ) from exc


def parse_size(size: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"HxW"``, ``[H, W]`` or None → (H, W) of positive ints (or None).

    Raises:
        BadValue: anything else.
    """
    if size in (None, ""):
        return None
    try:
        parts = [int(v) for v in str(size).lower().split("x")] if isinstance(size, str) else [int(v) for v in size]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or min(parts) < 1:
        raise BadValue(f"size must be HxW with positive ints (size=512x512), got {size!r}")
    return parts[0], parts[1]


def fixed_info(loaded: LoadedModel, fmt: str, size: tuple[int, int], precision: str) -> ExportInfo:
    """The metadata of a fixed-size file: one 1×3×H×W image (the graph pads and crops itself)."""
    info = export_info(loaded, fmt)
    info.set_padding(True)
    info.fixed_size, info.precision = [size[0], size[1]], precision
    h, w = size
    info.io["input"]["sizes"] = info.io["output"]["sizes"] = f"exactly 1x3x{h}x{w} (fixed at export: size={h}x{w})"
    if num_styles(loaded.net) > 1:
        meaning = "weights of the styles in meta.styles order (one-hot picks one)"
        info.io["style_input"] = {
            "name": graph.STYLE_INPUT_NAME,
            "layout": "1xS",
            "dtype": "float32",
            "meaning": meaning,
        }
    return info


def check_request(loaded: LoadedModel, fmt: str, size: tuple[int, int], precision: str) -> None:
    """Refuse, before any slow step, a precision or size the format or network cannot take."""
    if precision not in PRECISIONS[fmt]:
        raise BadValue(f"format={fmt} offers precision= {' or '.join(PRECISIONS[fmt])}, not {precision!r}")
    contract = graph.size_contract(loaded.net)
    if min(size) < contract.min_size:
        raise BadValue(
            f"size={size[0]}x{size[1]} is below the {loaded.model_name} network's minimum of {contract.min_size} px "
            f"per side; give size=HxW with both ≥ {contract.min_size}"
        )


def example(net: nn.Module, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """The fixed-size inputs: a 1×3×H×W image, plus a 1×S blend of the styles for a multi-style network."""
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    count = num_styles(net)
    return (image,) if count == 1 else (image, torch.full((1, count), 1.0 / count))


def static_program(net: nn.Module, size: tuple[int, int]) -> torch.export.ExportedProgram:
    """``torch.export`` of the network at one static size (its padding branch resolves at capture time)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tensor attributes .*style.* were assigned during export")
        try:
            return torch.export.export(net, example(net, size))
        except Exception as exc:
            raise graph._fail("a fixed-size program", net, exc) from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Converters print progress and warnings at import and conversion: keep the console to our log lines."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_mobile(
    loaded: LoadedModel,
    fmt: str,
    output: str | Path,
    size: tuple[int, int] | None = None,
    precision: str = "fp32",
    calibration: str | Path | None = None,
) -> Path:
    """Write ``loaded`` as a fixed-size ``fmt`` file (see the module docstring) and return its path.

    Args:
        size: (H, W) the file takes (default :data:`DEFAULT_SIZE`).
        precision: one of :data:`PRECISIONS` for ``fmt`` (``int8``: ExecuTorch PT2E static quantization,
            calibrated on photos from ``calibration``).
        calibration: a folder of photos (default: the data folder's ``train/``, else the embedded sample).

    Raises:
        NSTError: a missing converter, a size below the network's minimum, an unknown precision, or a failed
            conversion.
    """
    if fmt not in MOBILE_FORMATS:
        raise BadValue(f"unknown mobile format {fmt!r}; choose one of: {', '.join(MOBILE_FORMATS)}")
    size = size or DEFAULT_SIZE
    check_request(loaded, fmt, size, precision)
    out = Path(output).expanduser()
    if out.suffix != MOBILE_SUFFIXES[fmt]:
        raise BadValue(f"format={fmt} files end in {MOBILE_SUFFIXES[fmt]}: give output=NAME{MOBILE_SUFFIXES[fmt]}")
    if out.is_dir() and fmt != "coreml":
        raise NSTError(f"output {out} is a folder; give a file name such as {out / ('model' + MOBILE_SUFFIXES[fmt])}")
    writer = {"tflite": _write_tflite, "executorch": _write_executorch, "coreml": _write_coreml}[fmt]
    converter = {"tflite": "litert_torch", "executorch": "executorch", "coreml": "coremltools"}[fmt]
    with _quiet():
        require(converter, fmt)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NSTError(f"cannot create the output folder {out.parent} ({exc})") from exc
    net = loaded.net.to("cpu").float().eval()
    info = fixed_info(loaded, fmt, size, precision)
    writer(net, info, size, precision, out, calibration)
    return out


def _write_tflite(net: nn.Module, info: ExportInfo, size: tuple[int, int], precision: str, out: Path, _: Any) -> None:
    """litert-torch converts the program; fp16 casts conv weights with ai-edge-quantizer (shipped with it)."""
    with _quiet():
        import litert_torch

        try:
            model = litert_torch.convert(net, example(net, size))
            data = bytes(model.model_content())
        except Exception as exc:
            raise graph._fail("tflite (litert-torch)", net, exc) from exc
        if precision == "fp16":
            data = _tflite_fp16_weights(data)

    out.write_bytes(tflite_with_metadata(data, info, graph.OUTPUT_NAME))


def _tflite_fp16_weights(data: bytes) -> bytes:
    """The same flatbuffer with fp16 weights for the ops that take them (dequantized to fp32 at load)."""
    from ai_edge_quantizer import quantizer

    config = {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"}, "compute_precision": "FLOAT",
              "explicit_dequantize": True}  # fmt: skip
    ops = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE")
    q = quantizer.Quantizer(bytearray(data))
    q.load_quantization_recipe(
        [{"regex": ".*", "operation": op, "algorithm_key": "float_casting", "op_config": config} for op in ops]
    )
    return bytes(q.quantize().quantized_model)


def calibration_images(folder: str | Path | None, size: tuple[int, int], count: int = CALIBRATION_PHOTOS) -> list:
    """Up to ``count`` photos resized to ``size`` as 1×3×H×W tensors in [0, 1], from ``folder`` (default: the
    data folder's ``train/`` when it is there, else the embedded sample's training photos).

    Raises:
        NotFound: the folder has no photos.
    """
    from nst_lightning.data.sample import DATA_DIR_ENV, SAMPLE_DIR
    from nst_lightning.errors import NotFound

    if folder is None:
        data = Path(os.environ.get(DATA_DIR_ENV, "./data")).expanduser() / "train"
        folder = data if data.is_dir() and list_images(data, recursive=False) else SAMPLE_DIR / "train"
    paths = list_images(Path(folder).expanduser(), recursive=True) if Path(folder).expanduser().is_dir() else []
    if not paths:
        raise NotFound(f"no calibration photos in {folder}; give calibration=FOLDER with a few training photos")
    step = max(1, len(paths) // count)
    return [resize_tensor(load_image(p), size).clamp(0, 1) for p in paths[::step][:count]]


def _write_executorch(
    net: nn.Module, info: ExportInfo, size: tuple[int, int], precision: str, out: Path, calibration: Any
) -> None:
    """Lower to the XNNPACK backend; int8 first runs PT2E (prepare, calibrate on photos, convert)."""
    with _quiet():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        program = static_program(net, size)
        if precision == "int8":
            program = _pt2e_int8(net, program, size, calibration)
        try:
            edge = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()], constant_methods={METHOD_META: info.to_json()}
            )
            out.write_bytes(edge.to_executorch().buffer)
        except Exception as exc:
            raise graph._fail("executorch (XNNPACK)", net, exc) from exc


def _pt2e_int8(
    net: nn.Module, program: torch.export.ExportedProgram, size: tuple[int, int], calibration: Any
) -> torch.export.ExportedProgram:
    """Static int8 (per-channel symmetric weights, per-tensor activations) through ExecuTorch's XNNPACK quantizer."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    photos = calibration_images(calibration, size)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    style = example(net, size)[1:]
    with torch.no_grad():
        for photo in photos:
            prepared(photo, *style)
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, example(net, size))


def _without_aliases(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Drop ``aten.alias`` nodes (a no-op crop at a size that needs no padding leaves one; coremltools has no
    converter for it): their users read the aliased tensor itself."""
    module = program.graph_module
    for node in list(module.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            module.graph.erase_node(node)
    module.recompile()
    return program


def _write_coreml(net: nn.Module, info: ExportInfo, size: tuple[int, int], precision: str, out: Path, _: Any) -> None:
    """An ML program (iOS 16 / macOS 13 and later) with float tensors in and out (no ImageType: no colour-order
    or scaling conversions inside Core ML)."""
    with _quiet():
        import coremltools as ct
        import numpy as np

        # float32 in and out at either compute precision (the contract in the metadata); fp16 casts inside.
        inputs = [ct.TensorType(name=graph.INPUT_NAME, shape=(1, 3, *size), dtype=np.float32)]
        if num_styles(net) > 1:
            inputs.append(ct.TensorType(name=graph.STYLE_INPUT_NAME, shape=(1, num_styles(net)), dtype=np.float32))
        compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
        try:
            model = ct.convert(
                _without_aliases(static_program(net, size).run_decompositions()),
                inputs=inputs,
                outputs=[ct.TensorType(name=graph.OUTPUT_NAME, dtype=np.float32)],
                convert_to="mlprogram",
                compute_precision=compute,
                minimum_deployment_target=ct.target.iOS16,
            )
        except Exception as exc:
            raise graph._fail("coreml (coremltools)", net, exc) from exc
        model.user_defined_metadata[graph.META_KEY] = info.to_json()
        model.short_description = f"nst_lightning {info.model_name}: {info.io['input']['sizes']}, RGB float in [0, 1]"
        model.save(str(out))


def tflite_with_metadata(data: bytes, info: ExportInfo, output_name: str) -> bytes:
    """The flatbuffer with ``nst_lightning.json`` as a metadata entry and the signature's tensors named
    ``image`` (``style``) → ``stylized`` (the converter calls them ``args_0``, ``output_0``)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    names = [graph.INPUT_NAME, graph.STYLE_INPUT_NAME]
    for signature in model.signatureDefs or []:
        for i, tensor in enumerate(signature.inputs or []):
            tensor.name = names[i] if i < len(names) else tensor.name
        for tensor in signature.outputs or []:
            tensor.name = output_name
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(info.to_json().encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = graph.META_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
