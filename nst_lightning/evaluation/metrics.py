"""Image quality measures for stylized images: SSIM to the content, checkerboard energy, border artifacts.

All functions take B×3×H×W (or B×1×H×W) float images in [0, 1] and return one value per image (shape B),
computed in fp32 on the images' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nst_lightning.losses.functional import luminance, sector_power  # noqa: F401 (luminance: re-exported)

# ITU-R BT.601 luma, the usual grey level for SSIM and spectra.


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of the luma of B×C×H×W images in [0, 1] → B values in [-1, 1].

    Gaussian 11×11 window (σ = 1.5), K1 = 0.01, K2 = 0.03, valid region only (no padding). Luma is used
    because a stylized image is meant to change colours: SSIM here asks whether the content's structure
    (edges, shapes) survived.
    """
    if x.shape != y.shape:
        raise ValueError(f"ssim needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    a, b = luminance(x), luminance(y)
    window = min(window, a.shape[-2], a.shape[-1])
    w = _gaussian_window(window, sigma, a.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def _peak_mask(h: int, w: int, periods: tuple[int, ...], device: torch.device, radius: int = 1) -> torch.Tensor:
    """Boolean H×W mask (FFT layout) of the frequency bins within ``radius`` of every combination of
    0, ±1/p cycles/pixel along each axis for p in ``periods``, DC excluded."""
    fy = torch.fft.fftfreq(h, device=device)
    fx = torch.fft.fftfreq(w, device=device)
    targets = sorted({0.0, *(1.0 / p for p in periods)})
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    tol_y, tol_x = (radius + 0.5) / h, (radius + 0.5) / w
    for ty in targets:
        near_y = (fy.abs() - ty).abs() <= tol_y
        for tx in targets:
            if ty == 0 and tx == 0:
                continue
            near_x = (fx.abs() - tx).abs() <= tol_x
            mask |= near_y[:, None] & near_x[None, :]
    return mask


def checkerboard_energy(images: torch.Tensor, periods: tuple[int, ...] = (2, 4), radius: int = 1) -> torch.Tensor:
    """Share of an image's spectral power (DC removed, Hann-windowed luma) at the frequencies of the
    periodic patterns that strided/transposed convolutions and upsampling leave: periods 2 and 4 pixels
    along x, y and the diagonals (±``radius`` bins). B×C×H×W → B values in [0, 1].

    A pixel checkerboard scores ≈ 1; a smooth image ≈ 0; white noise scores the share of bins in the mask.
    Compare an output with its content via :func:`checkerboard_ratio`.
    """
    y = luminance(images)[:, 0]
    h, w = y.shape[-2:]
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    hann = torch.outer(torch.hann_window(h, periodic=False, device=y.device),
                       torch.hann_window(w, periodic=False, device=y.device))  # fmt: skip
    power = torch.fft.fft2(y * hann).abs() ** 2
    power[:, 0, 0] = 0
    mask = _peak_mask(h, w, periods, y.device, radius)
    total = power.flatten(1).sum(1)
    return (power * mask).flatten(1).sum(1) / total.clamp_min(1e-12)


def checkerboard_ratio(output: torch.Tensor, content: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Checkerboard energy of the output relative to its content image (B values; 1 = no more than the
    photo had; a regression that adds a period-2/4 grid shows as a large ratio)."""
    return (checkerboard_energy(output) + eps) / (checkerboard_energy(content) + eps)


def _band_and_interior(x: torch.Tensor, band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B×C×H×W → (B×C×n_band, B×C×n_interior): the pixels of the outer ``band`` and those inside it."""
    h, w = x.shape[-2:]
    inside = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    inside[band : h - band, band : w - band] = True
    flat = x.flatten(2)
    m = inside.flatten()
    return flat[..., ~m], flat[..., m]


def _gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """B×1×H×W → B×1×H×W |∇y| by forward differences (last row/column repeat the previous)."""
    dx = F.pad(y[..., :, 1:] - y[..., :, :-1], (0, 1, 0, 0), mode="replicate")
    dy = F.pad(y[..., 1:, :] - y[..., :-1, :], (0, 0, 0, 1), mode="replicate")
    return torch.sqrt(dx**2 + dy**2 + 1e-12)


def border_stats(images: torch.Tensor, band: int | None = None) -> dict[str, torch.Tensor]:
    """Statistics of the outer band of B×3×H×W images against their interior.

    Args:
        band: width in pixels; None = 4 % of the shorter side (at least 2).

    Returns (each of shape B):
        ``mean_gap``: |mean colour of the band − mean colour of the interior|, averaged over channels: a
            frame, vignette or padding tint shows here.
        ``contrast_ratio``: mean gradient magnitude of the luma in the band / in the interior (1 = the band
            is as busy as the rest; ≫1 or ≪1 = edge artifacts or a flat rim).
    """
    h, w = images.shape[-2:]
    band = band or max(2, round(0.04 * min(h, w)))
    if 2 * band >= min(h, w):
        raise ValueError(f"border band {band} px is too wide for a {h}×{w} image")
    x = images.float()
    b, i = _band_and_interior(x, band)
    mean_gap = (b.mean(-1) - i.mean(-1)).abs().mean(1)
    g = _gradient_magnitude(luminance(x))
    gb, gi = _band_and_interior(g, band)
    contrast = gb.mean(-1)[:, 0] / gi.mean(-1)[:, 0].clamp_min(1e-8)
    return {"mean_gap": mean_gap, "contrast_ratio": contrast}


def border_artifacts(output: torch.Tensor, content: torch.Tensor, band: int | None = None) -> dict[str, torch.Tensor]:
    """Border statistics of outputs, relative to their content images (each of shape B).

    ``mean_gap_excess``: the output's band/interior colour gap minus the content's (0 = no new frame).
    ``contrast_log_ratio``: |log(output's band/interior contrast ratio / the content's)| (0 = the rim
    keeps the photo's relation to the interior).
    """
    out, ref = border_stats(output, band), border_stats(content, band)
    return {
        "mean_gap_excess": out["mean_gap"] - ref["mean_gap"],
        "contrast_log_ratio": (out["contrast_ratio"].clamp_min(1e-8) / ref["contrast_ratio"].clamp_min(1e-8))
        .log()
        .abs(),
    }


def oriented_texture(images: torch.Tensor, max_period: float = 32.0, sectors: int = 36) -> dict[str, torch.Tensor]:
    """How much of an image's fine texture runs along one direction (stripes, hatching) rather than all ways.

    The Hann-windowed luma spectrum, restricted to frequencies above ``1 / max_period`` cycles/pixel (so smooth
    gradients and shading do not count), is split into ``sectors`` orientation sectors of 180°/sectors each
    (centred on 0°, 45°, 90°, ... for the default 36).
    Amplitudes are RMS luma in [0, 1] units (Parseval; 0.01 ≈ 2.5 grey levels of 255). B×C×H×W → each of shape B:

    ``texture_rms``: RMS of all that fine texture (a flat image that stays flat: ≈ 0).
    ``stripe_rms``: RMS of the strongest sector's power in excess of the median sector's: the part of the texture
        that is oriented (sinusoidal stripes of amplitude a: ≈ a/√2; isotropic noise: ≈ 0).
    ``stripe_share``: the strongest sector's share of the fine-texture power (1/``sectors`` when isotropic, 1 for
        pure stripes).
    """
    per_sector = sector_power(images, max_period, sectors)
    total = per_sector.sum(1)
    strongest = per_sector.max(1).values
    excess = (strongest - per_sector.median(1).values).clamp_min(0)
    return {
        "texture_rms": total.sqrt(),
        "stripe_rms": excess.sqrt(),
        "stripe_share": strongest / total.clamp_min(1e-12),
    }


def smooth_test_images(size: int = 128) -> dict[str, torch.Tensor]:
    """1×3×size×size smooth images for stripe tests: ``diagonal`` (a colour ramp along both axes) and ``sky`` (a
    blue ramp along y only, constant along x)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return {
        "diagonal": torch.stack([0.2 + 0.6 * yy, 0.3 + 0.4 * xx, 0.8 - 0.5 * yy])[None],
        "sky": torch.stack([0.35 + 0.3 * yy, 0.55 + 0.25 * yy, 0.85 + 0.1 * yy])[None],
    }
