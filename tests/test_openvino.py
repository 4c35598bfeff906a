"""The OpenVINO runtime, IR export, the quality gate and ``runtime=auto`` (tiny random networks, CPU)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.export import run
from nst_lightning.cpu_features import has_fast_bf16
from nst_lightning.errors import NSTError
from nst_lightning.export import (
    check_gate,
    check_parity,
    choose_runtime,
    detect_format,
    export,
    load_runtime,
    openvino_runtime,
)
from nst_lightning.export.auto import candidate_names
from nst_lightning.export.openvino_runtime import OpenVinoRuntime
from nst_lightning.export.quantize import quantize_static_int8, training_photos
from nst_lightning.export.runtime import EagerRuntime, runtime_from_model
from nst_lightning.inference import LoadedModel
from nst_lightning.models import create_model
from nst_lightning.models.conditional import conditional_layers

pytest.importorskip("openvino")
FP32_TOLERANCE = 1e-4


def _loaded(num_styles: int = 1) -> LoadedModel:
    torch.manual_seed(0)
    net = create_model("johnson_tiny", num_styles=num_styles).eval()
    meta: dict = {"style_name": "noise"}
    if num_styles > 1:  # each style its own scales and shifts, as training would leave them
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for layer in conditional_layers(net):
                for params, centre in ((layer.scale, 1.0), (layer.shift, 0.0)):
                    for p in params:
                        p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + centre)
        meta = {"styles": [{"name": "wave"}, {"name": "candy"}]}
    return LoadedModel(net=net, model_name="johnson_tiny", model_kwargs={"num_styles": num_styles}, meta=meta)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return _loaded()


@pytest.fixture(scope="module")
def openvino_fp32(tiny: LoadedModel) -> OpenVinoRuntime:
    runtime = runtime_from_model(tiny, "openvino")
    assert isinstance(runtime, OpenVinoRuntime)
    return runtime


def test_openvino_matches_eager_on_odd_sizes_and_batches(tiny: LoadedModel, openvino_fp32: OpenVinoRuntime) -> None:
    assert openvino_fp32.name == "openvino" and openvino_fp32.precision == "fp32"
    diffs = check_parity(tiny, openvino_fp32, sizes=[(301, 203), (5, 3)], batch=2)
    assert max(diffs.values()) < FP32_TOLERANCE, diffs


def test_openvino_runs_a_multistyle_blend_and_a_style_per_image() -> None:
    loaded = _loaded(num_styles=2)
    mix = {"wave": 0.3, "candy": 0.7}
    runtime = runtime_from_model(loaded, "openvino").set_style(style_mix=mix)
    eager = EagerRuntime(loaded.net, torch.device("cpu"), loaded.model_name, loaded.meta).set_style(style_mix=mix)
    assert runtime.style_names == ["wave", "candy"]
    x = torch.rand(2, 3, 45, 37)
    assert (runtime(x) - eager(x)).abs().max() < FP32_TOLERANCE
    per_image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert (runtime(x, per_image) - eager(x, per_image)).abs().max() < FP32_TOLERANCE
    assert (runtime(x, per_image)[0] - runtime(x, per_image)[1]).abs().mean() > 0  # the styles differ


def test_ir_export_round_trip(tiny: LoadedModel, tmp_path: Path) -> None:
    path = export(tiny, "openvino", tmp_path / "tiny.xml")
    assert path.suffix == ".xml" and path.with_suffix(".bin").is_file()
    assert detect_format(path) == "openvino"
    runtime = load_runtime(path)
    assert runtime.name == "openvino" and runtime.model_name == "johnson_tiny"
    assert runtime.meta["style_name"] == "noise" and runtime.contract.multiple == 4
    assert max(check_parity(tiny, runtime, sizes=[(301, 203), (3, 5)], batch=3).values()) < FP32_TOLERANCE
    onnx = export(tiny, "onnx", tmp_path / "tiny.onnx")  # an .onnx file runs in OpenVINO too
    assert max(check_parity(tiny, load_runtime(onnx, runtime="openvino")).values()) < FP32_TOLERANCE
    with pytest.raises(NSTError, match="runs with runtime=openvino"):
        load_runtime(path, runtime="onnxruntime")


def test_export_cli_writes_ir_and_checks_parity(tiny: LoadedModel, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save({"format": "nst_lightning.model", "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": tiny.net.state_dict(), "meta": tiny.meta}, ckpt)  # fmt: skip
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt={ckpt}", "format=openvino", f"output={tmp_path / 'm.xml'}"])
    result = run(cfg)
    assert result["runtime"] == "openvino" and Path(result["output"]).with_suffix(".bin").is_file()
    assert max(result["max_abs_diff"].values()) < FP32_TOLERANCE


@pytest.mark.skipif(not has_fast_bf16(), reason="this CPU has no AVX-512 BF16 or AMX")
def test_bf16_is_close_on_photos(tiny: LoadedModel, openvino_fp32: OpenVinoRuntime) -> None:
    bf16 = openvino_fp32.with_precision("openvino_bf16")
    eager = EagerRuntime(tiny.net, torch.device("cpu"), tiny.model_name, tiny.meta)
    gate = check_gate(eager, bf16, training_photos(2, size=96))
    assert gate.passed and 0 < gate.mean_abs_diff < 1 / 255, gate


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny) -> None:
    monkeypatch.setattr(openvino_runtime, "has_fast_bf16", lambda: False)  # as on a CPU without the flags
    path = export(tiny, "openvino", tmp_path / "tiny.xml")
    with pytest.raises(NSTError, match="AVX-512 BF16 or AMX"):
        load_runtime(path, runtime="openvino_bf16")


def test_gate_rejects_a_broken_quantization(tiny: LoadedModel, openvino_fp32: OpenVinoRuntime) -> None:
    """Calibrated on black images, every activation range collapses: the int8 graph clips everything."""
    eager = EagerRuntime(tiny.net, torch.device("cpu"), tiny.model_name, tiny.meta)
    photos = training_photos(2, size=96)

    def objective(output: torch.Tensor, content: torch.Tensor) -> float:  # a content loss, in pixels
        return float((output - content).pow(2).mean())

    good = check_gate(eager, openvino_fp32, photos, objective)
    assert good.passed and good.objective_rel is not None and good.objective_rel < 1e-3, good
    broken_bytes = quantize_static_int8(openvino_fp32.model_bytes, 1, [torch.zeros(1, 3, 64, 64)] * 2)
    broken = OpenVinoRuntime(broken_bytes, torch.device("cpu"), openvino_fp32.info, "broken", "openvino_int8")
    gate = check_gate(eager, broken, photos, objective)
    assert not gate.passed and gate.mean_abs_diff > 1 / 255 and "failed" in gate.reason, gate


def test_auto_picks_a_gated_runtime_and_caches_it(tiny: LoadedModel, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="nst_lightning.export.auto")
    runtime = choose_runtime(tiny, cache_dir=tmp_path)
    assert runtime.name in ("eager", *candidate_names())
    (entry_file,) = tmp_path.glob("*.json")
    entry = json.loads(entry_file.read_text())
    assert entry["runtime"] == runtime.name and set(entry["gates"]) == set(candidate_names())
    assert runtime.name == "eager" or entry["gates"][runtime.name]["passed"]
    assert f"runtime=auto: {runtime.name} (fastest that passed the gate" in caplog.text
    caplog.clear()
    again = choose_runtime(tiny, cache_dir=tmp_path)  # the cached choice, from the cached IR
    assert again.name == runtime.name and "cached for this machine" in caplog.text
    x = torch.rand(1, 3, 33, 21)
    assert (again(x) - runtime(x)).abs().max() < 1e-3


def test_auto_falls_back_to_eager_without_openvino(
    tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="nst_lightning.export.auto")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    runtime = choose_runtime(tiny, cache_dir=tmp_path)
    assert runtime.name == "eager"
    assert "runtime=auto: eager (the openvino runtime needs openvino: pip install openvino" in caplog.text
    with pytest.raises(NSTError, match="needs openvino"):
        runtime_from_model(tiny, "openvino")


def test_unreadable_ir_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?>\n<net name="x" version="11"><layers><layer id="0"/></layers></net>\n')
    with pytest.raises(NSTError, match="OpenVINO cannot read") as info:
        load_runtime(bad)
    assert "\n" not in str(info.value)


# --- the runtime option in the stylize paths ------------------------------------------------------------------


def test_stylize_runs_a_network_in_the_runtime_its_options_name(tiny: LoadedModel) -> None:
    from nst_lightning.inference import StylizeOptions, stylize
    from nst_lightning.inference.stylize import stylize_runner

    assert StylizeOptions(runtime="ov").runtime == "openvino"  # the library's aliases
    with pytest.raises(NSTError, match="unknown runtime 'fast'"):
        StylizeOptions(runtime="fast")
    runner = stylize_runner(tiny, StylizeOptions(runtime="openvino"))
    assert runner.runtime == "openvino" and runner.module is tiny.net
    photo = torch.rand(1, 3, 61, 47)
    eager = stylize(photo, tiny, input_noise=0.0)
    assert (stylize(photo, tiny, input_noise=0.0, runtime="openvino") - eager).abs().max() < FP32_TOLERANCE
    assert stylize_runner(tiny, StylizeOptions(runtime="openvino")).fn is runner.fn  # converted once per network


def test_a_multistyle_blend_runs_in_the_runtime() -> None:
    from nst_lightning.inference import stylize

    loaded = _loaded(num_styles=2)
    loaded.net.style_names = ["wave", "candy"]  # as load_model names them
    photo = torch.rand(1, 3, 45, 37)
    mix = {"wave": 0.3, "candy": 0.7}
    eager = stylize(photo, loaded, style_mix=mix, input_noise=0.0)
    got = stylize(photo, loaded, style_mix=mix, input_noise=0.0, runtime="openvino")
    assert (got - eager).abs().max() < FP32_TOLERANCE
    assert (stylize(photo, loaded, style="wave", input_noise=0.0, runtime="openvino") - got).abs().mean() > 1e-3


def test_tiles_run_eager_with_a_logged_reason(tiny: LoadedModel, caplog) -> None:
    from nst_lightning.inference import stylize

    caplog.set_level(logging.INFO, logger="nst_lightning.inference.stylize")
    photo = torch.rand(1, 3, 150, 100)
    eager = stylize(photo, tiny, tile_size=64, input_noise=0.0)
    got = stylize(photo, tiny, tile_size=64, input_noise=0.0, runtime="openvino")
    assert (got - eager).abs().max() < 1e-6  # the same eager tiles with whole-image statistics
    assert "tiles run eager, not openvino" in caplog.text


def test_auto_in_stylize_logs_its_choice(tiny: LoadedModel, tmp_path: Path, monkeypatch, caplog) -> None:
    from nst_lightning.inference import stylize
    from nst_lightning.inference.stylize import prepare_model

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path))
    caplog.set_level(logging.INFO, logger="nst_lightning.export.auto")
    net = _loaded().net  # a network of its own: not converted by another test
    runner = prepare_model(net, runtime="auto")
    assert runner.runtime in ("eager", *candidate_names())
    assert f"runtime=auto: {runner.runtime} (fastest that passed the gate" in caplog.text
    photo = training_photos(1, size=96)[0]
    diff = (stylize(photo, runner, input_noise=0.0) - stylize(photo, net, input_noise=0.0)).abs().mean()
    assert diff <= 1 / 255


def test_auto_falls_back_to_eager_in_every_path_without_openvino(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # fmt: skip
    from nst_lightning.export.zeroshot_runtime import zeroshot_runtime
    from nst_lightning.inference.stylize import prepare_model
    from nst_lightning.inference.zeroshot import ZeroShotModel
    from nst_lightning.losses.vgg import VGG19Features
    from nst_lightning.models.decoder import VGGDecoder

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    caplog.set_level(logging.INFO, logger="nst_lightning")
    net = _loaded().net
    runner = prepare_model(net, runtime="auto")
    assert runner.runtime == "eager" and runner.fn is net
    assert "runtime=auto: eager (the openvino runtime needs openvino" in caplog.text
    torch.manual_seed(0)
    decoder = VGGDecoder("relu2_1", width=1 / 16).eval()
    zeroshot = ZeroShotModel([decoder], vgg=VGG19Features(["relu2_1"], weights="random"), refine_steps=0)
    assert zeroshot_runtime(zeroshot, "auto") is zeroshot
    assert "runtime=auto: zero-shot eager (the openvino runtime needs openvino" in caplog.text
    with pytest.raises(NSTError, match="needs openvino"):
        prepare_model(_loaded().net, runtime="openvino")


def test_without_the_export_layer_auto_is_eager_and_a_named_runtime_says_what_to_import(monkeypatch, caplog) -> None:
    from nst_lightning.inference import runtimes
    from nst_lightning.inference.stylize import prepare_model

    monkeypatch.setattr(runtimes, "_CONVERTER", [])  # as in a process that never imported nst_lightning.export
    caplog.set_level(logging.INFO, logger="nst_lightning.inference.runtimes")
    net = _loaded().net
    assert prepare_model(net, runtime="auto").runtime == "eager"
    assert "runtime=auto: eager (the runtimes live in nst_lightning.export" in caplog.text
    with pytest.raises(NSTError, match="runtime=openvino: the runtimes live in nst_lightning.export"):
        prepare_model(net, runtime="openvino")


@pytest.mark.slow  # measures the auto choice (and converts VGG-19) on a busy CPU: about a minute
def test_the_service_runs_both_routes_in_its_runtime(tiny: LoadedModel, tmp_path: Path, monkeypatch, caplog) -> None:
    """POST /stylize: a checkpoint with runtime=auto is the measured, gated choice; POST /stylize/zeroshot: the
    encoder and decoder in the service's runtime (a runtime with no zero-shot conversion: eager, logged)."""
    from nst_lightning.serve.models import load_runner
    from nst_lightning.serve.zeroshot import ZeroShotStyles

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="nst_lightning")
    ckpt = tmp_path / "tiny.pt"
    torch.save({"format": "nst_lightning.model", "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": tiny.net.state_dict(), "meta": tiny.meta}, ckpt)  # fmt: skip
    runner = load_runner(ckpt, "auto", torch.device("cpu"))
    assert runner.name in ("eager", *candidate_names())
    assert f"runtime=auto: {runner.name} (fastest that passed the gate" in caplog.text
    assert ZeroShotStyles(runtime="openvino")._loaded().runtime == "openvino"
    assert ZeroShotStyles(runtime="onnxruntime")._loaded().runtime == "eager"
    assert "runtime=onnxruntime: zero-shot eager" in caplog.text


