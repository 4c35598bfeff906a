"""Run a style network eagerly or from an exported file, behind one callable.

    runtime = load_runtime("starry_night")                        # eager, shipped model
    runtime = load_runtime("model.onnx")                          # format detected from the file
    runtime = load_runtime("starry_night", runtime="onnxruntime") # checkpoint converted in memory
    runtime = load_runtime("starry_night", runtime="onnxruntime_int8")  # the same, int8 weights
    out = runtime(images)   # B×3×H×W float in [0, 1] → B×3×H×W float32 in [0, 1] on runtime.device

Every runtime pads the input as the network does (see :mod:`nst_lightning.export.graph`) and crops the
result back, so any H, W ≥ 1 works, including images smaller than the network's minimum.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.graph import ExportInfo, SizeContract
from nst_lightning.inference.checkpoint import (
    LoadedModel,
    load_model,
    resolve_checkpoint,
    resolve_device,
    style_names_of_meta,
)
from nst_lightning.models.conditional import num_styles, resolve_style, style_weights

RUNTIMES = ("eager", "torchscript", "torch_export", "onnxruntime", "onnxruntime_int8")
# Which runtime runs which file format ("checkpoint": a Lightning checkpoint or an nst_lightning .pt model).
RUNTIME_OF_FORMAT = {"checkpoint": "eager", "torchscript": "torchscript", "torch_export": "torch_export",
                     "onnx": "onnxruntime"}  # fmt: skip
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "torch.export": "torch_export", "jit": "torchscript"}


class Runtime(ABC):
    """A loaded style network: ``runtime(images)`` maps B×3×H×W in [0, 1] to B×3×H×W in [0, 1].

    Attributes:
        name: ``eager``, ``torchscript``, ``torch_export`` or ``onnxruntime``.
        device: where inputs are run and outputs are returned.
        model_name: the network's registry name (``johnson``, ``mobilenetv3``, ...).
        meta: what the checkpoint says about the model (``style_name``, ``styles``, ...).
        source: the file it was loaded from.
        style_names: a multi-style network's styles, in order (one name for a single-style network).
        style: the S style weights used when a call names none (style 0 unless :meth:`set_style` chose).
    """

    name: str = ""

    def __init__(self, device: torch.device, contract: SizeContract, model_name: str, meta: dict[str, Any]):
        self.device = device
        self.contract = contract
        self.model_name = model_name
        self.meta = meta
        self.source = str(meta.get("source", ""))
        self.style_names = style_names_of_meta(meta)
        self.style: torch.Tensor | None = None

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def set_style(self, style: str | int | None = None, style_mix: dict[str, float] | None = None) -> Runtime:
        """Choose the style (a name or index) or blend (``{name: weight}``) used when a call names none."""
        weights = resolve_style(self.style_names, style, style_mix)
        self.style = weights if self.num_styles > 1 else None
        return self

    @abstractmethod
    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """Padded B×3×H'×W' float32 on ``self.device`` (and B×S style weights for a multi-style network, else
        None) → B×3×H'×W'."""

    def __call__(self, images: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """B×3×H×W in [0, 1] → B×3×H×W; ``style``: S or B×S weights, or B indices (default :attr:`style`)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] < 1 or images.shape[3] < 1:
            raise NSTError(f"expected images of shape B×3×H×W, got {tuple(images.shape)}")
        padded, (h, w) = self.contract.pad(images.to(self.device, torch.float32))
        weights = None
        if self.num_styles > 1:
            chosen = style if style is not None else self.style
            weights = style_weights(chosen, self.num_styles, images.shape[0], self.device)
            weights = weights.to(self.device, torch.float32).contiguous()
        with torch.inference_mode():
            out = self._forward(padded.contiguous(), weights)
        return out[..., :h, :w].float().clamp(0, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, device={self.device}, source={self.source!r})"


class EagerRuntime(Runtime):
    """The PyTorch module itself."""

    name = "eager"

    def __init__(self, net: nn.Module, device: torch.device, model_name: str, meta: dict[str, Any]):
        super().__init__(device, graph.size_contract(net), model_name, meta)
        self.net = net.eval().requires_grad_(False).to(device)
        if num_styles(net) != self.num_styles:  # a bare network, without the checkpoint's list of styles
            self.style_names = [str(i) for i in range(num_styles(net))]

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.net(padded) if style is None else self.net(padded, style)


class TorchScriptRuntime(Runtime):
    """A traced TorchScript module (``torch.jit``; deprecated in current PyTorch)."""

    name = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device, info: ExportInfo, source: str):
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        self.module = module.to(device).eval()

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.module(padded) if style is None else self.module(padded, style)


class TorchExportRuntime(Runtime):
    """A ``torch.export`` program, run as its graph module."""

    name = "torch_export"

    def __init__(self, program: torch.export.ExportedProgram, device: torch.device, info: ExportInfo, source: str):
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        self.program = program
        self.module = program.module()

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        return self.module(padded) if style is None else self.module(padded, style)


