"""Perceptual loss module: content, style (Gram) and total-variation terms over one VGG-19 pass.

Holds the loss network and the style's target Gram matrices; neither ever enters a checkpoint (the VGG
weights are rebuilt from the ``vgg_weights`` name, the Grams from the style image and its cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.losses import functional as LF
from nst_lightning.losses.config import TERM_WEIGHTS, LossConfig
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
        self._balance: dict[str, float] = {}  # style 0's per-layer balance (the only style, usually)
        self._bank_balance: dict[str, list[float]] = {}  # per layer, one balance per style
        self._term_weights: list[tuple[float, float, float]] | None = None  # per style (content, style, tv)

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
        self.set_style_bank([grams])

    def set_style_bank(
        self, grams: Sequence[dict[str, torch.Tensor]], term_weights: Sequence[Mapping[str, float]] | None = None
    ) -> None:
        """Install the targets of S styles at once (a multi-style network trains on all of them).

        Args:
            grams: per style, its Grams {layer: 1×C×C}; stored stacked as S×C×C buffers.
            term_weights: per style, its ``content_weight``, ``style_weight`` and ``tv_weight`` (each style's own
                preset); None: the config's weights for every style.
        """
        if not grams:
            raise NSTError("no style Grams given")
        missing = [n for n in self.style_layers if any(n not in g for g in grams)]
        if missing:
            raise NSTError(f"style Grams are missing layers {missing}")
        if term_weights is not None and len(term_weights) != len(grams):
            raise NSTError(f"got {len(grams)} styles but {len(term_weights)} sets of loss weights")
        device = next(self.vgg.parameters()).device
        for n in self.style_layers:
            stacked = torch.cat([g[n].detach().float().reshape(1, *g[n].shape[-2:]) for g in grams]).to(device)
            self.register_buffer(f"target_gram_{n}", stacked, persistent=False)
        self._bank_balance = {
            n: [1.0 / max(float(g[s].pow(2).mean()), 1e-12) if self.style_balance == "auto" else 1.0
                for s in range(len(grams))]
            for n, g in self.target_grams.items()
        }  # fmt: skip
        self._balance = {n: b[0] for n, b in self._bank_balance.items()}
        self._term_weights = [tuple(float(w[k]) for k in TERM_WEIGHTS) for w in term_weights] if term_weights else None

    @property
    def num_styles(self) -> int:
        """How many styles' targets are installed (0: none yet)."""
        grams = self.target_grams
        return next(iter(grams.values())).shape[0] if grams else 0

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
        style: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for B×3×H×W generated images against B×3×H×W content images (both in [0, 1]).

        The content images go through VGG without autograd and only up to the deepest content layer; the
        generated images go through once, with autograd. (Concatenating both batches into one pass would
        also back-propagate through the content half, doubling the backward cost for nothing.) Pass
        ``content_targets`` (from :meth:`content_targets`) instead of ``content`` to reuse precomputed
        features. With neither, only the style and TV terms are computed (``content`` is 0). ``style``: which of
        the installed styles' targets and loss weights to use (required when several are installed).

        Returns:
            ``{"content", "style", "tv", "objective"}``: weighted fp32 scalars; objective is their sum.
        """
        if not self.target_grams:
            raise NSTError("no style targets: call set_style_images() or set_style_grams() first")
        count = self.num_styles
        if style is None and count > 1:
            raise NSTError(f"the loss holds {count} styles' targets: pass style=INDEX")
        s_index = style or 0
        if not 0 <= s_index < count:
            raise NSTError(f"style {s_index} is out of range: the loss holds {count} styles")
        content_weight, style_weight, tv_weight = (
            self._term_weights[s_index] if self._term_weights else (self.content_weight, self.style_weight,
                                                                    self.tv_weight)
        )  # fmt: skip
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
            target = grams[name][s_index : s_index + 1]
            s_loss = s_loss + w * self._bank_balance[name][s_index] * LF.style_loss(gram, target)
        tv = LF.total_variation(generated) if tv_weight else zero
        terms = {
            "content": content_weight * c_loss,
            "style": style_weight * s_loss,
            "tv": tv_weight * tv,
        }
        terms["objective"] = terms["content"] + terms["style"] + terms["tv"]
        return terms
