"""Pure loss functions. No state, no modules: every function maps tensors to tensors.

Shapes use B (batch), C (channels), H, W (spatial size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of feature maps, normalised by C*H*W, always computed in fp32.

    Args:
        features: B×C×H×W feature maps (any float dtype).

    Returns:
        B×C×C fp32 Gram matrices.
    """
    b, c, h, w = features.shape
    # Autocast would run bmm in bf16/fp16, where sums of H*W products overflow or lose precision.
    with torch.autocast(device_type=features.device.type, enabled=False):
        features = features.float()
        if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
            # NHWC: a free view as B×HW×C; a reshape to B×C×HW would copy the whole feature map.
            flat = features.permute(0, 2, 3, 1).reshape(b, h * w, c)
            return torch.bmm(flat.transpose(1, 2), flat) / (c * h * w)
        flat = features.reshape(b, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps (B×C×H×W each), reduced in fp32 to a scalar."""
    return F.mse_loss(features.float(), target.float())


def style_loss(gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Gram matrices.

    Args:
        gram: B×C×C Gram matrices of the generated images.
        target_gram: 1×C×C (broadcast over the batch) or B×C×C target Gram matrices.
    """
    return F.mse_loss(gram.float(), target_gram.float().expand_as(gram))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels of B×C×H×W images (anisotropic, L2)."""
    dh = images[:, :, 1:, :] - images[:, :, :-1, :]
    dw = images[:, :, :, 1:] - images[:, :, :, :-1]
    return dh.float().pow(2).mean() + dw.float().pow(2).mean()


_LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB (or B×1×H×W grey) → B×1×H×W luma in fp32."""
    images = images.float()
    if images.shape[1] == 1:
        return images
    w = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def sector_power(images: torch.Tensor, max_period: float = 32.0, sectors: int = 36) -> torch.Tensor:
    """Fine-texture power of the Hann-windowed luma per orientation sector: B×C×H×W → B×``sectors``.

    Frequencies below ``1 / max_period`` cycles/pixel are left out; sector k holds wave vectors at angles
    [k − ½, k + ½)·180°/``sectors``. The entries sum to the mean square of that texture (luma in [0, 1] units).
    Differentiable: a training regulariser penalises it (:mod:`nst_lightning.training.smooth`), the stripe
    metric reads it (:func:`nst_lightning.evaluation.metrics.oriented_texture`).
    """
    y = luminance(images)[:, 0]
    h, w = y.shape[-2:]
    y = y - y.mean(dim=(-2, -1), keepdim=True)
    hann = torch.outer(torch.hann_window(h, periodic=False, device=y.device),
                       torch.hann_window(w, periodic=False, device=y.device))  # fmt: skip
    power = torch.fft.fft2(y * hann).abs() ** 2 / (h * w * hann.pow(2).sum())  # sums to the mean square
    fy = torch.fft.fftfreq(h, device=y.device)[:, None].expand(h, w)
    fx = torch.fft.fftfreq(w, device=y.device)[None, :].expand(h, w)
    fine = (fy**2 + fx**2).sqrt() >= 1.0 / max_period
    # orientation of the wave vector in [0, π), shifted half a sector so that 0°, 45° and 90° are sector centres
    angle = (torch.atan2(fy, fx) + torch.pi / (2 * sectors)).remainder(torch.pi)
    sector = (angle / torch.pi * sectors).long().clamp_max(sectors - 1)
    per_sector = torch.zeros(power.shape[0], sectors, device=y.device)
    return per_sector.index_add(1, sector[fine], power[:, fine])
