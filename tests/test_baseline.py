"""Per-image optimisation baseline: objective, optimizers, multi-scale, colour, several styles, CLI and errors.

Shallow loss layers (VGG cut after relu2_2) and 32–64 px images keep the whole file to seconds on a CPU.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from nst_lightning.baseline.optimize import (
    ImageOptimization,
    OptimizeSettings,
    content_features,
    initial_image,
    objective_terms,
    optimize_image,
)
from nst_lightning.cli.config import config_dir
from nst_lightning.cli.optimize import build_loss, schedule, style_weights
from nst_lightning.cli.optimize import run as optimize_from_config
from nst_lightning.errors import NSTError
from nst_lightning.image import load_image, rgb_to_yiq
from nst_lightning.losses import PerceptualLoss
from nst_lightning.losses.perceptual import blend_grams
from nst_lightning.losses.styles import style_grams

from .conftest import REPO, synthetic_photo

TINY_LAYERS = {"content_layers": ["relu2_2"], "style_layers": ["relu1_1", "relu2_1"]}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny images: one thread avoids OpenMP barrier stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def content_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("content") / "photo.png"
    synthetic_photo(64, 48, seed=7).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_loss(style_path: Path) -> PerceptualLoss:
    loss = PerceptualLoss(**TINY_LAYERS, content_weight=1e-5, style_weight=10.0)
    loss.set_style_images([load_image(style_path, 64)])
    return loss


def compose_optimize(tmp_path: Path, content: Path, style: Path, extra: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(
            "optimize",
            overrides=[
                "loss=tiny",
                "style=custom",
                f"style.image={style}",
                "style.size=64",
                f"content={content}",
                f"paths.output_dir={tmp_path}",
                "size=64",
                "iterations=5",
                "progress=false",
                *(extra or []),
            ],
        )


def objective(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor) -> float:
    with torch.no_grad():
        return float(loss(image, content)["objective"])


def test_objective_terms_equal_the_training_loss(tiny_loss, content_path):
    content = load_image(content_path)
    image = (content * 0.6 + 0.3 * torch.rand_like(content)).clamp(0, 1)
    for cl in (False, True):
        ours = objective_terms(tiny_loss, image, content_features(tiny_loss, content, cl), cl)
        reference = tiny_loss(image, content)
        for key, value in reference.items():
            assert torch.allclose(ours[key], value, rtol=1e-4, atol=1e-7), (key, cl)


@pytest.mark.parametrize(
    ("optimizer", "init", "max_ratio"),
    [("lbfgs", "content", 0.5), ("lbfgs", "noise", 0.5), ("adam", "content", 0.5), ("adam", "noise", 0.7)],
)
def test_twenty_iterations_cut_the_objective(tiny_loss, content_path, optimizer, init, max_ratio):
    content = load_image(content_path, 64)
    start = initial_image(init, content, seed=1)
    result = optimize_image(tiny_loss, content, start, 20, OptimizeSettings(optimizer=optimizer), progress=False)
    assert result.evaluations == 20
    assert result.image.shape == content.shape and result.image.min() >= 0 and result.image.max() <= 1
    first, last = objective(tiny_loss, start, content), objective(tiny_loss, result.image, content)
    assert last <= max_ratio * first, (first, last)


def test_lbfgs_in_chunks_follows_one_long_step(tiny_loss, content_path):
    content = load_image(content_path, 48)
    whole = ImageOptimization(tiny_loss, content, content, OptimizeSettings(channels_last=False))
    whole.run(8)
    chunked = ImageOptimization(tiny_loss, content, content, OptimizeSettings(channels_last=False))
    for _ in range(4):
        chunked.run(2)
    assert whole.evaluations == chunked.evaluations == 8
    assert torch.allclose(whole.image, chunked.image, atol=1e-5)


def test_intermediates_every_n_iterations(tiny_loss, content_path):
    content = load_image(content_path, 32)
    seen: list[tuple[int, tuple[int, ...]]] = []
    optimize_image(
        tiny_loss,
        content,
        content,
        7,
        save_every=3,
        on_image=lambda i, img: seen.append((i, img.shape)),
        progress=False,
    )
    assert seen == [(3, content.shape), (6, content.shape)]


def test_multiscale_ends_at_the_requested_size(tmp_path, content_path, style_path):
    cfg = compose_optimize(tmp_path, content_path, style_path, ["sizes=[24,40]", "iterations=[4,3]"])
    out = optimize_from_config(cfg)
    assert out == tmp_path / "optimized.png"
    assert Image.open(out).size == (40, 30)  # 64×48 content, longest side 40


def test_preserve_color_keeps_the_content_chroma(tmp_path, content_path, style_path):
    def chroma_error(keep: bool) -> float:
        cfg = compose_optimize(
            tmp_path,
            content_path,
            style_path,
            [f"preserve_color={keep}", "iterations=15", f"output={tmp_path}/{keep}.png"],
        )
        result = load_image(optimize_from_config(cfg))
        content = load_image(content_path, 64)
        return float((rgb_to_yiq(result)[:, 1:] - rgb_to_yiq(content)[:, 1:]).abs().mean())

    kept, changed = chroma_error(True), chroma_error(False)
    assert kept < 0.02, kept  # I and Q span about ±0.6; what is left is gamut clipping and 8-bit rounding
    assert changed > 3 * kept, (kept, changed)


def test_init_from_an_image_file(tmp_path, content_path, style_path):
    init = tmp_path / "init.png"
    synthetic_photo(30, 30, seed=3).save(init)
    out = optimize_from_config(compose_optimize(tmp_path, content_path, style_path, [f"init={init}"]))
    assert Image.open(out).size == (64, 48)


def test_several_styles_blend_their_grams(tmp_path, content_path, style_path):
    data = tmp_path / "data"
    (data / "styles").mkdir(parents=True)
    synthetic_photo(40, 40, seed=11).save(data / "styles" / "the_scream.jpg")  # the preset's file, offline
    second = tmp_path / "second.png"
    synthetic_photo(50, 30, seed=12).save(second)
    cfg = compose_optimize(
        tmp_path,
        content_path,
        style_path,
        [f"paths.data_dir={data}", f"extra_styles=[the_scream,{second}]", "style_weights=[0.5,0.3,0.2]"],
    )
    loss = build_loss(cfg, torch.device("cpu"))
    single = [
        style_grams(p, s, loss) for p, s in [(style_path, 64), (data / "styles" / "the_scream.jpg", 512), (second, 64)]
    ]
    for name, gram in loss.target_grams.items():
        expected = 0.5 * single[0][name] + 0.3 * single[1][name] + 0.2 * single[2][name]
        assert torch.allclose(gram, expected, rtol=1e-5)
    assert Image.open(optimize_from_config(cfg)).size == (64, 48)


def test_style_and_schedule_validation(tmp_path, content_path, style_path):
    assert style_weights(None, 2) == [0.5, 0.5]
    assert style_weights([3, 1], 2) == [0.75, 0.25]
    with pytest.raises(NSTError, match="style_weights has 1 entries"):
        style_weights([1.0], 2)
    g = {"a": torch.ones(1, 2, 2)}
    assert torch.equal(blend_grams([g, {"a": torch.zeros(1, 2, 2)}], [0.25, 0.75])["a"], torch.full((1, 2, 2), 0.25))
    assert schedule(512, None, 100) == ([512], [100])
    assert schedule(512, [128, 256], 10) == ([128, 256], [10, 10])
    with pytest.raises(NSTError, match="smallest first"):
        schedule(512, [256, 128], 10)
    with pytest.raises(NSTError, match="one per size"):
        schedule(512, [128, 256], [10])
    with pytest.raises(NSTError, match="unknown optimizer"):
        OptimizeSettings(optimizer="sgd")
    cfg = compose_optimize(tmp_path, content_path, style_path, ["extra_styles=[no_such_style]"])
    with pytest.raises(NSTError, match="neither a style preset"):
        build_loss(cfg, torch.device("cpu"))


BAD_INPUTS = {"missing": "image file not found", "not_an_image": "cannot read", "empty_file": "cannot read"}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory, content_path: Path, style_path: Path) -> dict:
    """The real ``optimize.py`` entry point, run once per case, all cases at the same time (each start-up costs
    seconds of imports). Returns ``{case: (CompletedProcess, folder)}``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    common = ["loss=tiny", "style=custom", f"style.image={style_path}", "style.size=64", "progress=false"]
    cases: dict[str, tuple[list[str], Path]] = {}
    folder = tmp_path_factory.mktemp("cli_ok")
    cases["ok"] = ([f"content={content_path}", f"output={folder / 'result.jpg'}", "size=48", "iterations=4",
                    "save_every=2", f"hydra.run.dir={folder / 'run'}"], folder)  # fmt: skip
    for case in BAD_INPUTS:
        folder = tmp_path_factory.mktemp(case)
        content = folder / ("nope.jpg" if case == "missing" else "photo.jpg")
        if case == "not_an_image":
            content.write_text("hello")
        elif case == "empty_file":
            content.write_bytes(b"")
        cases[case] = ([f"content={content}", f"output={folder / 'o.png'}", "size=32", "iterations=1",
                        f"hydra.run.dir={folder / 'run'}"], folder)  # fmt: skip
    procs = {
        case: subprocess.Popen(
            [sys.executable, "optimize.py", *common, *args],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for case, (args, _) in cases.items()
    }
    runs = {}
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        runs[case] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), cases[case][1])
    return runs


