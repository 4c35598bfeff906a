"""Video: streamed round trip with audio and frame rate kept, flow-based consistency, the flicker metric."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.inference.temporal import flicker, pan_zoom_clip
from nst_lightning.inference.video import probe, stylize_frames, stylize_video, write_video

from .conftest import synthetic_photo


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(synthetic_photo(160, 120, seed=5))


def noisy_stylizer(seed: int = 0):
    """A stand-in style network that flickers: a fixed colour map plus fresh noise in every frame."""
    gen = torch.Generator().manual_seed(seed)

    def run(frame: torch.Tensor) -> torch.Tensor:
        return (frame.flip(1) * 0.8 + 0.15 * torch.rand(frame.shape, generator=gen)).clamp(0, 1)

    return run


def test_pan_clip_flows_are_exact(photo: np.ndarray) -> None:
    clip = pan_zoom_clip(photo, 6, (48, 64), pan=(3.0, 2.0))
    assert flicker(clip.frames, clip.flows, clip.masks) == 0.0  # integer pan: each frame is the last, moved
    zoom = pan_zoom_clip(photo, 6, (48, 64), pan=(1.0, 1.0), zoom=1.03)
    assert flicker(zoom.frames, zoom.flows, zoom.masks) < 3.0  # only resampling differences (0..255 scale)
    wrong = [np.zeros_like(f) for f in clip.flows]
    assert flicker(clip.frames, wrong, clip.masks) > 5.0


def test_flow_consistency_lowers_flicker(photo: np.ndarray) -> None:
    clip = pan_zoom_clip(photo, 10, (48, 64), pan=(2.0, 1.0), zoom=1.01)
    scores = {}
    for mode in ("none", "flow"):
        styled = list(stylize_frames(iter(clip.frames), noisy_stylizer(), mode))
        scores[mode] = flicker(styled, clip.flows, clip.masks)
    assert scores["flow"] < 0.7 * scores["none"], scores


def test_pan_clip_with_audio_round_trips_through_the_video_path(tmp_path: Path, photo: np.ndarray) -> None:
    clip = pan_zoom_clip(photo, 10, (48, 64), pan=(2.0, 1.0))
    src = write_video(tmp_path / "pan.mp4", clip.frames, rate=12, audio_seconds=1.0)
    report = stylize_video(src, tmp_path / "out.mp4", noisy_stylizer(), progress=False)
    info = probe(tmp_path / "out.mp4")
    assert (report.frames, info["frames"]) == (10, 10)
    assert info["rate"] == Fraction(12) and report.rate == Fraction(12)
    assert info["audio"] and report.audio
    assert (info["width"], info["height"]) == (64, 48)


def test_video_without_audio_and_bad_paths(tmp_path: Path, photo: np.ndarray) -> None:
    clip = pan_zoom_clip(photo, 3, (32, 32))
    src = write_video(tmp_path / "silent.mp4", clip.frames, rate=25)
    stylize_video(src, tmp_path / "out.mkv", noisy_stylizer(), consistency="none", progress=False)
    assert not probe(tmp_path / "out.mkv")["audio"]
    with pytest.raises(NSTError, match="video file"):
        stylize_video(src, tmp_path / "out.png", noisy_stylizer(), progress=False)
    with pytest.raises(NSTError, match="not found"):
        stylize_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", noisy_stylizer(), progress=False)
    (tmp_path / "junk.mp4").write_text("not a video")
    with pytest.raises(NSTError, match="cannot read"):
        stylize_video(tmp_path / "junk.mp4", tmp_path / "o.mp4", noisy_stylizer(), progress=False)


def test_stylize_cli_takes_a_video_with_a_shipped_network(tmp_path: Path, photo: np.ndarray) -> None:
    from nst_lightning.cli.stylize import run

    from .test_zeroshot import compose_stylize

    clip = pan_zoom_clip(photo, 4, (40, 48), pan=(2.0, 0.0))
    src = write_video(tmp_path / "clip.mp4", clip.frames, rate=8, audio_seconds=0.5)
    (out,) = run(compose_stylize(["ckpt=starry_night", f"input={src}", f"output={tmp_path / 'styled.mp4'}",
                                  "device=cpu"]))  # fmt: skip
    info = probe(out)
    assert (info["frames"], info["rate"], info["audio"]) == (4, Fraction(8), True)


def _frames(path: Path) -> np.ndarray:
    """Every frame of a video file, F×H×W×3 uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray) -> Path:
    clip = pan_zoom_clip(photo, 3, (40, 48), pan=(2.0, 1.0))
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", clip.frames, rate=8)


def _cli_video(src: Path, out: Path, *overrides: str) -> np.ndarray:
    from nst_lightning.cli.stylize import run

    from .test_zeroshot import compose_stylize

    (written,) = run(compose_stylize(["ckpt=starry_night", f"input={src}", f"output={out}", "device=cpu", *overrides]))
    return _frames(written)


@pytest.mark.parametrize(
    "override",
    ["input_noise=0", "input_noise=0.5", "input_noise_smooth_only=false", "noise_seed=7", "strength=0.5",
     "preserve_color=true", "stroke_scale=2", "consistency=none", "quality=fast"],
)  # fmt: skip
def test_stylize_cli_video_honours_every_option(tmp_path: Path, short_clip: Path, override: str) -> None:
    """Each option changes the frames of a stylized video as it changes a photo (none is dropped on the way)."""
    default = _cli_video(short_clip, tmp_path / "default.mp4")
    changed = _cli_video(short_clip, tmp_path / "changed.mp4", override)
    assert changed.shape == default.shape
    assert np.abs(changed.astype(float) - default.astype(float)).mean() > 0.5, override


