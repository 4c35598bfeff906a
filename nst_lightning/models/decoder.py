"""Decoders that invert VGG-19 features back to images (zero-shot style transfer).

A decoder for level ``relu{b}_1`` mirrors VGG-19 from that layer back to the image: every convolution of the
encoder in reverse order with input and output channels swapped, nearest-neighbour upsampling where the encoder
pools, reflection padding (zero padding gives dark borders). This is the decoder of Huang & Belongie (AdaIN,
2017) for ``relu4_1`` and of Li et al. (universal style transfer by WCT, 2017) for each level.

Decoders are not image transformation networks (they take features, not images), so they stay out of the
``create_model`` registry; checkpoints carry ``level`` and ``width`` to rebuild them.
"""

from __future__ import annotations

import torch
from torch import nn

from nst_lightning.errors import BadValue
from nst_lightning.losses.vgg import _BLOCKS

DECODER_LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def level_block(level: str) -> int:
    """VGG block number of a ``relu{b}_1`` level (``relu4_1`` → 4)."""
    if level not in DECODER_LEVELS:
        raise BadValue(f"unknown decoder level {level!r}; use one of {', '.join(DECODER_LEVELS)}")
    return int(level[4])


def level_channels(level: str) -> int:
    """Channels of the VGG-19 features at ``level`` (``relu4_1`` → 512)."""
    return _BLOCKS[level_block(level) - 1][1]


def _conv(c_in: int, c_out: int, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
    return [*layers, nn.ReLU(inplace=True)] if act else layers


class VGGDecoder(nn.Module):
    """Mirror of VGG-19 from ``level`` back to an RGB image.

    Args:
        level: ``relu1_1`` … ``relu5_1``: the features it inverts.
        width: channel multiplier for every layer but the input (1.0: VGG's own widths; tests use 1/16).
        input_scale: fixed factor applied to the features first (about 1 / their RMS on photos), so that
            training starts with outputs near the image range whatever the level's feature magnitude.

    ``forward(features)`` maps B×C×h×w features (C = VGG's channels at ``level``) to B×3×(h·2^(b-1))×(w·2^(b-1))
    RGB, approximately in [0, 1] (not clamped).
    """

    def __init__(self, level: str = "relu4_1", width: float = 1.0, input_scale: float = 1.0) -> None:
        super().__init__()
        self.level = level
        self.width = width
        self.input_scale = input_scale
        block = level_block(level)

        def ch(b: int) -> int:
            return max(1, round(_BLOCKS[b - 1][1] * width))

        layers: list[nn.Module] = []
        c_in = level_channels(level)
        if block > 1:
            # The encoder reached relu{b}_1 through block b's first conv only: mirror it, then unpool.
            layers += [*_conv(c_in, ch(block - 1)), nn.Upsample(scale_factor=2, mode="nearest")]
            c_in = ch(block - 1)
        else:
            layers += _conv(c_in, ch(1))
            c_in = ch(1)
        for b in range(block - 1, 0, -1):
            n_conv = _BLOCKS[b - 1][0]
            for _ in range(n_conv - 1):
                layers += _conv(c_in, ch(b))
                c_in = ch(b)
            if b > 1:
                layers += [*_conv(c_in, ch(b - 1)), nn.Upsample(scale_factor=2, mode="nearest")]
                c_in = ch(b - 1)
        layers += _conv(c_in, 3, act=False)
        self.body = nn.Sequential(*layers)

    @property
    def in_channels(self) -> int:
        """Channels of the features it takes."""
        return level_channels(self.level)

    @property
    def scale(self) -> int:
        """Output pixels per feature pixel along each side."""
        return 2 ** (level_block(self.level) - 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """B×C×h×w VGG features → B×3×(h·scale)×(w·scale) image."""
        return self.body(features * self.input_scale if self.input_scale != 1.0 else features)
