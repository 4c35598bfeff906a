"""ONNX Runtime: an ONNX model converted in memory or read from an ``.onnx`` file, fp32 or int8 weights."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.base import Runtime
from nst_lightning.export.graph import ExportInfo


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
        # No CPU memory arena: it keeps the largest image's buffers for the life of the session (a 1024-px image
        # left RSS 1.4 GB higher, where without it 50 MB; 512 px no slower, measured on a 2-core AMD EPYC).
        options.enable_cpu_mem_arena = False
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


def quantize_int8(model: bytes) -> bytes:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per call (no calibration set).

    Measured on the development CPU (AVX2, no VNNI): about as fast as fp32 and about one 8-bit level off on
    average (benchmarks/serve_load.py); worth it where the CPU has int8 dot-product instructions.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        src, dst = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(model)
        quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        return dst.read_bytes()