def test_stylize_cli_video_noise_off_and_strong_differ(tmp_path: Path, short_clip: Path) -> None:
    off = _cli_video(short_clip, tmp_path / "off.mp4", "input_noise=0")
    strong = _cli_video(short_clip, tmp_path / "strong.mp4", "input_noise=0.5")
    assert np.abs(off.astype(float) - strong.astype(float)).mean() > 0.5


@pytest.mark.parametrize("consistency", ["flow", "none"])
def test_stylize_cli_video_max_size_shrinks_every_frame(tmp_path: Path, short_clip: Path, consistency: str) -> None:
    """max_size applies to the whole frame path: the flow blend sees output-sized frames, the video has that size."""
    frames = _cli_video(short_clip, tmp_path / "small.mp4", "max_size=32", f"consistency={consistency}")
    assert frames.shape[0] == 3
    assert max(frames.shape[1:3]) <= 32 and frames.shape[1:3] == (26, 32)


def test_reduced_size_flow_follows_the_true_motion(photo: np.ndarray) -> None:
    """Flow computed at half size and scaled back is about as close to the exact motion as full-size flow."""
    from nst_lightning.inference.temporal import farneback_flow

    clip = pan_zoom_clip(photo, 3, (96, 128), pan=(3.0, 2.0), zoom=1.01)
    errors = {}
    for size in (None, 64):
        flow = farneback_flow(clip.frames[2], clip.frames[1], size)
        assert flow.shape == (96, 128, 2)
        errors[size] = float(np.linalg.norm(flow - clip.flows[1], axis=2)[clip.masks[1]].mean())
    assert errors[64] < max(1.5 * errors[None], 0.5), errors  # pixels of end-point error
    assert np.array_equal(farneback_flow(clip.frames[2], clip.frames[1], 400), farneback_flow(clip.frames[2],
                          clip.frames[1]))  # fmt: skip  # a size above the frame's: full size


def _tiny_network():
    from nst_lightning.inference import LoadedModel
    from nst_lightning.models import create_model

    torch.manual_seed(0)
    net = create_model("johnson_tiny").eval().requires_grad_(False)
    return LoadedModel(net=net, model_name="johnson_tiny", model_kwargs={}, meta={"style_name": "noise"})


def test_video_frames_through_the_auto_runtime_match_eager_within_the_gate(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    pytest.importorskip("openvino")
    import nst_lightning.export  # noqa: F401  (registers the runtimes)
    from nst_lightning.inference import StylizeOptions, stylize
    from nst_lightning.inference.stylize import stylize_runner

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    loaded = _tiny_network()
    clip = pan_zoom_clip(photo, 5, (48, 64), pan=(2.0, 1.0))
    outputs = {}
    for runtime in ("eager", "auto", "openvino"):
        runner = stylize_runner(loaded, StylizeOptions(runtime=runtime))
        assert runner.runtime == "eager" if runtime == "eager" else runner.runtime != ""
        frames = stylize_frames(iter(clip.frames), lambda x, r=runner: stylize(x, r), "flow", flow_size=32)
        outputs[runtime] = np.stack(list(frames)).astype(np.float32)
    for runtime in ("auto", "openvino"):
        assert np.abs(outputs[runtime] - outputs["eager"]).mean() <= 1.0, runtime  # 1/255 of the 0..255 range
    src = write_video(tmp_path / "clip.mp4", clip.frames, rate=8)
    report = stylize_video(src, tmp_path / "out.mp4", loaded, runtime="openvino", progress=False)
    assert report.runtime == "openvino" and report.frames == 5
    assert set(report.stages) == {"decode", "network", "flow", "blend", "encode"}
    assert report.stages["network"] > 0 and report.stages["flow"] > 0


def test_quality_fast_runs_the_shipped_student(caplog) -> None:
    import logging

    from nst_lightning.inference import StylizeOptions, pretrained_students
    from nst_lightning.inference.stylize import stylize_runner

    caplog.set_level(logging.INFO, logger="nst_lightning.inference.runtimes")
    if "starry_night" not in pretrained_students():
        pytest.skip("no shipped student of starry_night")
    full = stylize_runner("starry_night", StylizeOptions(), "cpu")
    fast = stylize_runner("starry_night", StylizeOptions(quality="fast"), "cpu")
    count = lambda runner: sum(p.numel() for p in runner.module.parameters())  # noqa: E731
    assert count(fast) < count(full)
    assert "quality=fast: the distilled student" in caplog.text
    stylize_runner(_tiny_network(), StylizeOptions(quality="fast"))  # no student: the network, with a note
    assert "no fast variant of noise is shipped" in caplog.text


def test_a_fast_video_loads_the_student_once(tmp_path: Path, short_clip: Path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="nst_lightning.inference.runtimes")
    report = stylize_video(short_clip, tmp_path / "fast.mp4", "starry_night", quality="fast", device="cpu",
                           progress=False)  # fmt: skip
    assert report.frames == 3
    assert caplog.text.count("quality=fast") == 1, caplog.text  # once for the clip, not once per frame
