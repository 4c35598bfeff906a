"""Exported models and the runtimes that run them (torch and onnx only: no Lightning, no Hydra).

from nst_lightning.export import export, check_parity, load_runtime
from nst_lightning.inference.checkpoint import load_model

loaded = load_model("starry_night")
path = export(loaded, "onnx", "starry_night.onnx")
print(check_parity(loaded, path))          # {(96, 128): 1.2e-06, (161, 119): 1.1e-06}
runtime = load_runtime(path)               # or load_runtime("starry_night", runtime="onnxruntime")
stylized = runtime(images)                 # B×3×H×W in [0, 1] → B×3×H×W in [0, 1]
fastest = choose_runtime(loaded)           # the fastest runtime that passes the quality gate here (cached)
"""

from nst_lightning.export import convert  # noqa: F401  (registers the stylize paths' runtime converter)
from nst_lightning.export.auto import auto_runtime, choose_runtime
from nst_lightning.export.exporter import PARITY_SIZES, check_parity, export
from nst_lightning.export.gate import MAX_MEAN_ABS_DIFF, MAX_OBJECTIVE_REL, GateResult, check_gate
from nst_lightning.export.graph import FORMATS, SUFFIXES, SizeContract, size_contract
from nst_lightning.export.runtime import (
    RUNTIMES,
    Runtime,
    default_runtime,
    detect_format,
    load_runtime,
    runtime_from_model,
)

__all__ = [
    "FORMATS",
    "MAX_MEAN_ABS_DIFF",
    "MAX_OBJECTIVE_REL",
    "GateResult",
    "PARITY_SIZES",
    "RUNTIMES",
    "SUFFIXES",
    "Runtime",
    "SizeContract",
    "auto_runtime",
    "check_gate",
    "check_parity",
    "choose_runtime",
    "default_runtime",
    "detect_format",
    "export",
    "load_runtime",
    "runtime_from_model",
    "size_contract",
]