class OnnxRuntime(Runtime):
    """An ONNX model run by ONNX Runtime (CPU provider; CUDA provider with ``onnxruntime-gpu``)."""

    name = "onnxruntime"

    def __init__(self, model: bytes | str, device: torch.device, info: ExportInfo | None, source: str):
        ort = _import_onnxruntime()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise NSTError(
                    "onnxruntime here has no CUDA provider; install onnxruntime-gpu or use device=cpu "
                    "(or another runtime)"
                )
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        # One thread knob for every runtime: ONNX Runtime uses as many CPU threads as torch does.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:
            raise NSTError(f"onnxruntime cannot load {source} ({type(exc).__name__}: {exc})") from exc
        if info is None:
            text = self.session.get_modelmeta().custom_metadata_map.get(graph.META_KEY)
            if text is None:
                raise NSTError(f"{source} was not exported by nst_lightning (no {graph.META_KEY} metadata)")
            info = ExportInfo.from_json(text, source)
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        self.info = info
        self.model_bytes = model if isinstance(model, bytes) else None  # kept when converted in memory
        self.input_name = self.session.get_inputs()[0].name
        self.onnx_exporter = info.onnx_exporter  # which torch.onnx exporter wrote it (dynamo or torchscript)

    def to_int8(self) -> OnnxRuntime:
        """The same model with int8 weights (:func:`quantize_int8`), without exporting it again."""
        if self.model_bytes is None:
            raise NSTError(f"{self.source}: only a model converted in memory can be quantized here")
        runtime = OnnxRuntime(quantize_int8(self.model_bytes), self.device, self.info, self.source)
        runtime.name = "onnxruntime_int8"
        return runtime

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        feed = {self.input_name: padded.cpu().numpy()}
        if style is not None:
            feed[graph.STYLE_INPUT_NAME] = style.cpu().numpy()
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(out).to(self.device)


def _import_onnxruntime() -> Any:
    first = "onnxruntime" not in sys.modules
    # On import, onnxruntime's telemetry writes a session file (.ses) into the temp folder and never removes it:
    # the first import happens with a private temp folder, removed right after (nothing of ours needs the file).
    private = tempfile.mkdtemp(prefix="nst-ort-") if first else None
    saved = os.environ.get("TMPDIR")
    try:
        if private:
            os.environ["TMPDIR"] = private
        import onnxruntime
    except ImportError as exc:
        raise NSTError("the ONNX runtime needs onnxruntime: pip install 'nst_lightning[export]'") from exc
    finally:
        if private:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
            shutil.rmtree(private, ignore_errors=True)
    onnxruntime.disable_telemetry_events()
    return onnxruntime


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


def normalize_runtime(runtime: str | None) -> str | None:
    """A runtime name (aliases ``onnx``, ``ort``, ``torch.export``, ``jit`` accepted), ``auto`` or None."""
    if runtime in (None, ""):
        return None
    if runtime == "auto":
        return "auto"
    name = ALIASES.get(runtime, runtime)
    if name not in RUNTIMES:
        raise NSTError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return name


def detect_format(path: str | Path) -> str:
    """``checkpoint`` (Lightning or nst_lightning .pt), ``torchscript``, ``torch_export`` or ``onnx``."""
    path = Path(path)
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
            head = fh.read(1)
        if path.suffix.lower() == ".onnx" or head == b"\x08":  # protobuf field 1 (ir_version), a varint
            return "onnx"
    raise NSTError(
        f"{path}: unknown model format (expected a checkpoint, a TorchScript .ts, a torch.export .pt2 or an .onnx)"
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
    info = export_info(loaded, name)
    source = str(loaded.meta.get("source", ""))
    if name == "torchscript":
        return TorchScriptRuntime(graph.to_torchscript(net, info.contract), device, info, source)
    if name == "torch_export":
        return TorchExportRuntime(graph.to_torch_export(net, info.contract), device, info, source)
    model, info.onnx_exporter = graph.to_onnx(net, info.contract)
    info.set_padding(info.onnx_exporter == "dynamo")
    runtime = OnnxRuntime(model, device, info, source)
    return runtime.to_int8() if name == "onnxruntime_int8" else runtime


def quantize_int8(model: bytes) -> bytes:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per call (no calibration set).

    Measured on the development CPU (AVX2, no VNNI): about as fast as fp32 and about one 8-bit level off on
    average (benchmarks/serve_load.py); worth it where the CPU has int8 dot-product instructions.
    """
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        src, dst = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(model)
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        return dst.read_bytes()


def export_info(loaded: LoadedModel, exported_as: str) -> ExportInfo:
    """The metadata an exported file carries for ``loaded``."""
    contract = graph.size_contract(loaded.net)
    meta = {k: v for k, v in loaded.meta.items() if k != "source"}
    info = ExportInfo(exported_as, loaded.model_name, contract.multiple, contract.min_size,
                      dict(loaded.model_kwargs), meta)  # fmt: skip
    info.set_padding(exported_as in ("torch_export", "onnx", "onnxruntime"))  # the legacy ONNX exporter: see to_onnx
    return info


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
            (``starry_night``), a TorchScript file, a torch.export ``.pt2`` or an ``.onnx`` file.
        runtime: ``eager``, ``torchscript``, ``torch_export``, ``onnxruntime``, ``auto`` (an exported file's own
            format; for a checkpoint the fastest measured, :func:`default_runtime`) or None (the file's own
            format; eager for checkpoints). A checkpoint with a non-eager runtime is converted in memory
            (checked by the export tests; ``export.py`` checks each file it writes).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        style, style_mix: a multi-style network's style (name or index) or blend (``{name: weight}``) for calls
            that name none (see :meth:`Runtime.set_style`); default style 0.

    Raises:
        NSTError: missing or unreadable file, unknown runtime, a runtime that cannot run that file, or an
            unknown style.
    """
    return _open_runtime(source, runtime, device).set_style(style, style_mix)


def _open_runtime(source: str | Path, runtime: str | None, device: str | torch.device) -> Runtime:
    name = normalize_runtime(runtime)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    path = resolve_checkpoint(source)
    fmt = detect_format(path)
    if fmt == "checkpoint":
        return runtime_from_model(load_model(path), name or "eager", dev)
    if name not in (None, "auto", RUNTIME_OF_FORMAT[fmt]):
        raise NSTError(
            f"{path} is a {fmt} file, which runs with runtime={RUNTIME_OF_FORMAT[fmt]} (not {name}); "
            f"export the checkpoint to another format with export.py to use {name}"
        )
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
