"""Perceptual loss module: content, style (Gram) and total-variation terms over one VGG-19 pass.

Holds the loss network and the style's target Gram matrices; neither ever enters a checkpoint (the VGG
weights are rebuilt from the ``vgg_weights`` name, the Grams from the style image and its cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.losses import functional as LF
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.vgg import VGG19Features


def blend_grams(grams: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average ``{layer: 1×C×C}`` of several styles' Grams (``weights`` are normalised to sum 1)."""
    if len(grams) != len(weights):
        raise NSTError(f"got {len(grams)} styles but {len(weights)} style weights")
    total = float(sum(weights))
    return {name: sum((w / total) * g[name] for g, w in zip(grams, weights, strict=True)) for name in grams[0]}


class PerceptualLoss(nn.Module):
    """Weighted content + style + TV objective (Gatys et al. 2016; Johnson et al. 2016).

    Args:
        config: the loss description (layers, balance, VGG weights, loss weights); default :class:`LossConfig`.
        **changes: fields of :class:`LossConfig` to change, e.g. ``PerceptualLoss(style_weight=30)``.
    """

    def __init__(self, config: LossConfig | None = None, **changes: Any) -> None:
        super().__init__()
        self.config = (config or LossConfig()).replace(**changes) if changes else (config or LossConfig())
        cfg = self.config
        self.content_layers = cfg.content_layers
        self.style_layers = cfg.style_layers
        self.style_layer_weights = list(cfg.layer_weights)
        self.style_balance = cfg.style_balance
        self.content_weight = cfg.content_weight
        self.style_weight = cfg.style_weight
        self.tv_weight = cfg.tv_weight
        self.vgg = VGG19Features(self.content_layers + self.style_layers, weights=cfg.vgg_weights, pooling=cfg.pooling)
        self._balance: dict[str, float] = {}

    @property
    def target_grams(self) -> dict[str, torch.Tensor]:
        """The style's target Grams {layer: 1×C×C} (non-persistent buffers: never in a state dict)."""
        return {n: getattr(self, f"target_gram_{n}") for n in self.style_layers if hasattr(self, f"target_gram_{n}")}

    @torch.no_grad()
    def compute_grams(self, style_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """fp32 Gram matrices {layer: 1×C×C} of a 1×3×H×W style image in [0, 1]."""
        device = next(self.vgg.parameters()).device
        feats = self.vgg(style_image.to(device))
        return {name: LF.gram_matrix(feats[name]) for name in self.style_layers}

    def set_style_grams(self, grams: dict[str, torch.Tensor]) -> None:
        """Install precomputed target Grams ({layer: 1×C×C}) for every style layer."""
        missing = [n for n in self.style_layers if n not in grams]
        if missing:
            raise NSTError(f"style Grams are missing layers {missing}")
        device = next(self.vgg.parameters()).device
        for n in self.style_layers:
            self.register_buffer(f"target_gram_{n}", grams[n].detach().float().to(device), persistent=False)
        self._balance = {
            n: (1.0 / max(float(g.pow(2).mean()), 1e-12) if self.style_balance == "auto" else 1.0)
            for n, g in self.target_grams.items()
        }

    def set_style_images(self, images: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> None:
        """Targets from one or more 1×3×H×W style images; several are blended as a weighted Gram average."""
        weights = list(weights) if weights is not None else [1.0] * len(images)
        blended = blend_grams([self.compute_grams(image) for image in images], weights)
        self.set_style_grams(blended)

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Content features ``{layer: B×C×h×w}`` of B×3×H×W images, without autograd, VGG stopped at the
        deepest content layer. Precompute them once when the content does not change (per-image optimisation)."""
        return self.vgg(content, self.content_layers)

    def forward(
        self,
        generated: torch.Tensor,
        content: torch.Tensor | None = None,
        content_targets: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for B×3×H×W generated images against B×3×H×W content images (both in [0, 1]).

        The content images go through VGG without autograd and only up to the deepest content layer; the
        generated images go through once, with autograd. (Concatenating both batches into one pass would
        also back-propagate through the content half, doubling the backward cost for nothing.) Pass
        ``content_targets`` (from :meth:`content_targets`) instead of ``content`` to reuse precomputed
        features. With neither, only the style and TV terms are computed (``content`` is 0).

        Returns:
            ``{"content", "style", "tv", "objective"}``: weighted fp32 scalars; objective is their sum.
        """
        if not self.target_grams:
            raise NSTError("no style targets: call set_style_images() or set_style_grams() first")
        feats = self.vgg(generated)
        zero = generated.new_zeros((), dtype=torch.float32)
        c_loss = zero
        if content_targets is None and content is not None:
            content_targets = self.content_targets(content.to(generated.dtype))
        if content_targets is not None:
            for name in self.content_layers:
                c_loss = c_loss + LF.content_loss(feats[name], content_targets[name])
        s_loss = zero
        grams = self.target_grams
        for name, w in zip(self.style_layers, self.style_layer_weights, strict=True):
            gram = LF.gram_matrix(feats[name])
            s_loss = s_loss + w * self._balance[name] * LF.style_loss(gram, grams[name])
        tv = LF.total_variation(generated) if self.tv_weight else zero
        terms = {
            "content": self.content_weight * c_loss,
            "style": self.style_weight * s_loss,
            "tv": self.tv_weight * tv,
        }
        terms["objective"] = terms["content"] + terms["style"] + terms["tv"]
        return terms
