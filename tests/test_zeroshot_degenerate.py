"""Degenerate paintings through the shipped zero-shot model: each gives a plausible image, measured.

A greyscale painting, a flat colour field, two-colour stripes (a covariance of rank one), a photo used as the
painting and a 1×1 painting, each on a real photo of the embedded sample at 128 px. Plausible means: not near
black, not an edge map (the output's luminance follows the photo's luminance more than its edge strength), and
the painting's objective below the unstylized photo's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_lightning.image import load_image
from nst_lightning.inference import stylize
from nst_lightning.inference.zeroshot import MIN_PAINTING_SIDE, STYLE_SIZE, load_zeroshot
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss

SAMPLE = Path(__file__).resolve().parents[1] / "nst_lightning" / "data" / "sample"
PHOTO = SAMPLE / "train" / "kodim01.jpg"
SIZE = 128


def _luma(x: torch.Tensor) -> np.ndarray:
    r, g, b = x[0].double().numpy()
    return 0.299 * r + 0.587 * g + 0.114 * b


def _edges(luma: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(luma)
    return np.hypot(gx, gy)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _as_seen(path: Path) -> torch.Tensor:
    """1×3×H×W: the painting as the zero-shot model takes its statistics (shrunk to STYLE_SIZE, enlarged to
    MIN_PAINTING_SIDE), so that the objective's Grams describe the same picture."""
    image = load_image(path, STYLE_SIZE if max(Image.open(path).size) > STYLE_SIZE else None)
    if min(image.shape[-2:]) < MIN_PAINTING_SIDE:
        image = torch.nn.functional.interpolate(image, size=[max(MIN_PAINTING_SIDE, s) for s in image.shape[-2:]])
    return image


def _paintings(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    made = {
        "greyscale": Image.open(SAMPLE / "styles" / "the_wave.jpg").convert("L").convert("RGB"),
        "flat_colour": Image.new("RGB", (96, 96), (180, 60, 40)),
        "stripes": Image.fromarray(
            np.where((np.arange(96)[None, :, None] // 8) % 2 == 0, np.array([20, 40, 160]), np.array([240, 220, 40]))
            .repeat(96, axis=0)
            .astype(np.uint8)
        ),  # fmt: skip
        "photo": Image.open(SAMPLE / "train" / "kodim02.jpg"),
        "one_pixel": Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)),
    }
    paths = {}
    for name, image in made.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def paintings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _paintings(tmp_path_factory.mktemp("paintings"))


@pytest.fixture(scope="module")
def model():
    return load_zeroshot()


@pytest.mark.parametrize("name", ["greyscale", "flat_colour", "stripes", "photo", "one_pixel"])
def test_a_degenerate_painting_gives_a_plausible_image(paintings, model, name: str) -> None:
    photo = load_image(PHOTO, SIZE)
    out = stylize(photo, model.with_style(paintings[name]))
    assert out.shape == photo.shape
    luma, photo_luma = _luma(out), _luma(photo)
    assert luma.mean() > 0.15, f"near black: mean luminance {luma.mean():.3f}"
    # An edge map follows the photo's gradient magnitude; a stylized photo follows its luminance (a flat field
    # may follow neither much, so only the comparison is asked of it).
    assert _corr(luma, photo_luma) > _corr(luma, _edges(photo_luma)), "looks like an edge map"
    loss = PerceptualLoss(LossConfig())
    loss.set_style_images([_as_seen(paintings[name])])
    with torch.no_grad():
        styled = loss(out, photo)["objective"].item()
        unstyled = loss(photo, photo)["objective"].item()
    assert styled < unstyled, f"objective {styled:.3f} not below the photo's {unstyled:.3f}"
