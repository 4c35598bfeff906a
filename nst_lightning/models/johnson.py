"""Johnson et al. (2016) image transformation network, with instance norm (Ulyanov et al. 2016).

Reference architecture: 9×9 conv 32 → stride-2 convs 64, 128 → five residual blocks of 128 →
two nearest-upsample + conv stages (64, 32) → 9×9 conv to 3. Reflection padding throughout. Options (the
defaults are the reference, with its state-dict keys): bilinear resize-conv or pixel-shuffle upsampling, and
replicate or zero padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nst_lightning.models.base import TransformNet
from nst_lightning.models.blocks import ConvNormAct, ResidualBlock, UpsampleConv, make_pad, pad_to_multiple
from nst_lightning.models.conditional import StyleArg, bind_style, make_conditional
from nst_lightning.models.registry import register_model


class JohnsonNet(TransformNet):
    """Maps B×3×H×W images in [0, 1] to stylized B×3×H×W images in [0, 1], for any H, W ≥ 1.

    Args:
        base_channels: width of the first layer (32 in the paper); deeper layers use 2× and 4×.
        num_residual: number of residual blocks (5 in the paper).
        norm: ``instance`` (default), ``batch`` or ``none``.
        checkpointing: recompute the residual blocks and the decoder in the backward pass instead of storing
            their activations (less memory, about one extra forward of those layers).
        upsample: decoder upsampling, ``nearest`` (reference), ``bilinear`` or ``pixel_shuffle`` (see
            :class:`~nst_lightning.models.blocks.UpsampleConv`).
        padding: ``reflect`` (reference), ``replicate`` or ``zero``, for every convolution.
        num_styles: styles held by the network (conditional instance norm, see
            :mod:`~nst_lightning.models.conditional`); 1 is the ordinary single-style network.
    """

    size_multiple = 4  # two stride-2 convolutions

    def __init__(
        self,
        base_channels: int = 32,
        num_residual: int = 5,
        norm: str = "instance",
        checkpointing: bool = False,
        upsample: str = "nearest",
        padding: str = "reflect",
        num_styles: int = 1,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        # The layout arguments (what a narrower network started from this one must share: transfer/shrink.py).
        self.config = {"base_channels": base_channels, "num_residual": num_residual, "norm": norm,
                       "upsample": upsample, "padding": padding}  # fmt: skip
        c1, c2, c3 = base_channels, base_channels * 2, base_channels * 4
        self.encoder = nn.Sequential(
            ConvNormAct(3, c1, 9, norm=norm, padding=padding),
            ConvNormAct(c1, c2, 3, stride=2, norm=norm, padding=padding),
            ConvNormAct(c2, c3, 3, stride=2, norm=norm, padding=padding),
        )
        self.residuals = nn.Sequential(*[ResidualBlock(c3, norm=norm, padding=padding) for _ in range(num_residual)])
        self.decoder = nn.Sequential(
            UpsampleConv(c3, c2, norm=norm, upsample=upsample, padding=padding),
            UpsampleConv(c2, c1, norm=norm, upsample=upsample, padding=padding),
            make_pad(padding, 4),
            nn.Conv2d(c1, 3, 9),
        )
        self.num_styles = num_styles
        if num_styles > 1:
            make_conditional(self, num_styles)

    def stage_names(self) -> list[str]:
        """Stages in forward order, for freezing (``model.freeze``): the downsampling stem, each residual
        block, the upsampling decoder."""
        return ["encoder", *(f"residuals.{i}" for i in range(len(self.residuals))), "decoder"]

    def forward(self, x: torch.Tensor, style: StyleArg = None) -> torch.Tensor:
        """``style``: a multi-style network's style(s), see :data:`~nst_lightning.models.conditional.StyleArg`."""
        if self.num_styles > 1:
            bind_style(self, style, x.shape[0], x.device)
        padded, (h, w) = pad_to_multiple(x, self.size_multiple)
        y = self.encoder(padded)
        if self.checkpointing and torch.is_grad_enabled():
            for block in self.residuals:
                y = checkpoint(block, y, use_reentrant=False)
            y = checkpoint(self.decoder, y, use_reentrant=False)
        else:
            y = self.decoder(self.residuals(y))
        # Sigmoid keeps outputs in [0, 1] without clamping away gradients; sigmoid(z) = (tanh(z/2) + 1) / 2,
        # the scaled tanh of the paper.
        return torch.sigmoid(y[..., :h, :w])


@register_model("johnson")
def johnson(base_channels: int = 32, num_residual: int = 5, **kwargs: Any) -> JohnsonNet:
    """The reference Johnson network (1.7 M parameters at the default width); ``kwargs``: see :class:`JohnsonNet`."""
    return JohnsonNet(base_channels, num_residual, **kwargs)


@register_model("johnson_tiny")
def johnson_tiny(base_channels: int = 8, num_residual: int = 1, **kwargs: Any) -> JohnsonNet:
    """A narrow, shallow Johnson network for tests and smoke runs."""
    return JohnsonNet(base_channels, num_residual, **kwargs)
