"""Run a style network eagerly or from an exported file, behind one callable.

    runtime = load_runtime("starry_night")                        # eager, shipped model
    runtime = load_runtime("model.onnx")                          # format detected from the file
    runtime = load_runtime("starry_night", runtime="onnxruntime") # checkpoint converted in memory
    runtime = load_runtime("starry_night", runtime="onnxruntime_int8")  # the same, int8 weights
    runtime = load_runtime("starry_night", runtime="openvino")    # OpenVINO fp32 (also _bf16, _int8)
    runtime = load_runtime("model.xml")                           # an OpenVINO IR file
    out = runtime(images)   # B×3×H×W float in [0, 1] → B×3×H×W float32 in [0, 1] on runtime.device

Every runtime pads the input as the network does (see :mod:`nst_lightning.export.graph`) and crops the
result back, so any H, W ≥ 1 works, including images smaller than the network's minimum. The runtimes live in
:mod:`~nst_lightning.export.torch_runtimes`, :mod:`~nst_lightning.export.onnx_runtime` and
:mod:`~nst_lightning.export.openvino_runtime`; this module picks and opens them.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.base import Runtime, export_info
from nst_lightning.export.graph import ExportInfo
from nst_lightning.export.onnx_runtime import OnnxRuntime, _import_onnxruntime, quantize_int8
from nst_lightning.export.openvino_runtime import PRECISIONS as OPENVINO_RUNTIMES
from nst_lightning.export.openvino_runtime import OpenVinoRuntime
from nst_lightning.export.torch_runtimes import EagerRuntime, TorchExportRuntime, TorchScriptRuntime
from nst_lightning.inference.checkpoint import LoadedModel, load_model, resolve_checkpoint, resolve_device
from nst_lightning.inference.runtimes import RUNTIMES, normalize_runtime

__all__ = ["RUNTIMES", "EagerRuntime", "OnnxRuntime", "OpenVinoRuntime", "Runtime", "TorchExportRuntime",
           "TorchScriptRuntime", "default_runtime", "detect_format", "export_info", "load_runtime",
           "normalize_runtime", "quantize_int8", "runtime_from_model"]  # fmt: skip
# Which runtime runs which file format ("checkpoint": a Lightning checkpoint or an nst_lightning .pt model).
RUNTIME_OF_FORMAT = {"checkpoint": "eager", "torchscript": "torchscript", "torch_export": "torch_export",
                     "onnx": "onnxruntime", "openvino": "openvino"}  # fmt: skip
# The phone formats (fixed size, see export/mobile.py) and the runtime that runs each on this machine.
MOBILE_RUNTIME = {"tflite": "litert", "executorch": "executorch", "coreml": "coreml"}
# The other runtimes that can run a file of that format.
ALSO_RUNS = {"onnx": tuple(OPENVINO_RUNTIMES), "openvino": ("openvino_bf16",)}


def default_runtime(device: str | torch.device = "cpu") -> str:
    """The fastest runtime measured for a checkpoint on ``device`` (benchmarks/inference.py, docs/export.md):
    ONNX Runtime on the CPU when onnxruntime is installed, else eager (GPU: not measured here; the
    onnxruntime wheel has no CUDA provider)."""
    device = torch.device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        try:
            _import_onnxruntime()
            return "onnxruntime"
        except NSTError:
            return "eager"
    return "eager"


def detect_format(path: str | Path) -> str:
    """``checkpoint`` (Lightning or nst_lightning .pt), ``torchscript``, ``torch_export``, ``onnx``,
    ``openvino`` (an IR ``.xml``), ``tflite``, ``executorch`` (``.pte``) or ``coreml`` (an ``.mlpackage`` folder)."""
    path = Path(path)
    if path.is_dir() and path.suffix == ".mlpackage":
        return "coreml"
    if not path.is_file():
        raise NSTError(f"model file not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            tails = {name.split("/", 1)[-1] for name in archive.namelist()}
        if "archive_format" in tails:
            return "torch_export"
        if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
            return "torchscript"
        if "data.pkl" in tails:
            return "checkpoint"
    else:
        with path.open("rb") as fh:
            head = fh.read(256)
        if head[4:8] == b"TFL3":  # flatbuffer file identifiers
            return "tflite"
        if head[4:6] == b"ET" and head[6:8].isdigit():
            return "executorch"
        if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # protobuf field 1 (ir_version), a varint
            return "onnx"
        if head.lstrip().startswith(b"<?xml") and b"<net" in head:
            return "openvino"
    raise NSTError(
        f"{path}: unknown model format (expected a checkpoint, a TorchScript .ts, a torch.export .pt2, an .onnx "
        "an OpenVINO .xml, a .tflite or an ExecuTorch .pte)"
    )


def runtime_from_model(loaded: LoadedModel, runtime: str = "eager", device: str | torch.device = "cpu") -> Runtime:
    """Wrap a loaded network in a runtime; non-eager runtimes capture the graph in memory (no file)."""
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    name = normalize_runtime(runtime) or "eager"
    if name == "auto":
        name = default_runtime(device)
    if name == "eager":
        return EagerRuntime(loaded.net, device, loaded.model_name, loaded.meta)
    net = loaded.net.to("cpu").float().eval()
    info = export_info(loaded, "onnx" if name in OPENVINO_RUNTIMES else name)
    source = str(loaded.meta.get("source", ""))
    if name == "torchscript":
        return TorchScriptRuntime(graph.to_torchscript(net, info.contract), device, info, source)
    if name == "torch_export":
        return TorchExportRuntime(graph.to_torch_export(net, info.contract), device, info, source)
    model, info.onnx_exporter = graph.to_onnx(net, info.contract)
    info.set_padding(info.onnx_exporter == "dynamo")
    if name in OPENVINO_RUNTIMES:
        fp32 = name if name != "openvino_int8" else "openvino"
        runtime = OpenVinoRuntime(model, device, info, source, fp32)
        return runtime.to_int8() if name == "openvino_int8" else runtime
    runtime = OnnxRuntime(model, device, info, source)
    return runtime.to_int8() if name == "onnxruntime_int8" else runtime


def load_runtime(
    source: str | Path,
    runtime: str | None = None,
    device: str | torch.device = "cpu",
    style: str | int | None = None,
    style_mix: dict[str, float] | None = None,
) -> Runtime:
    """Load a model for inference from a checkpoint, a shipped model name or an exported file.

    Args:
        source: a Lightning checkpoint, an nst_lightning ``.pt`` model, a shipped model name
            (``starry_night``), a TorchScript file, a torch.export ``.pt2``, an ``.onnx`` file or an OpenVINO
            IR ``.xml`` (its ``.bin`` beside it).
        runtime: one of :data:`RUNTIMES`, ``auto`` (an exported file's own format; for a checkpoint
            :func:`default_runtime`; the measured, gated choice is :func:`nst_lightning.export.auto.choose_runtime`)
            or None (the file's own format; eager for checkpoints). A checkpoint with a non-eager runtime is
            converted in memory (checked by the export tests; ``export.py`` checks each file it writes). An
            ``.onnx`` file also runs with ``openvino``, ``openvino_bf16`` or ``openvino_int8``; an ``.xml`` with
            ``openvino`` or ``openvino_bf16``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        style, style_mix: a multi-style network's style (name or index) or blend (``{name: weight}``) for calls
            that name none (see :meth:`Runtime.set_style`); default style 0.

    Raises:
        NSTError: missing or unreadable file, unknown runtime, a runtime that cannot run that file, or an
            unknown style.
    """
    return _open_runtime(source, runtime, device).set_style(style, style_mix)


def _open_runtime(source: str | Path, runtime: str | None, device: str | torch.device) -> Runtime:
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    path = resolve_checkpoint(source)
    fmt = detect_format(path)
    if fmt in MOBILE_RUNTIME:
        return _mobile_from_file(path, fmt, runtime, dev)
    name = normalize_runtime(runtime)
    if fmt == "checkpoint":
        return runtime_from_model(load_model(path), name or "eager", dev)
    if name not in (None, "auto", RUNTIME_OF_FORMAT[fmt], *ALSO_RUNS.get(fmt, ())):
        raise NSTError(
            f"{path} is a {fmt} file, which runs with runtime={RUNTIME_OF_FORMAT[fmt]} (not {name}); "
            f"export the checkpoint to another format with export.py to use {name}"
        )
    if name in OPENVINO_RUNTIMES or fmt == "openvino":
        return _openvino_from_file(path, name or "openvino", dev)
    if fmt == "onnx":
        return OnnxRuntime(str(path), dev, None, str(path))
    extra = {graph.META_KEY: ""}
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: see docs/export.md
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        else:
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        raise NSTError(f"cannot load {fmt} file {path} ({type(exc).__name__}: {exc})") from exc
    if not extra[graph.META_KEY]:
        raise NSTError(f"{path} was not exported by nst_lightning (no {graph.META_KEY} inside)")
    info = ExportInfo.from_json(extra[graph.META_KEY], str(path))
    if fmt == "torchscript":
        return TorchScriptRuntime(module, dev, info, str(path))
    return TorchExportRuntime(program, dev, info, str(path))


def _mobile_from_file(path: Path, fmt: str, runtime: str | None, device: torch.device) -> Runtime:
    """A phone file: LiteRT or ExecuTorch on the CPU; a Core ML package cannot run here."""
    from nst_lightning.export.mobile_runtimes import ExecuTorchRuntime, LiteRtRuntime

    if fmt == "coreml":
        raise NSTError(
            f"{path} is a Core ML package: Core ML runs on macOS and iOS only (here coreml_structure() reads its "
            "inputs, outputs and metadata); run an .onnx or .tflite export of the same checkpoint instead"
        )
    if runtime not in (None, "auto", MOBILE_RUNTIME[fmt]):
        raise NSTError(f"{path} is a {fmt} file, which runs with runtime={MOBILE_RUNTIME[fmt]} (not {runtime})")
    if device.type != "cpu":
        raise NSTError(f"the {MOBILE_RUNTIME[fmt]} runtime here runs on the CPU only; use device=cpu")
    return LiteRtRuntime(path) if fmt == "tflite" else ExecuTorchRuntime(path)


def _openvino_from_file(path: Path, name: str, device: torch.device) -> OpenVinoRuntime:
    """An IR ``.xml`` or an ``.onnx`` file compiled by OpenVINO; int8 quantizes the ONNX file in memory."""
    if name == "auto":
        name = "openvino"
    if name != "openvino_int8":
        return OpenVinoRuntime(path, device, None, str(path), name)
    fp32 = OpenVinoRuntime(path.read_bytes(), device, None, str(path), "openvino")
    return fp32.to_int8()
