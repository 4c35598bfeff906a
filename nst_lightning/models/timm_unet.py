"""Encoder–decoder transformation networks built on timm backbones (``features_only``).

The decoder is sized from the encoder's ``feature_info`` (channels and reductions), so no channel count is
hard-coded: at each scale it upsamples (nearest neighbour, never transposed convs), concatenates the encoder
skip feature and applies a reflection-padded conv block. A last stage at full resolution sees the input
image again, which keeps fine content detail.

Batch norm in the encoder (``bn_mode``):

* ``instance`` (default): every BatchNorm layer becomes an instance norm that keeps the layer's learned
  affine scale and shift (and timm's fused activation). Style transfer trains with batches of 4 or fewer
  per device, where batch statistics are noise, and normalises each image's contrast anyway (Ulyanov et
  al. 2016); instance norm also makes the network behave identically in training and inference, for any
  batch size or DDP sharding.
* ``frozen``: BatchNorm layers stay in eval mode with their ImageNet running statistics (useful when
  fine-tuning a pretrained encoder gently).
* ``batch``: plain batch norm with running statistics (the classification recipe; not recommended).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nst_lightning.errors import BadValue, NSTError
from nst_lightning.image import IMAGENET_MEAN, IMAGENET_STD
from nst_lightning.models.base import TransformNet
from nst_lightning.models.blocks import ConvNormAct, pad_to_multiple
from nst_lightning.models.conditional import StyleArg, bind_style, make_conditional
from nst_lightning.models.registry import register_model


class InstanceNormAct(nn.Module):
    """Instance norm with a BatchNorm layer's affine parameters, plus its (timm) dropout and activation."""

    per_image_norm = True  # normalises each image by its own statistics (see nst_lightning.models.base)

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone()) if bn.affine else None
        self.bias = nn.Parameter(bn.bias.detach().clone()) if bn.affine else None
        self.eps = bn.eps
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_norm(F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps))

    def after_norm(self, y: torch.Tensor) -> torch.Tensor:
        """What follows the normalisation: timm's dropout and activation."""
        return self.act(self.drop(y))


