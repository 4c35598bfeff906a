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
