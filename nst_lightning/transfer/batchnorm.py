"""Batch-norm statistics of a transferred encoder (reset or re-estimate them).

ImageNet running statistics describe the classification network's activations on 224-px ImageNet crops. In a
style-transfer network trained in ``bn_mode=batch`` they go stale as soon as the encoder's weights move, and
the eval-mode network (validation, export, inference) would normalise with them. We *re-estimate* rather than
merely reset: a reset leaves mean 0 / variance 1, which is wrong for every layer until about 1/momentum
training steps have replaced it, whereas re-estimating over a few batches of the training photos through the
current weights gives statistics that match the weights at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorm_layers(net: nn.Module, trainable_only: bool = True) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``net`` (by default only those in train mode, i.e. not frozen)."""
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    return [m for m in layers if m.training] if trainable_only else layers


@torch.no_grad()
def reestimate_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor], max_batches: int = 16) -> int:
    """Reset the running statistics of ``net``'s trainable batch-norm layers and re-estimate them as the plain
    average over up to ``max_batches`` B×3×H×W batches (the layers' momentum is restored afterwards).

    Layers in eval mode (frozen stages, ``bn_mode=frozen``) keep their statistics. Returns the batches used.
    """
    layers = batchnorm_layers(net)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    device = next(net.parameters()).device
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            net(batch.to(device))
            used += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
    return used