def replace_batchnorm_with_instancenorm(module: nn.Module) -> int:
    """Replace every BatchNorm2d (and subclass) inside ``module`` in place; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, InstanceNormAct(child))
            count += 1
        else:
            count += replace_batchnorm_with_instancenorm(child)
    return count


def create_timm_encoder(
    backbone: str, pretrained: bool, weights_file: str | None = None, out_indices: tuple[int, ...] | None = None
) -> nn.Module:
    """timm ``features_only`` encoder; pretrained weights from the hub or a local ``weights_file``.

    Raises:
        NSTError: pretrained weights were asked for but cannot be downloaded or read.
    """
    import timm  # imported here so that johnson-only users do not pay timm's import time

    kwargs: dict = {"features_only": True}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    if weights_file:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        return timm.create_model(backbone, pretrained=pretrained or bool(weights_file), **kwargs)
    except Exception as exc:  # timm surfaces hub/network failures as many exception types
        if not (pretrained or weights_file):
            raise
        raise NSTError(
            f"could not load ImageNet weights for timm model {backbone!r} ({type(exc).__name__}: {exc}). "
            "They are downloaded from the Hugging Face hub on first use: run once with network access, "
            "point model.weights_file=PATH at a downloaded weight file, or set model.pretrained=false."
        ) from exc


class TimmUNet(TransformNet):
    """timm encoder + skip-connected upsampling decoder: B×3×H×W in [0, 1] → B×3×H×W in [0, 1].

    Args:
        backbone: timm model name (``mobilenetv3_large_100``, ``resnet50``, ...).
        pretrained: load timm's ImageNet weights (downloads; fails clearly offline).
        weights_file: local timm weight file to load instead of downloading.
        bn_mode: ``instance``, ``frozen`` or ``batch`` (see the module docstring).
        decoder_max_channels: cap on each decoder stage's width (its width is the skip's channel count).
        decoder_norm: normalisation in the decoder (``instance`` or ``batch``).
        out_indices: which encoder stages to use (timm's default: all).
        checkpointing: gradient checkpointing of the encoder (timm's ``set_grad_checkpointing``) and of each
            decoder stage: activations are recomputed in the backward pass instead of stored.
        num_styles: styles held by the network (conditional instance norm in the encoder with
            ``bn_mode=instance`` and in an instance-norm decoder); 1 is the ordinary single-style network.
    """

    def __init__(
        self,
        backbone: str,
        pretrained: bool = False,
        weights_file: str | None = None,
        bn_mode: str = "instance",
        decoder_max_channels: int = 256,
        decoder_norm: str = "instance",
        out_indices: tuple[int, ...] | None = None,
        checkpointing: bool = False,
        num_styles: int = 1,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        if bn_mode not in ("instance", "frozen", "batch"):
            raise BadValue(f"unknown bn_mode {bn_mode!r}; use 'instance', 'frozen' or 'batch'")
        self.encoder = create_timm_encoder(backbone, pretrained, weights_file, out_indices)
        self.bn_mode = bn_mode
        if bn_mode == "instance":
            replace_batchnorm_with_instancenorm(self.encoder)
        if checkpointing and hasattr(self.encoder, "set_grad_checkpointing"):
            self.encoder.set_grad_checkpointing(True)
            # timm < 1.0.31 checkpoints a stem's ReLU(inplace=True) on its own, which overwrites the tensor saved
            # for recomputation and fails in backward; in-place activations save nothing worth it here anyway.
            for module in self.encoder.modules():
                if getattr(module, "inplace", None) is True:
                    module.inplace = False
        info = self.encoder.feature_info
        channels = list(info.channels())
        self.reductions = list(info.reduction())
        self.size_multiple = max(self.reductions)
        widths = [min(c, decoder_max_channels) for c in channels]

        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1), False)

        self.bottleneck = ConvNormAct(channels[-1], widths[-1], 1, norm=decoder_norm)
        self.stages = nn.ModuleList(
            ConvNormAct(widths[i + 1] + channels[i], widths[i], 3, norm=decoder_norm)
            for i in reversed(range(len(channels) - 1))
        )
        head_width = max(widths[0] // 2, 16)
        self.head = nn.Sequential(
            ConvNormAct(widths[0] + 3, head_width, 3, norm=decoder_norm),
            nn.ReflectionPad2d(1),
            nn.Conv2d(head_width, 3, 3),
        )
        self.num_styles = num_styles
        if num_styles > 1:
            make_conditional(self, num_styles)

    def train(self, mode: bool = True) -> TimmUNet:
        super().train(mode)
        if self.bn_mode == "frozen":
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def stage_names(self) -> list[str]:
        """Stages in forward order, for freezing (``model.freeze``): the whole encoder or its stages, the
        bottleneck, each decoder stage, the head."""
        inner = [f"encoder.{n}" for n, m in self.encoder.named_children() if any(True for _ in m.parameters())]
        return ["encoder", *inner, "bottleneck", *(f"stages.{i}" for i in range(len(self.stages))), "head"]

    def forward(self, x: torch.Tensor, style: StyleArg = None) -> torch.Tensor:
        """``style``: a multi-style network's style(s), see :data:`~nst_lightning.models.conditional.StyleArg`."""
        if self.num_styles > 1:
            bind_style(self, style, x.shape[0], x.device)
        # At least 2×2 at the deepest stage: instance norm over a single position is undefined.
        padded, (h, w) = pad_to_multiple(x, self.size_multiple, min_size=2 * self.size_multiple)
        feats = self.encoder((padded - self.mean) / self.std)
        y = self.bottleneck(feats[-1])
        recompute = self.checkpointing and torch.is_grad_enabled()
        for stage, skip in zip(self.stages, reversed(feats[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = torch.cat([y, skip], dim=1)
            y = checkpoint(stage, y, use_reentrant=False) if recompute else stage(y)
        y = F.interpolate(y, size=padded.shape[-2:], mode="nearest")
        y = self.head(torch.cat([y, padded], dim=1))
        return torch.sigmoid(y[..., :h, :w])


@register_model("mobilenetv3")
def mobilenetv3(backbone: str = "mobilenetv3_large_100", **kwargs) -> TimmUNet:
    """MobileNetV3-Large encoder (timm) with a skip-connected decoder."""
    return TimmUNet(backbone, **kwargs)


@register_model("resnet50")
def resnet50(backbone: str = "resnet50", **kwargs) -> TimmUNet:
    """ResNet-50 encoder (timm) with a skip-connected decoder."""
    return TimmUNet(backbone, **kwargs)
