"""Building blocks shared by the transformation networks.

All blocks keep the spatial size except where named (``stride``, ``UpsampleConv``).
Padding is reflection padding: zero padding gives dark borders in stylized images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (affine instance norm), ``batch`` or ``none``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use 'instance', 'batch' or 'none'")


class ConvNormAct(nn.Sequential):
    """Reflection pad → conv → norm → ReLU (B×C_in×H×W → B×C_out×H/stride×W/stride)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, norm: str = "instance", act: bool = True
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(kernel // 2),
            nn.Conv2d(c_in, c_out, kernel, stride=stride),
            make_norm(norm, c_out),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


class ResidualBlock(nn.Module):
    """Two 3×3 ConvNormAct layers (the second without ReLU) plus identity: B×C×H×W → B×C×H×W."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, norm=norm),
            ConvNormAct(channels, channels, 3, norm=norm, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Sequential):
    """Nearest-neighbour ×2 upsample then ConvNormAct (no transposed conv: avoids checkerboards)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, norm: str = "instance") -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvNormAct(c_in, c_out, kernel, norm=norm))


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 1) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflection-pad B×C×H×W on the bottom/right so H and W are multiples of ``multiple`` (and ≥ ``min_size``).

    Returns the padded tensor and the original (H, W) to crop back to. Falls back to replicate padding
    where reflection is impossible (padding ≥ size).
    """
    h, w = x.shape[-2:]
    ph = (math.ceil(max(h, min_size) / multiple) * multiple) - h
    pw = (math.ceil(max(w, min_size) / multiple) * multiple) - w
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)
