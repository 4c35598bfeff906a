"""Quality metrics on synthetic images with known answers."""

from __future__ import annotations

import pytest
import torch

from nst_lightning.evaluation.metrics import (
    border_artifacts,
    border_stats,
    checkerboard_energy,
    checkerboard_ratio,
    ssim,
)


def smooth_image(h: int = 64, w: int = 80) -> torch.Tensor:
    """A 1×3×H×W image of gentle gradients (no energy near periods 2 or 4)."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    return torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * x * y]).unsqueeze(0)


def checkerboard(h: int = 64, w: int = 80, period: int = 2) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = (((yy // (period // 2)) + (xx // (period // 2))) % 2).float()
    return board.expand(1, 3, h, w).clone()


def test_ssim_of_an_image_to_itself_is_one() -> None:
    img = torch.rand(2, 3, 40, 50)
    assert torch.allclose(ssim(img, img), torch.ones(2), atol=1e-5)


def test_ssim_drops_with_noise_and_is_low_for_unrelated_images() -> None:
    torch.manual_seed(0)
    img = checkerboard(period=16) * 0.6 + 0.2  # blocks: structure for SSIM to keep or lose
    noisy = (img + 0.3 * torch.randn_like(img)).clamp(0, 1)
    s_noisy = ssim(noisy, img).item()
    s_unrelated = ssim(torch.rand_like(img), img).item()
    assert 0.2 < s_noisy < 0.9
    assert abs(s_unrelated) < 0.1


def test_ssim_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


@pytest.mark.parametrize("period", [2, 4])
def test_checkerboard_pattern_has_high_energy(period: int) -> None:
    assert checkerboard_energy(checkerboard(period=period)).item() > 0.8


def test_smooth_image_has_no_checkerboard_energy() -> None:
    assert checkerboard_energy(smooth_image()).item() < 1e-3


def test_checkerboard_added_to_a_photo_like_image_raises_the_ratio() -> None:
    content = smooth_image()
    artifact = (content + 0.05 * (checkerboard() - 0.5)).clamp(0, 1)
    assert checkerboard_ratio(content, content).item() == pytest.approx(1.0)
    assert checkerboard_ratio(artifact, content).item() > 100


def test_white_noise_scores_about_the_share_of_masked_bins() -> None:
    torch.manual_seed(0)
    e = checkerboard_energy(torch.rand(4, 3, 128, 128))
    # 3×3 bins around each of 8 non-DC targets (period 2 and 4 combos with 0) on a 128×128 grid: a few %.
    assert (e > 0.005).all() and (e < 0.1).all()


def test_border_stats_see_a_dark_frame() -> None:
    img = torch.full((1, 3, 64, 64), 0.6)
    framed = img.clone()
    framed[..., :4, :] = framed[..., -4:, :] = 0.0
    framed[..., :, :4] = framed[..., :, -4:] = 0.0
    assert border_stats(img, band=4)["mean_gap"].item() == pytest.approx(0.0, abs=1e-6)
    assert border_stats(framed, band=4)["mean_gap"].item() == pytest.approx(0.6, abs=1e-5)
    rel = border_artifacts(framed, img, band=4)
    assert rel["mean_gap_excess"].item() == pytest.approx(0.6, abs=1e-5)


def test_border_contrast_ratio_of_uniform_texture_is_one_and_flat_rim_is_low() -> None:
    torch.manual_seed(0)
    noise = torch.rand(1, 3, 96, 96)
    assert border_stats(noise)["contrast_ratio"].item() == pytest.approx(1.0, abs=0.1)
    flat_rim = noise.clone()
    flat_rim[..., :8, :] = 0.5
    flat_rim[..., -8:, :] = 0.5
    flat_rim[..., :, :8] = 0.5
    flat_rim[..., :, -8:] = 0.5
    assert border_stats(flat_rim, band=8)["contrast_ratio"].item() < 0.3
    assert border_artifacts(flat_rim, noise, band=8)["contrast_log_ratio"].item() > 1.0
    assert border_artifacts(noise, noise, band=8)["contrast_log_ratio"].item() == pytest.approx(0.0, abs=1e-6)


def test_border_band_too_wide_is_an_error() -> None:
    with pytest.raises(ValueError, match="too wide"):
        border_stats(torch.rand(1, 3, 10, 10), band=5)


def test_ssim_agrees_with_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    from nst_lightning.evaluation.metrics import luminance

    torch.manual_seed(0)
    a = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 72, 88), 3, 1, 1)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    ours = ssim(a, b).item()
    ref = structural_similarity(
        luminance(a)[0, 0].numpy(), luminance(b)[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0,
    )  # fmt: skip
    assert ours == pytest.approx(ref, abs=0.02)
