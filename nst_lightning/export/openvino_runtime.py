"""OpenVINO on the CPU: an ONNX model (converted in memory or an ``.onnx`` file) or an OpenVINO IR ``.xml``
(+ ``.bin``), compiled in fp32, bf16 or from an int8 (QDQ) graph.

Precision is explicit: OpenVINO's own default on a CPU with bf16 arithmetic is bf16, so ``openvino`` asks for
``INFERENCE_PRECISION_HINT=f32`` (the eager result to about 1e-6) and ``openvino_bf16`` for ``bf16``, which is
refused on a CPU without AVX-512 BF16 or AMX (:mod:`nst_lightning.cpu_features`). ``openvino_int8`` compiles a
statically quantized graph (:mod:`nst_lightning.export.quantize`); its activations stay in fp32 between the
int8 convolutions. Threads: as many as torch uses (``torch.set_num_threads``, the one thread knob).
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from nst_lightning.cpu_features import has_fast_bf16
from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.base import Runtime
from nst_lightning.export.graph import ExportInfo

# Runtime name → (precision, OpenVINO's INFERENCE_PRECISION_HINT)
PRECISIONS = {"openvino": ("fp32", "f32"), "openvino_bf16": ("bf16", "bf16"), "openvino_int8": ("int8", "f32")}
IR_META_KEY = [graph.META_KEY]  # where an IR keeps the metadata (rt_info); an ONNX file: under "framework"
ONNX_META_KEY = ["framework", graph.META_KEY]


def import_openvino() -> Any:
    """The ``openvino`` module, or a one-line error saying how to get it."""
    try:
        import openvino
    except ImportError as exc:
        raise NSTError(
            "the openvino runtime needs openvino: pip install openvino (or use runtime=onnxruntime or eager)"
        ) from exc
    return openvino


@lru_cache(maxsize=1)
def core() -> Any:
    """One OpenVINO ``Core`` per process (it holds the plugin and its caches)."""
    return import_openvino().Core()


_COMPILED: weakref.WeakSet[Any] = weakref.WeakSet()  # every model compiled by :func:`compile_cpu`, while it lives


def compile_cpu(model: Any, config: dict[str, Any]) -> Any:
    """``model`` compiled for the CPU plugin with ``config``; :func:`release_memory` can reach it later."""
    compiled = core().compile_model(model, "CPU", config)
    _COMPILED.add(compiled)
    return compiled


def release_memory() -> int:
    """Free the intermediate buffers of every compiled model that is not running an inference now → how many
    were released.

    The CPU plugin keeps each compiled model's activation memory for the largest input it has run (about 200 MB
    for a 1024-px photo through a johnson network), so a service holds that for every network it has served;
    the next inference allocates it again, at a cost too small to measure beside the inference. OpenVINO refuses
    the release for a model with an inference in flight: that one is left as it is.
    """
    released = 0
    for compiled in list(_COMPILED):
        try:
            compiled.release_memory()
            released += 1
        except RuntimeError:  # an inference is running on it
            pass
    return released


def read_model(model: bytes | str | Path, source: str) -> Any:
    """An ``openvino.Model`` from ONNX bytes, an ``.onnx`` file or an IR ``.xml`` (its ``.bin`` beside it)."""
    try:
        return core().read_model(model if isinstance(model, bytes) else str(model))
    except NSTError:
        raise
    except Exception as exc:
        raise NSTError(f"OpenVINO cannot read {source} ({type(exc).__name__}: {_first_line(exc)})") from exc


def info_of(model: Any, source: str) -> ExportInfo:
    """The nst_lightning metadata inside an IR or ONNX model read by OpenVINO."""
    for key in (IR_META_KEY, ONNX_META_KEY):
        if model.has_rt_info(key):
            return ExportInfo.from_json(model.get_rt_info(key).astype(str), source)
    raise NSTError(f"{source} was not exported by nst_lightning (no {graph.META_KEY} metadata)")


def save_ir(onnx_model: bytes, info: ExportInfo, output: Path) -> Path:
    """Write ``onnx_model`` as OpenVINO IR: ``output`` (.xml) and the weights beside it (.bin), fp32, with
    ``info`` in the model's rt_info."""
    model = read_model(onnx_model, str(output))
    model.set_rt_info(info.to_json(), IR_META_KEY)
    try:
        import_openvino().save_model(model, str(output), compress_to_fp16=False)
    except Exception as exc:
        raise NSTError(f"cannot write OpenVINO IR {output} ({type(exc).__name__}: {_first_line(exc)})") from exc
    return output


