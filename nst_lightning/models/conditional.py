"""Conditional instance normalisation (Dumoulin et al. 2017): many styles in one network.

A multi-style network keeps one set of weights for everything but its instance-norm layers, which hold a scale
and a shift per style (``num_styles`` × C each). Each image chooses its style by a weight vector over the styles:
one-hot picks a style, any other convex combination blends the styles' scales and shifts. A new style is a new
scale/shift row per layer (:func:`add_styles`), trainable on its own while everything else stays fixed.

The style goes in as the network's second argument, ``net(x, style)``, where ``style`` is a B index tensor
(integer dtype) or B×S weights (float; a single S vector is shared by the batch). The network hands the
weights to its layers (:func:`bind_style`) before running them, so any container (``nn.Sequential``, timm
stages) works unchanged. ``net(x)`` runs style 0.

Torch only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nst_lightning.errors import BadValue, NSTError

StyleArg = torch.Tensor | None
"""A B (or scalar) integer index tensor, B×S or S float weights, or None (style 0)."""


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one affine scale/shift per style: B×C×H×W → B×C×H×W.

    The scale of image b is ``Σ_s w[b, s] · scale[s]`` (likewise the shift), ``w`` being the B×S style weights
    set by :func:`bind_style`. Parameters are kept per style (``scale.<s>``, ``shift.<s>``: C each), so one style
    can be trained while the others stay frozen.

    A per-image norm layer for tiling (:mod:`nst_lightning.models.base`): it has no single ``weight``/``bias``,
    and :meth:`after_norm` applies the current style's scale and shift to the imposed statistics.

    Args:
        channels: C.
        num_styles: S ≥ 1.
        eps: added to the variance.
        act, drop: applied after the affine step (timm's fused norm+activation layers); identity by default.
    """

    def __init__(
        self, channels: int, num_styles: int, eps: float = 1e-5, act: nn.Module | None = None,
        drop: nn.Module | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_styles < 1:
            raise BadValue(f"num_styles must be ≥ 1, got {num_styles}")
        self.eps = eps
        self.scale = nn.ParameterList(nn.Parameter(torch.ones(channels)) for _ in range(num_styles))
        self.shift = nn.ParameterList(nn.Parameter(torch.zeros(channels)) for _ in range(num_styles))
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.style: torch.Tensor | None = None  # B×S weights of the current forward (set by bind_style)

    per_image_norm = True
    weight = None  # the affine step is per style: see after_norm
    bias = None

    @property
    def num_styles(self) -> int:
        return len(self.scale)

    def modulate(self, normalized: torch.Tensor) -> torch.Tensor:
        """The per-style affine step (then dropout and activation) on an already normalised B×C×H×W tensor."""
        b = normalized.shape[0]
        weights = self.style
        if weights is None:
            weights = F.one_hot(torch.zeros(b, dtype=torch.long, device=normalized.device), self.num_styles)
        weights = weights.to(self.scale[0].dtype).expand(b, -1)
        scale = weights @ torch.stack(list(self.scale))  # B×C; exact for one-hot weights (the rest adds zeros)
        shift = weights @ torch.stack(list(self.shift))
        y = normalized * scale[:, :, None, None].to(normalized.dtype) + shift[:, :, None, None].to(normalized.dtype)
        return self.act(self.drop(y))

    def after_norm(self, normalized: torch.Tensor) -> torch.Tensor:
        """What follows the normalisation (tiling imposes whole-image statistics, then calls this)."""
        return self.modulate(normalized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modulate(F.instance_norm(x, eps=self.eps))

    def extra_repr(self) -> str:
        return f"{self.scale[0].numel()}, num_styles={self.num_styles}, eps={self.eps}"


def conditional_layers(net: nn.Module) -> list[ConditionalInstanceNorm2d]:
    """The network's conditional instance-norm layers, in module order."""
    return [m for m in net.modules() if isinstance(m, ConditionalInstanceNorm2d)]


def num_styles(net: nn.Module) -> int:
    """How many styles a network holds (1 for an ordinary network)."""
    layers = conditional_layers(net)
    return layers[0].num_styles if layers else 1


def style_weights(style: StyleArg, count: int, batch: int, device: torch.device) -> torch.Tensor:
    """The B×S float weights meant by ``style`` (see :data:`StyleArg`) for S = ``count`` styles.

    Raises:
        NSTError: an index out of range or weights of the wrong shape.
    """
    if style is None:
        return F.one_hot(torch.zeros(batch, dtype=torch.long, device=device), count).float()
    if not style.is_floating_point():
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling() and style.numel():
            lo, hi = int(style.min()), int(style.max())
            if lo < 0 or hi >= count:
                raise NSTError(f"style index {hi if hi >= count else lo} is out of range: this network has {count}")
        return F.one_hot(style.long().reshape(-1), count).float().expand(batch, -1)
    if style.shape[-1] != count or style.dim() > 2:
        raise NSTError(f"style weights must be S or B×S with S={count} styles, got shape {tuple(style.shape)}")
    return style.reshape(-1, count).expand(batch, -1)


def bind_style(net: nn.Module, style: StyleArg, batch: int, device: torch.device) -> None:
    """Give every conditional layer of ``net`` the B×S weights of ``style`` for the next forward pass."""
    layers = conditional_layers(net)
    if not layers:
        return
    weights = style_weights(style, layers[0].num_styles, batch, device)
    for layer in layers:
        layer.style = weights


def _replace(module: nn.Module, count: int) -> int:
    replaced = 0
    for name, child in module.named_children():
        is_instance = isinstance(child, nn.InstanceNorm2d) and child.affine
        fused = type(child).__name__ == "InstanceNormAct" and getattr(child, "weight", None) is not None
        if is_instance or fused:
            layer = ConditionalInstanceNorm2d(
                child.weight.numel(), count, child.eps, getattr(child, "act", None), getattr(child, "drop", None)
            )
            with torch.no_grad():
                for s in range(count):  # every style starts from the layer's own scale and shift
                    layer.scale[s].copy_(child.weight)
                    layer.shift[s].copy_(child.bias)
            setattr(module, name, layer)
            replaced += 1
        else:
            replaced += _replace(child, count)
    return replaced


def make_conditional(net: nn.Module, count: int) -> int:
    """Replace every affine instance-norm layer of ``net`` by a :class:`ConditionalInstanceNorm2d` of ``count``
    styles, each starting from the layer's current scale and shift; returns how many layers were replaced.

    Raises:
        NSTError: ``count`` > 1 but the network has no affine instance norm (``norm=batch``, ``bn_mode=frozen``).
    """
    replaced = _replace(net, count)
    if count > 1 and not replaced:
        raise NSTError(
            f"{type(net).__name__} has no instance-norm layers, so it cannot hold several styles; "
            "use norm=instance (johnson) or bn_mode=instance (timm networks)"
        )
    return replaced


@torch.no_grad()
def add_styles(net: nn.Module, count: int = 1) -> list[nn.Parameter]:
    """Append ``count`` styles to every conditional layer, each starting from the mean of the existing styles'
    scales and shifts; returns the new parameters (2 per layer per new style)."""
    new: list[nn.Parameter] = []
    for layer in conditional_layers(net):
        for params in (layer.scale, layer.shift):
            start = torch.stack([p.detach() for p in params]).mean(0)
            for _ in range(count):
                params.append(nn.Parameter(start.clone()))
                new.append(params[-1])
    return new


def style_parameters(net: nn.Module, index: int) -> list[nn.Parameter]:
    """The scale and shift parameters of style ``index`` across the network."""
    return [p for layer in conditional_layers(net) for p in (layer.scale[index], layer.shift[index])]


def resolve_style(
    names: Sequence[str],
    style: str | int | None = None,
    style_mix: Mapping[str | int, float] | None = None,
) -> torch.Tensor:
    """The S weights (summing to 1) meant by a style name / index or a mix ``{name or index: weight}``.

    ``names`` are the network's styles in order. Neither given: style 0. A mix's weights must be ≥ 0 with a
    positive sum; they are normalised (``{a: 7, b: 3}`` = ``{a: 0.7, b: 0.3}``).

    Raises:
        NSTError: both given, an unknown name or index (the message lists the styles), or bad weights.
    """
    count = len(names)
    if style is not None and style_mix:
        raise NSTError("give either style=NAME or style_mix={NAME: WEIGHT, ...}, not both")

    def index(key: str | int) -> int:
        if isinstance(key, bool):
            key = str(key)
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and key not in names):
            i = int(key)
            if 0 <= i < count:
                return i
        elif key in names:
            return list(names).index(key)
        raise NSTError(f"unknown style {key!r}; this network has {count}: {', '.join(map(str, names))}")

    weights = torch.zeros(count)
    if not style_mix:
        weights[0 if style is None else index(style)] = 1.0
        return weights
    for key, value in dict(style_mix).items():
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise NSTError(f"style_mix weight of {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(w) or w < 0:
            raise NSTError(f"style_mix weights must be numbers ≥ 0, got {key}: {value!r}")
        weights[index(key)] += w
    total = float(weights.sum())
    if total <= 0:
        raise NSTError("style_mix weights must not all be 0")
    return weights / total


class StyleBound(nn.Module):
    """A multi-style network with its style fixed: B×3×H×W → B×3×H×W, as ``net(x, weights)``.

    For code that calls a network with one argument (evaluation, graph callbacks); ``weights`` is S floats.
    """

    def __init__(self, net: nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("weights", weights.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.weights.to(x.device))