@pytest.mark.slow
def test_cli_writes_the_output_and_intermediates(cli_runs):
    run, folder = cli_runs["ok"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert Image.open(folder / "result.jpg").size == (48, 36)
    assert sorted(p.name for p in (folder / "run" / "intermediate").iterdir()) == [
        "scale0_48x36_it00002.png",
        "scale0_48x36_it00004.png",
    ]


def _zero_width_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 0, 16, 8, 2, 0, 0, 0)  # width 0, height 16, 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_with_a_clear_message(cli_runs, case):
    run, folder = cli_runs[case]
    assert run.returncode == 2, run.stderr[-3000:]
    assert BAD_INPUTS[case] in run.stderr and str(folder) in run.stderr and "Traceback" not in run.stderr
    assert not (folder / "o.png").exists()


def test_zero_size_image_and_missing_style_are_user_errors(tmp_path, content_path, style_path):
    cfg = compose_optimize(tmp_path, _zero_width_png(tmp_path / "zero.png"), style_path)
    with pytest.raises(NSTError, match="cannot read"):
        optimize_from_config(cfg)
    cfg = compose_optimize(tmp_path, content_path, tmp_path / "no_style.jpg")
    with pytest.raises(NSTError, match="style image not found"):
        optimize_from_config(cfg)
    with pytest.raises(NSTError, match="no content image"):
        optimize_from_config(compose_optimize(tmp_path, content_path, style_path, ["content=null"]))
    with pytest.raises(NSTError, match="output must be an image file"):
        optimize_from_config(compose_optimize(tmp_path, content_path, style_path, [f"output={tmp_path}/out"]))