def compile_config(name: str) -> dict[str, Any]:
    """The CPU plugin's settings for the runtime ``name`` (``openvino``, ``openvino_bf16``, ``openvino_int8``)."""
    precision, hint = PRECISIONS[name]
    if precision == "bf16" and not has_fast_bf16():
        raise NSTError("runtime=openvino_bf16 needs a CPU with AVX-512 BF16 or AMX (this one has neither); "
                       "use runtime=openvino")  # fmt: skip
    return {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY"}  # fmt: skip


class OpenVinoRuntime(Runtime):
    """A model compiled by OpenVINO's CPU plugin.

    Args:
        model: ONNX bytes (kept, so that :meth:`to_int8` can quantize them), an ``.onnx`` or IR ``.xml`` path.
        device: must be the CPU.
        info: the export metadata (None: read from the model).
        source: what it was loaded from, for messages.
        name: ``openvino`` (fp32), ``openvino_bf16`` or ``openvino_int8`` (``model`` already quantized).
    """

    def __init__(
        self, model: bytes | str | Path, device: torch.device, info: ExportInfo | None, source: str,
        name: str = "openvino",
    ) -> None:  # fmt: skip
        if device.type != "cpu":
            raise NSTError(f"runtime={name} runs on the CPU; use device=cpu (or runtime=eager on {device})")
        import_openvino()  # a clear error when it is missing (the Core may be cached from before)
        config = compile_config(name)
        ov_model = read_model(model, source)
        info = info or info_of(ov_model, source)
        super().__init__(device, info.contract, info.model_name, {**info.meta, "source": source})
        self.name, self.info, self.precision = name, info, PRECISIONS[name][0]
        self.model_bytes = model if isinstance(model, bytes) else None
        self.onnx_exporter = info.onnx_exporter  # which torch.onnx exporter wrote the graph it came from
        try:
            self.compiled = compile_cpu(ov_model, config)
        except Exception as exc:
            raise NSTError(f"OpenVINO cannot compile {source} ({type(exc).__name__}: {_first_line(exc)})") from exc
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def to_int8(self, calibration: list[torch.Tensor] | None = None) -> OpenVinoRuntime:
        """The same model, statically quantized to int8 with ``calibration`` photos (default: training photos;
        see :func:`nst_lightning.export.quantize.quantize_static_int8`)."""
        from nst_lightning.export.quantize import quantize_static_int8

        if self.model_bytes is None:
            raise NSTError(f"{self.source}: only an ONNX model converted in memory can be quantized here")
        int8 = quantize_static_int8(self.model_bytes, self.num_styles, calibration)
        return OpenVinoRuntime(int8, self.device, self.info, self.source, "openvino_int8")

    def with_precision(self, name: str) -> OpenVinoRuntime:
        """The same model compiled as ``openvino`` or ``openvino_bf16`` (no new export)."""
        model = self.model_bytes if self.model_bytes is not None else self.source
        return OpenVinoRuntime(model, self.device, self.info, self.source, name)

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        feed = {self.input_names[0]: padded.cpu().numpy()}
        if style is not None:
            feed[graph.STYLE_INPUT_NAME] = style.cpu().numpy()
        request = self.compiled.create_infer_request()  # one per call: concurrent calls never share one
        out = request.infer(feed)[self.compiled.output(0)]
        return torch.from_numpy(out).to(self.device)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
