"""What a transformation network tells its callers, so that no caller has to check its class.

Every network in this package derives from :class:`TransformNet` and declares:

* ``size_multiple``: its total stride. The network pads its input to a multiple of it (and crops the output
  back) itself; a captured graph (``nst_lightning.export``) takes inputs that are already padded to it.
* ``norm_layers()``: the layers that normalise each image by its own statistics. Tiled inference
  (``nst_lightning.inference.tiling``) records their whole-image statistics once and imposes them on every tile.

A per-image norm layer is an ``nn.InstanceNorm2d`` that does not use running statistics, or any module that sets
``per_image_norm = True`` and has ``eps``, ``weight`` and ``bias`` (``None`` without affine parameters) like
``nn.InstanceNorm2d``; it may define ``after_norm(y)``, what it applies after the affine normalisation (an
activation, dropout). :func:`normalize_with` computes such a layer's output from given statistics.
"""

from __future__ import annotations

import torch
from torch import nn


def is_per_image_norm(layer: nn.Module) -> bool:
    """True for a layer that normalises each image by its own per-channel statistics (see the module doc)."""
    if getattr(layer, "per_image_norm", False):
        return True
    return isinstance(layer, nn.InstanceNorm2d) and not (layer.track_running_stats and not layer.training)


def per_image_norm_layers(module: nn.Module) -> list[nn.Module]:
    """Every per-image norm layer inside ``module``, in ``module.modules()`` order."""
    return [m for m in module.modules() if is_per_image_norm(m)]


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """``module.norm_layers()`` when the module declares it, else every per-image norm layer found inside it
    (any ``nn.Module`` a user passes in, not only this package's networks)."""
    declared = getattr(module, "norm_layers", None)
    return list(declared()) if callable(declared) else per_image_norm_layers(module)


def normalize_with(layer: nn.Module, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """What per-image norm ``layer`` returns for B×C×H×W ``x`` when normalising by the given per-channel ``mean``
    and ``var`` (C values each) instead of ``x``'s own: the affine normalisation, then ``layer.after_norm``."""
    shape = (1, -1, 1, 1)
    y = (x.float() - mean.view(shape)) * torch.rsqrt(var + layer.eps).view(shape)
    if layer.weight is not None:
        y = y * layer.weight.float().view(shape) + layer.bias.float().view(shape)
    y = y.to(x.dtype)
    after = getattr(layer, "after_norm", None)
    return after(y) if callable(after) else y


class TransformNet(nn.Module):
    """Base of the image transformation networks: B×3×H×W in [0, 1] → B×3×H×W in [0, 1] for any H, W ≥ 1.

    A subclass sets ``size_multiple`` (a class attribute, or an instance attribute in ``__init__``) and inherits
    :meth:`norm_layers`, which it overrides only when it has per-image norm layers the default cannot find.
    """

    size_multiple: int = 1

    def norm_layers(self) -> list[nn.Module]:
        """The layers that normalise each image by its own statistics (every per-image norm layer inside)."""
        return per_image_norm_layers(self)