@pytest.mark.slow  # measures the auto choice (and converts VGG-19) on a busy CPU: about a minute
def test_stylize_cli_takes_runtime_and_logs_the_choice(tiny: LoadedModel, tmp_path: Path, monkeypatch, caplog) -> None:
    import numpy as np
    from PIL import Image

    from nst_lightning.cli.stylize import run as stylize_run

    from .test_zeroshot import compose_stylize

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="nst_lightning")
    ckpt = tmp_path / "tiny.pt"
    torch.save({"format": "nst_lightning.model", "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": tiny.net.state_dict(), "meta": tiny.meta}, ckpt)  # fmt: skip
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    outs = {}
    for runtime in ("eager", "openvino", "auto"):
        out = tmp_path / f"{runtime}.png"
        stylize_run(compose_stylize([f"ckpt={ckpt}", f"input={tmp_path / 'in.png'}", f"output={out}", "device=cpu",
                                     f"runtime={runtime}"]))  # fmt: skip
        outs[runtime] = np.asarray(Image.open(out), dtype=np.float32)
    assert np.abs(outs["openvino"] - outs["eager"]).max() <= 1.0  # fp32: at most one rounding step
    assert np.abs(outs["auto"] - outs["eager"]).mean() <= 1.0
    assert "runtime=openvino: as asked (fp32)" in caplog.text and "runtime=auto: " in caplog.text
    with pytest.raises(NSTError, match="unknown runtime 'gpu'"):
        stylize_run(compose_stylize([f"ckpt={ckpt}", f"input={tmp_path / 'in.png'}", "runtime=gpu"]))


def _rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_the_service_gives_back_openvino_buffers_after_a_call_and_skips_a_busy_model() -> None:
    from nst_lightning.serve.memory import release_memory

    runtime = load_runtime("starry_night", runtime="openvino")
    x = torch.rand(1, 3, 768, 768)
    runtime(x)  # the CPU plugin now keeps this size's activations (about 100 MB)
    before = _rss_mb()
    release_memory()
    assert before - _rss_mb() > 40
    again = threading.Thread(target=runtime, args=(torch.rand(1, 3, 1024, 1024),))
    again.start()  # and runs again as before; while it runs, OpenVINO refuses the release: no error, skipped
    time.sleep(0.2)
    during = openvino_runtime.release_memory()
    running = again.is_alive()
    again.join()
    if running:
        assert during == openvino_runtime.release_memory() - 1
