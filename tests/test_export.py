"""Export to TorchScript, torch.export and ONNX: each written file against the eager network, on two sizes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.export import run
from nst_lightning.errors import NSTError
from nst_lightning.export import (
    PARITY_SIZES,
    SUFFIXES,
    check_parity,
    detect_format,
    export,
    load_runtime,
)
from nst_lightning.inference import EXPORT_FORMAT, LoadedModel, load_model
from nst_lightning.models import create_model

from .conftest import REPO, run_cli

GRAPH_FORMATS = ("torchscript", "torch_export", "onnx")
RUNTIME_OF = {"torchscript": "torchscript", "torch_export": "torch_export", "onnx": "onnxruntime"}
FP32_TOLERANCE = 1e-4  # measured: 0 for TorchScript and torch.export, ~1e-6 for ONNX Runtime


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A johnson_tiny model file with random (non-trivial) weights, as export_model writes it."""
    torch.manual_seed(0)
    net = create_model("johnson_tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    meta = {"style_name": "noise"}
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": net.state_dict(), "meta": meta}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tiny(tiny_ckpt: Path) -> LoadedModel:
    return load_model(tiny_ckpt)


@pytest.fixture(scope="module")
def exported(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model written once in each graph format."""
    folder = tmp_path_factory.mktemp("exported")
    return {fmt: export(tiny, fmt, folder / f"tiny{SUFFIXES[fmt]}") for fmt in GRAPH_FORMATS}


@pytest.mark.parametrize("fmt", GRAPH_FORMATS)
def test_exported_file_matches_eager_on_two_sizes(fmt: str, tiny: LoadedModel, exported: dict[str, Path]) -> None:
    path = exported[fmt]
    assert detect_format(path) == fmt
    runtime = load_runtime(path)
    assert runtime.name == RUNTIME_OF[fmt]
    assert runtime.model_name == "johnson_tiny" and runtime.meta["style_name"] == "noise"
    diffs = check_parity(tiny, runtime)
    assert set(diffs) == set(PARITY_SIZES)
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


@pytest.mark.parametrize("fmt", GRAPH_FORMATS)
def test_exported_file_takes_any_batch_and_size(fmt: str, tiny: LoadedModel, exported: dict[str, Path]) -> None:
    """Dynamic batch, H and W: a batch of 3, a tiny 3×5 image (below the network's 8 px) and a tall one."""
    runtime = load_runtime(exported[fmt])
    diffs = check_parity(tiny, runtime, sizes=[(3, 5), (203, 37)], batch=3)
    assert max(diffs.values()) < FP32_TOLERANCE, diffs
    out = runtime(torch.rand(2, 3, 21, 9))
    assert out.shape == (2, 3, 21, 9) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    ("asked", "expected"),
    [("eager", "eager"), ("torchscript", "torchscript"), ("torch_export", "torch_export"), ("auto", "onnxruntime")],
)
def test_checkpoint_converts_in_memory_to_each_runtime(asked: str, expected: str, tiny_ckpt: Path, tiny) -> None:
    """What the service does: ``load_runtime(ckpt, runtime=...)`` without writing a file; ``auto`` is the
    fastest measured on the CPU (ONNX Runtime)."""
    runtime = load_runtime(tiny_ckpt, runtime=asked)
    assert runtime.name == expected and runtime.device == torch.device("cpu")
    diffs = check_parity(tiny, runtime, sizes=[(40, 52), (33, 17)])
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


def test_legacy_onnx_exporter_also_gives_dynamic_sizes(tmp_path: Path, tiny: LoadedModel) -> None:
    """The fallback when the dynamo exporter fails: ``dynamic_axes`` on the TorchScript-based exporter."""
    path = export(tiny, "onnx", tmp_path / "legacy.onnx", onnx_exporter="torchscript")
    runtime = load_runtime(path)
    assert runtime.onnx_exporter == "torchscript"
    diffs = check_parity(tiny, runtime, sizes=[*PARITY_SIZES, (3, 5)], batch=2)
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


def test_wrong_runtime_bad_files_and_names_are_clear_errors(tmp_path: Path, exported: dict[str, Path], tiny) -> None:
    assert load_runtime(exported["torch_export"], runtime="auto").name == "torch_export"  # a file's own format
    with pytest.raises(NSTError, match="runs with runtime=onnxruntime"):
        load_runtime(exported["onnx"], runtime="torchscript")
    with pytest.raises(NSTError, match="unknown runtime"):
        load_runtime(exported["onnx"], runtime="tensorrt")
    garbage = tmp_path / "model.bin"
    garbage.write_bytes(b"\x00not a model")
    with pytest.raises(NSTError, match="unknown model format"):
        load_runtime(garbage)
    with pytest.raises(NSTError, match="not found"):
        load_runtime(tmp_path / "missing.onnx")
    with pytest.raises(NSTError, match="unknown export format"):
        export(tiny, "tflite", tmp_path / "x.tflite")
    with pytest.raises(NSTError, match=r"\.pt2"):
        export(tiny, "torch_export", tmp_path / "x.pt")
    with pytest.raises(NSTError, match="expected images of shape"):
        load_runtime(exported["torchscript"])(torch.rand(3, 8, 8))


def test_nst_format_half_stores_fp16_weights_within_tolerance(tmp_path: Path, tiny_ckpt: Path, tiny) -> None:
    path = export(tiny, "nst", tmp_path / "half.pt", half=True)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == EXPORT_FORMAT
    assert {v.dtype for v in raw["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    runtime = load_runtime(path)
    assert runtime.name == "eager"
    assert 0 < max(check_parity(tiny, runtime).values()) < 2e-2


def compose_export(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("export", overrides=overrides)


def test_run_writes_checks_and_reports(tmp_path: Path, tiny_ckpt: Path) -> None:
    out = tmp_path / "m.ts"
    result = run(compose_export([f"ckpt={tiny_ckpt}", "format=torchscript", f"output={out}"]))
    assert result["output"] == str(out) and out.is_file() and result["runtime"] == "torchscript"
    assert set(result["max_abs_diff"]) == {"96x128", "161x119"}
    assert max(result["max_abs_diff"].values()) < FP32_TOLERANCE
    # The tolerance is enforced: fp16 weights round, so a zero tolerance fails a half export.
    with pytest.raises(NSTError, match="differs from the eager network"):
        run(compose_export([f"ckpt={tiny_ckpt}", "format=nst", "half=true", f"output={tmp_path / 'h.pt'}",
                            "half_tolerance=0"]))  # fmt: skip
    with pytest.raises(NSTError, match="tolerance must be"):
        run(compose_export([f"ckpt={tiny_ckpt}", "format=torchscript", f"output={out}", "tolerance=-1"]))
    with pytest.raises(NSTError, match="unknown format"):
        run(compose_export([f"ckpt={tiny_ckpt}", "format=caffe"]))


def run_export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(str(REPO / "export.py"), *args, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_entry_point_exports_the_shipped_model(tmp_path: Path) -> None:
    result = run_export("ckpt=starry_night", "format=onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "starry_night.onnx").is_file()
    assert result.stdout.count("max abs diff") == 2, result.stdout
    bad = run_export("ckpt=no_such_model", "format=onnx", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: checkpoint not found") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", GRAPH_FORMATS)
def test_shipped_model_exports_to_each_format(fmt: str, tmp_path: Path) -> None:
    loaded = load_model("starry_night")
    path = export(loaded, fmt, tmp_path / f"starry_night{SUFFIXES[fmt]}")
    diffs = check_parity(loaded, path, sizes=[(96, 128), (160, 120), (97, 131)])
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_timm_network_exports(fmt: str, tmp_path: Path) -> None:
    """A timm U-Net (stride 32, 64 px minimum) with random weights (all formats: benchmarks/inference.py)."""
    torch.manual_seed(0)
    loaded = LoadedModel(create_model("mobilenetv3").eval(), "mobilenetv3", {}, {})
    path = export(loaded, fmt, tmp_path / f"mobilenetv3{SUFFIXES[fmt]}")
    diffs = check_parity(loaded, path, sizes=[(96, 128), (161, 119), (20, 30)])
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


@pytest.mark.slow
def test_the_shipped_multistyle_network_exports_with_its_styles_by_name(tmp_path: Path) -> None:
    from nst_lightning.export import load_runtime
    from nst_lightning.inference import stylize

    result = run_export("ckpt=multistyle", "format=onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "multistyle.onnx"
    loaded = load_model("multistyle")
    x = torch.rand(1, 3, 67, 93)
    runtime = load_runtime(path, style="the_wave")
    assert runtime.style_names == ["starry_night", "the_scream", "the_wave", "candy", "mosaic"]
    for choice in ({"style": "the_wave"}, {"style_mix": {"starry_night": 0.5, "candy": 0.5}}):
        ours = stylize(x, runtime, input_noise=0.0, **choice)  # type: ignore[arg-type]
        eager = stylize(x, loaded, input_noise=0.0, **choice)  # type: ignore[arg-type]
        assert (ours - eager).abs().max() < 2e-3, choice  # the shipped weights are fp16, ONNX runs them in fp32
