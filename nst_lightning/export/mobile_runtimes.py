"""Run (or, for Core ML on Linux, inspect) the fixed-size phone files that :mod:`.mobile` writes.

    runtime = load_runtime("starry_night.tflite")   # LiteRtRuntime: the LiteRT interpreter (ai-edge-litert)
    runtime = load_runtime("starry_night.pte")      # ExecuTorchRuntime: ExecuTorch's Python runtime
    out = runtime(images)                           # B×3×H×W, H×W the file's fixed size → B×3×H×W
    coreml_structure("starry_night.mlpackage")      # inputs, outputs, shapes, metadata (running needs macOS)

A fixed-size file takes one image of its own size: the runtime runs a batch image by image and refuses another
size with a one-line error naming the size to export for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import graph
from nst_lightning.export.base import Runtime
from nst_lightning.export.graph import ExportInfo, SizeContract
from nst_lightning.export.mobile import METHOD_META, require

NO_PADDING = SizeContract(multiple=1, min_size=1)  # the files pad themselves, at their one size


class FixedSizeRuntime(Runtime):
    """A file that takes exactly one 1×3×H×W image (and a 1×S style row): batches run image by image."""

    def __init__(self, info: ExportInfo, source: str):
        if not info.fixed_size:
            raise NSTError(f"{source}: its metadata names no fixed size; re-export it with export.py")
        super().__init__(torch.device("cpu"), NO_PADDING, info.model_name, {**info.meta, "source": source})
        self.info = info
        self.size = (int(info.fixed_size[0]), int(info.fixed_size[1]))
        self.precision = info.precision

    def _forward(self, padded: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        if tuple(padded.shape[-2:]) != self.size:
            h, w = padded.shape[-2:]
            raise NSTError(
                f"{self.source} takes {self.size[0]}×{self.size[1]} images only (a fixed-size {self.name} file), "
                f"got {h}×{w}: resize the photo, or export again with size={h}x{w}"
            )
        rows = [
            self._run_one(padded[i : i + 1].contiguous(), None if style is None else style[i : i + 1].contiguous())
            for i in range(padded.shape[0])
        ]
        return torch.cat(rows)

    def _run_one(self, image: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """1×3×H×W (and 1×S) → 1×3×H×W."""
        raise NotImplementedError


# --- LiteRT -------------------------------------------------------------------------------------------------


def tflite_metadata(path: str | Path) -> ExportInfo:
    """The ``nst_lightning.json`` entry of a ``.tflite`` file (read lazily: no copy of the weights)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == graph.META_KEY:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy()
            return ExportInfo.from_json(bytes(raw), str(path))
    raise NSTError(f"{path} was not exported by nst_lightning (no {graph.META_KEY} metadata)")


class LiteRtRuntime(FixedSizeRuntime):
    """A ``.tflite`` file run by the LiteRT interpreter (XNNPACK delegate on the CPU)."""

    name = "litert"

    def __init__(self, path: str | Path):
        interpreter = require("ai_edge_litert.interpreter", "tflite")
        super().__init__(tflite_metadata(path), str(path))
        try:
            self.interpreter = interpreter.Interpreter(model_path=str(path), num_threads=torch.get_num_threads())
            self.runner = self.interpreter.get_signature_runner()
        except Exception as exc:
            raise NSTError(f"LiteRT cannot load {path} ({type(exc).__name__}: {exc})") from exc

    def _run_one(self, image: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        feeds = {graph.INPUT_NAME: image.numpy()}
        if style is not None:
            feeds[graph.STYLE_INPUT_NAME] = style.numpy()
        return torch.from_numpy(self.runner(**feeds)[graph.OUTPUT_NAME].copy())


# --- ExecuTorch ---------------------------------------------------------------------------------------------


class ExecuTorchRuntime(FixedSizeRuntime):
    """A ``.pte`` program run by ExecuTorch's Python runtime (its XNNPACK delegate)."""

    name = "executorch"

    def __init__(self, path: str | Path):
        runtime = require("executorch.runtime", "executorch")
        try:
            program = runtime.Runtime.get().load_program(str(path))
            if METHOD_META not in program.method_names:
                raise NSTError(f"{path} was not exported by nst_lightning (no {METHOD_META} method)")
            text = program.load_method(METHOD_META).execute([])[0]
            self.method = program.load_method("forward")
        except NSTError:
            raise
        except Exception as exc:
            raise NSTError(f"ExecuTorch cannot load {path} ({type(exc).__name__}: {exc})") from exc
        super().__init__(ExportInfo.from_json(text, str(path)), str(path))

    def _run_one(self, image: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        inputs = [image] if style is None else [image, style]
        return self.method.execute(inputs)[0].clone()


# --- Core ML ------------------------------------------------------------------------------------------------


def coreml_structure(path: str | Path) -> dict[str, Any]:
    """What a ``.mlpackage`` takes and gives, read from its spec (no Core ML runtime needed):
    ``{"inputs": {name: shape}, "outputs": {name: shape}, "dtypes": {name: type}, "info": ExportInfo}``.

    Raises:
        NSTError: missing coremltools, an unreadable package, or one without nst_lightning metadata.
    """
    ct = require("coremltools", "coreml")
    try:
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:
        raise NSTError(f"coremltools cannot read {path} ({type(exc).__name__}: {exc})") from exc
    described = {}
    dtypes = {}
    for kind in ("input", "output"):
        described[kind + "s"] = {}
        for feature in getattr(spec.description, kind):
            array = feature.type.multiArrayType
            described[kind + "s"][feature.name] = list(array.shape)
            dtypes[feature.name] = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    text = spec.description.metadata.userDefined.get(graph.META_KEY)
    if not text:
        raise NSTError(f"{path} was not exported by nst_lightning (no {graph.META_KEY} metadata)")
    return {**described, "dtypes": dtypes, "info": ExportInfo.from_json(text, str(path))}


def check_coreml(path: str | Path, expect_styles: int) -> dict[str, Any]:
    """Check a ``.mlpackage``'s structure against its own metadata: a 1×3×H×W ``image`` (and 1×S ``style``) in,
    a 1×3×H×W ``stylized`` out. Returns :func:`coreml_structure`'s dict.

    Raises:
        NSTError: any mismatch.
    """
    found = coreml_structure(path)
    info: ExportInfo = found["info"]
    h, w = info.fixed_size or (0, 0)
    expected_in = {graph.INPUT_NAME: [1, 3, h, w]}
    if expect_styles > 1:
        expected_in[graph.STYLE_INPUT_NAME] = [1, expect_styles]
    expected = {"inputs": expected_in, "outputs": {graph.OUTPUT_NAME: [1, 3, h, w]}}
    for key, want in expected.items():
        if found[key] != want:
            raise NSTError(f"{path}: {key} {json.dumps(found[key])}, expected {json.dumps(want)}")
    return found
