"""Building blocks shared by the transformation networks.

All blocks keep the spatial size except where named (``stride``, ``UpsampleConv``).
Padding is reflection padding by default: zero padding gives dark borders in stylized images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.errors import BadValue


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (affine instance norm), ``batch`` or ``none``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise BadValue(f"unknown norm {kind!r}; use 'instance', 'batch' or 'none'")


PADDINGS = ("reflect", "replicate", "zero")
UPSAMPLINGS = ("nearest", "bilinear", "pixel_shuffle")


def make_pad(kind: str, amount: int) -> nn.Module:
    """Padding layer by name: ``reflect`` (default), ``replicate`` or ``zero`` (no parameters: state-dict neutral)."""
    if kind == "reflect":
        return nn.ReflectionPad2d(amount)
    if kind == "replicate":
        return nn.ReplicationPad2d(amount)
    if kind == "zero":
        return nn.ZeroPad2d(amount)
    raise BadValue(f"unknown padding {kind!r}; use one of {', '.join(PADDINGS)}")


class ConvNormAct(nn.Sequential):
    """Pad → conv → norm → ReLU (B×C_in×H×W → B×C_out×H/stride×W/stride)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        norm: str = "instance",
        act: bool = True,
        padding: str = "reflect",
    ) -> None:
        super().__init__(
            make_pad(padding, kernel // 2),
            nn.Conv2d(c_in, c_out, kernel, stride=stride),
            make_norm(norm, c_out),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


class ResidualBlock(nn.Module):
    """Two 3×3 ConvNormAct layers (the second without ReLU) plus identity: B×C×H×W → B×C×H×W."""

    def __init__(self, channels: int, norm: str = "instance", padding: str = "reflect") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, 3, norm=norm, padding=padding),
            ConvNormAct(channels, channels, 3, norm=norm, act=False, padding=padding),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Sequential):
    """×2 upsampling stage, B×C_in×H×W → B×C_out×2H×2W (no transposed conv: avoids checkerboards).

    ``nearest`` / ``bilinear``: resize, then ConvNormAct (resize-convolution, Odena et al. 2016); the two share
    one state-dict layout. ``pixel_shuffle``: a conv to 4·C_out channels, then sub-pixel shuffle (Shi et al.
    2016), norm and ReLU, initialised ICNR-style (Aitken et al. 2017) so that it starts as nearest resize-conv.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, norm: str = "instance", upsample: str = "nearest",
        padding: str = "reflect",
    ) -> None:  # fmt: skip
        if upsample in ("nearest", "bilinear"):
            extra = {"align_corners": False} if upsample == "bilinear" else {}
            super().__init__(
                nn.Upsample(scale_factor=2, mode=upsample, **extra),
                ConvNormAct(c_in, c_out, kernel, norm=norm, padding=padding),
            )
        elif upsample == "pixel_shuffle":
            conv = nn.Conv2d(c_in, 4 * c_out, kernel)
            icnr_(conv, 2)
            act = nn.ReLU(inplace=True)
            super().__init__(make_pad(padding, kernel // 2), conv, nn.PixelShuffle(2), make_norm(norm, c_out), act)
        else:
            raise BadValue(f"unknown upsample {upsample!r}; use one of {', '.join(UPSAMPLINGS)}")


@torch.no_grad()
def icnr_(conv: nn.Conv2d, scale: int) -> None:
    """ICNR init of a conv with C·s² outputs feeding ``PixelShuffle(s)``: the s² sub-pixels of each output channel
    get the same kernel and bias, so the shuffled output starts free of the sub-pixel checkerboard."""
    weight, n = conv.weight, scale**2
    sub = torch.empty(weight.shape[0] // n, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_uniform_(sub, a=math.sqrt(5))  # nn.Conv2d's default init, for the sub-kernel
    weight.copy_(sub.repeat_interleave(n, dim=0))
    if conv.bias is not None:
        conv.bias.copy_(conv.bias[::n].repeat_interleave(n))


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
