"""Phone formats (fixed size; the tests that export are in the slow tier): ExecuTorch ``.pte`` and LiteRT
``.tflite`` run by their own runtimes against the eager network on odd sizes with a multi-style network's style
input; Core ML checked for its structure (its numbers need macOS); the messages for what a format cannot take.

The LiteRT converter (litert-torch) is not in the dev install (see pyproject.toml's `tflite` extra), so the
LiteRT runtime is also checked on a committed two-style ``.tflite`` (tests/data/mobile/) exported from the
committed ``two_styles.pt`` beside it: that test runs wherever ai-edge-litert is installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.export import check_parity, detect_format, load_runtime
from nst_lightning.export.mobile import export_mobile, parse_size
from nst_lightning.export.runtime import EagerRuntime
from nst_lightning.inference import EXPORT_FORMAT, LoadedModel, load_model
from nst_lightning.models import create_model
from nst_lightning.models.conditional import conditional_layers

from .conftest import REPO, run_cli

FIXTURES = REPO / "tests" / "data" / "mobile"
FP32_TOLERANCE = 1e-4  # measured: ExecuTorch ~1e-6 on these tiny networks, LiteRT ~1e-6
ODD = (45, 37)  # not a multiple of johnson_tiny's stride 4: the padding folded into the graph is exercised
MIX = {"waves": 0.3, "candy": 0.7}

has = {name: importlib.util.find_spec(name) is not None for name in ("executorch", "ai_edge_litert", "coremltools")}
has["litert_torch"] = importlib.util.find_spec("litert_torch") is not None
NO_LITERT_TORCH = (
    "litert-torch is not installed: it pins typing-extensions<4.13 (through xdsl), which would downgrade the "
    "service's pydantic, so it is not in the dev install; pip install '.[tflite]' in its own venv to run this"
)


def two_style_file(path: Path) -> Path:
    """A johnson_tiny network with two styles (random scales and shifts), as an nst model file."""
    torch.manual_seed(0)
    net = create_model("johnson_tiny", num_styles=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in conditional_layers(net):
            for params, centre in ((layer.scale, 1.0), (layer.shift, 0.0)):
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + centre)
    meta = {"styles": [{"name": "waves"}, {"name": "candy"}]}
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": {"num_styles": 2},
                "state_dict": net.state_dict(), "meta": meta}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def two_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_style_file(tmp_path_factory.mktemp("two") / "two.pt")


@pytest.fixture(scope="module")
def two(two_ckpt: Path) -> LoadedModel:
    return load_model(two_ckpt)


def assert_matches_eager(loaded: LoadedModel, path: Path, size: tuple[int, int], tolerance: float) -> None:
    """Style 0, a blend, and a batch with one style per image, all against the eager network at ``size``."""
    runtime = load_runtime(path)
    assert runtime.size == size and runtime.style_names == ["waves", "candy"]
    for mix in (None, MIX):
        eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta).set_style(style_mix=mix)
        diffs = check_parity(eager, runtime.set_style(style_mix=mix), [size], batch=2)
        assert max(diffs.values()) < tolerance, (mix, diffs)
    x, per_image = torch.rand(2, 3, *size), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta)
    assert (runtime(x, per_image) - eager(x, per_image)).abs().max() < tolerance


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["executorch"], reason="executorch is not installed (the dev install has it)")
def test_executorch_fp32_matches_eager_at_an_odd_size_with_the_style_input(two: LoadedModel, tmp_path: Path) -> None:
    path = export_mobile(two, "executorch", tmp_path / "two.pte", size=ODD)
    assert detect_format(path) == "executorch"
    assert_matches_eager(two, path, ODD, FP32_TOLERANCE)
    info = load_runtime(path).info
    assert info.fixed_size == list(ODD) and info.precision == "fp32" and info.pads_inside
    assert info.io["input"]["layout"] == "NCHW" and info.io["input"]["channels"] == "RGB"
    assert info.io["input"]["range"] == [0.0, 1.0] and info.io["style_input"]["name"] == "style"


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["executorch"], reason="executorch is not installed (the dev install has it)")
def test_executorch_int8_is_calibrated_smaller_and_close(two: LoadedModel, tmp_path: Path) -> None:
    """PT2E int8 on the sample photos: a quarter of the fp32 weights, a few levels off (a random tiny network
    says nothing about the photo quality gate, which export.py applies and docs/export.md reports)."""
    fp32 = export_mobile(two, "executorch", tmp_path / "fp32.pte", size=(64, 48))
    int8 = export_mobile(two, "executorch", tmp_path / "int8.pte", size=(64, 48), precision="int8")
    assert load_runtime(int8).precision == "int8"
    assert int8.stat().st_size < fp32.stat().st_size
    x = torch.rand(1, 3, 64, 48)
    eager = EagerRuntime(two.net, torch.device("cpu"), two.model_name, two.meta)
    assert (load_runtime(int8)(x) - eager(x)).abs().mean() < 0.05


@pytest.mark.skipif(not has["ai_edge_litert"], reason="ai-edge-litert is not installed (the dev install has it)")
def test_litert_runs_the_committed_tflite_like_its_checkpoint() -> None:
    """tests/data/mobile/two_styles.tflite was written by export.py (litert-torch) from two_styles.pt at 45×37."""
    loaded = load_model(FIXTURES / "two_styles.pt")
    path = FIXTURES / "two_styles.tflite"
    assert detect_format(path) == "tflite"
    assert_matches_eager(loaded, path, ODD, FP32_TOLERANCE)
    runtime = load_runtime(path)
    assert runtime.name == "litert" and runtime.info.io["input"]["sizes"].startswith("exactly 1x3x45x37")


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["litert_torch"], reason=NO_LITERT_TORCH)
@pytest.mark.parametrize("precision, tolerance", [("fp32", FP32_TOLERANCE), ("fp16", 2e-2)])
def test_tflite_export_matches_eager(precision: str, tolerance: float, two: LoadedModel, tmp_path: Path) -> None:
    path = export_mobile(two, "tflite", tmp_path / "two.tflite", size=ODD, precision=precision)
    assert load_runtime(path).precision == precision
    assert_matches_eager(two, path, ODD, tolerance)


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["litert_torch"], reason=NO_LITERT_TORCH)
def test_committed_tflite_fixture_is_what_export_writes(tmp_path: Path) -> None:
    """Regenerate: python export.py ckpt=tests/data/mobile/two_styles.pt format=tflite size=45x37
    output=tests/data/mobile/two_styles.tflite (in the venv that has litert-torch)."""
    loaded = load_model(FIXTURES / "two_styles.pt")
    fresh = load_runtime(export_mobile(loaded, "tflite", tmp_path / "fresh.tflite", size=ODD))
    committed = load_runtime(FIXTURES / "two_styles.tflite")
    x = torch.rand(1, 3, *ODD)
    assert (fresh(x) - committed(x)).abs().max() < FP32_TOLERANCE


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["coremltools"], reason="coremltools is not installed (the dev install has it)")
def test_coreml_package_has_the_contract_inside(two: LoadedModel, tmp_path: Path) -> None:
    from nst_lightning.export.mobile_runtimes import check_coreml

    path = export_mobile(two, "coreml", tmp_path / "two.mlpackage", size=ODD)
    assert detect_format(path) == "coreml"
    found = check_coreml(path, expect_styles=2)
    assert found["inputs"] == {"image": [1, 3, 45, 37], "style": [1, 2]}
    assert found["outputs"] == {"stylized": [1, 3, 45, 37]}
    assert set(found["dtypes"].values()) == {"FLOAT32"}
    assert found["info"].fixed_size == [45, 37] and found["info"].meta["styles"][1]["name"] == "candy"
    with pytest.raises(NSTError, match="Core ML runs on macOS and iOS only"):
        load_runtime(path)
    # A size that needs no padding (a multiple of the stride) leaves a no-op crop, which must convert too; fp16
    # computes in half precision but keeps the float32 tensors of the contract.
    even = export_mobile(two, "coreml", tmp_path / "even.mlpackage", size=(48, 36), precision="fp16")
    found = check_coreml(even, expect_styles=2)
    assert found["outputs"] == {"stylized": [1, 3, 48, 36]} and set(found["dtypes"].values()) == {"FLOAT32"}
    assert found["info"].precision == "fp16"


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["executorch"], reason="executorch is not installed (the dev install has it)")
def test_cli_exports_checks_and_reports_a_pte(two_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.pte"
    done = run_cli("export.py", f"ckpt={two_ckpt}", "format=executorch", "size=45x37", f"output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "parity executorch vs eager at 45×37 (waves)" in done.stdout
    assert "parity executorch vs eager at 45×37 (even blend)" in done.stdout
    assert out.is_file()


@pytest.mark.slow  # an export: one to three minutes on a loaded 2-core CPU
@pytest.mark.skipif(not has["executorch"], reason="executorch is not installed (the dev install has it)")
def test_cli_int8_runs_the_photo_gate_and_its_verdict_sets_the_exit_status(two_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "two_int8.pte"
    args = ["format=executorch", "precision=int8", "size=64x48", f"output={out}"]
    done = run_cli("export.py", f"ckpt={two_ckpt}", *args)
    verdict = [line for line in done.stdout.splitlines() if "int8 quality gate on photos:" in line]
    assert len(verdict) == 1, done.stdout[-2000:] + done.stderr[-2000:]
    if "passed" in verdict[0]:
        assert done.returncode == 0
    else:
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1].startswith("error: the int8 executorch model is not good enough")
    assert out.is_file()


def test_fixed_size_runtime_refuses_another_size() -> None:
    if not has["ai_edge_litert"]:
        pytest.skip("ai-edge-litert is not installed (the dev install has it)")
    runtime = load_runtime(FIXTURES / "two_styles.tflite")
    with pytest.raises(NSTError, match=r"takes 45×37 images only .* export again with size=40x30"):
        runtime(torch.rand(1, 3, 40, 30))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["format=executorch", "size=5x5"], "size=5x5 is below the johnson_tiny network's minimum of 8 px"),
        (["format=executorch", "precision=fp16"], "format=executorch offers precision= fp32 or int8, not 'fp16'"),
        (["format=tflite", "precision=int8"], "format=tflite offers precision= fp32 or fp16, not 'int8'"),
        (["format=coreml", "size=12by9"], "size must be HxW with positive ints"),
        (["format=onnx", "size=64x64"], "size= and precision= apply to the fixed-size phone formats"),
        (["format=executorch", "half=true"], "for format=executorch use precision=fp32|int8"),
        (["format=executorch", "output=/tmp/x.onnx"], "format=executorch files end in .pte"),
        (["format=executorch", "precision=int8", "calibration=/nonexistent"], "no calibration photos in /nonexistent"),
    ],
)
def test_bad_requests_are_one_line_errors(overrides: list[str], message: str, two_ckpt: Path, tmp_path: Path) -> None:
    if "calibration=/nonexistent" in overrides and not has["executorch"]:
        pytest.skip("executorch is not installed (the dev install has it)")
    suffix = {"executorch": ".pte", "tflite": ".tflite", "coreml": ".mlpackage", "onnx": ".onnx"}
    fmt = overrides[0].split("=")[1]
    output = [] if any(o.startswith("output=") for o in overrides) else [f"output={tmp_path / 'model'}{suffix[fmt]}"]
    done = run_cli("export.py", f"ckpt={two_ckpt}", *overrides, *output)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]


def test_missing_converter_is_a_one_line_error(two_ckpt: Path, tmp_path: Path) -> None:
    if has["litert_torch"]:
        pytest.skip("litert-torch is installed here: the missing-converter message cannot be seen")
    out = tmp_path / "two.tflite"
    done = run_cli("export.py", f"ckpt={two_ckpt}", "format=tflite", "size=45x37", f"output={out}")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: format=tflite needs the litert_torch package") and "[tflite]" in line
    assert not out.exists()  # refused before writing anything


def test_parse_size() -> None:
    assert parse_size("161x119") == (161, 119) and parse_size([64, 48]) == (64, 48) and parse_size(None) is None
    for bad in ("0x5", "axb", "12", [1, 2, 3]):
        with pytest.raises(NSTError):
            parse_size(bad)


def test_committed_fixture_metadata_is_readable_json() -> None:
    if not has["ai_edge_litert"]:
        pytest.skip("ai-edge-litert is not installed (the dev install has it)")
    from nst_lightning.export.mobile_runtimes import tflite_metadata

    info = tflite_metadata(FIXTURES / "two_styles.tflite")
    assert json.loads(info.to_json())["fixed_size"] == [45, 37] and info.model_name == "johnson_tiny"
