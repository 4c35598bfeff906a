"""Start a narrower or shallower johnson network from a trained wider one, by keeping its most important channels.

A student that starts from its teacher's strongest channels and residual blocks is already a stylizing network:
at equal CPU training it ends far closer to the teacher than one started at random (``docs/transfer.md``).

Which channels: every convolution of a johnson network is followed by instance normalisation, which removes any
per-channel constant, so a channel matters through its normalised part only: its scale ``|γ|`` times the size
of the weights that read it in the next layer(s). The residual stream's channels are chosen once for all the
blocks that write and read it; the kept blocks are those whose output scales are largest on average.

Torch only (no Lightning, no Hydra).
"""

from __future__ import annotations

from typing import Any

import torch

from nst_lightning.models.johnson import JohnsonNet

# Builder arguments that must agree between the source and the narrower network.
_SAME = ("norm", "upsample", "padding")


def can_shrink(source: torch.nn.Module, target: torch.nn.Module) -> bool:
    """Whether ``target`` is a narrower and/or shallower single-style johnson of ``source``'s kind."""
    if not (isinstance(source, JohnsonNet) and isinstance(target, JohnsonNet)):
        return False
    if source.num_styles != 1 or target.num_styles != 1:
        return False
    if any(source.config.get(k) != target.config.get(k) for k in _SAME) or source.config.get("norm") != "instance":
        return False
    narrower = target.config["base_channels"] <= source.config["base_channels"]
    shallower = target.config["num_residual"] <= source.config["num_residual"]
    return narrower and shallower


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of a 1-D ``score``, in ascending order (channel order kept)."""
    return torch.sort(torch.topk(score, k).indices).values


def _reads(weight: torch.Tensor) -> torch.Tensor:
    """Per input channel, the Frobenius norm of an out×in×kh×kw convolution weight's slice: shape (in,)."""
    return weight.float().pow(2).sum(dim=(0, 2, 3)).sqrt()


def shrink_state(state: dict[str, torch.Tensor], base_channels: int, num_residual: int) -> tuple[dict, list[int]]:
    """A johnson ``state_dict`` reduced to ``base_channels`` and ``num_residual`` blocks.

    Args:
        state: the wider network's state dict (single-style, instance norm).
        base_channels: the narrower network's first width (its others are 2× and 4× that).
        num_residual: residual blocks to keep.

    Returns:
        The narrower network's state dict (tensors cloned) and the source indices of the kept residual blocks.
    """
    w = state.__getitem__
    c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
    blocks = len({k.split(".")[1] for k in state if k.startswith("residuals.")})
    kept = _top(torch.stack([w(f"residuals.{i}.body.1.2.weight").float().abs().mean() for i in range(blocks)]),
                num_residual).tolist()  # fmt: skip
    g = lambda name: w(f"{name}.weight").float().abs()  # noqa: E731  # an instance norm's scales
    s1 = _top(g("encoder.0.2") * _reads(w("encoder.1.1.weight")), c1)
    s2 = _top(g("encoder.1.2") * _reads(w("encoder.2.1.weight")), c2)
    writes = g("encoder.2.2") + sum(g(f"residuals.{i}.body.1.2") for i in kept)
    reads = _reads(w("decoder.0.1.1.weight")) + sum(_reads(w(f"residuals.{i}.body.0.1.weight")) for i in kept)
    s3 = _top(writes * reads, c3)
    d2 = _top(g("decoder.0.1.2") * _reads(w("decoder.1.1.1.weight")), c2)
    d1 = _top(g("decoder.1.1.2") * _reads(w("decoder.3.weight")), c1)
    out: dict[str, torch.Tensor] = {}

    def layer(dst: str, src: str, rows: torch.Tensor | None, cols: torch.Tensor | None, norm: bool = True) -> None:
        weight, bias = w(f"{src}.1.weight" if norm else f"{src}.weight"), w(f"{src}.1.bias" if norm else f"{src}.bias")
        weight = weight if rows is None else weight[rows]
        weight = weight if cols is None else weight[:, cols]
        conv = f"{dst}.1" if norm else dst
        out[f"{conv}.weight"], out[f"{conv}.bias"] = weight.clone(), (bias if rows is None else bias[rows]).clone()
        if norm:
            for part in ("weight", "bias"):
                out[f"{dst}.2.{part}"] = w(f"{src}.2.{part}")[rows].clone()

    layer("encoder.0", "encoder.0", s1, None)
    layer("encoder.1", "encoder.1", s2, s1)
    layer("encoder.2", "encoder.2", s3, s2)
    for j, i in enumerate(kept):
        inner = _top(g(f"residuals.{i}.body.0.2") * _reads(w(f"residuals.{i}.body.1.1.weight")), c3)
        layer(f"residuals.{j}.body.0", f"residuals.{i}.body.0", inner, s3)
        layer(f"residuals.{j}.body.1", f"residuals.{i}.body.1", s3, inner)
    layer("decoder.0.1", "decoder.0.1", d2, s3)
    layer("decoder.1.1", "decoder.1.1", d1, d2)
    layer("decoder.3", "decoder.3", None, d1, norm=False)
    return out, kept


def shrink_into(target: JohnsonNet, source: JohnsonNet) -> dict[str, Any]:
    """Load ``source``'s most important channels and blocks into the narrower ``target`` (see :func:`can_shrink`).

    Returns:
        ``{"kept_blocks": [...], "from_width": ..., "from_blocks": ...}`` for the run's provenance.
    """
    state, kept = shrink_state(source.state_dict(), target.config["base_channels"], target.config["num_residual"])
    target.load_state_dict(state)
    return {"kept_blocks": kept, "from_width": source.config["base_channels"], "from_blocks": len(source.residuals)}
