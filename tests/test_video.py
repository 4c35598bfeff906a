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
