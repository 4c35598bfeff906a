"""Add a style to a trained network by training only its new instance-norm scales and shifts.

A multi-style network (conditional instance norm, :mod:`nst_lightning.models.conditional`) keeps each style in
its instance-norm layers' scale and shift. A new style is one more scale/shift row per layer: the network is
started from a trained one (its styles come first, unchanged), the new rows from the mean of the existing
styles, and every other parameter is frozen (no gradient, no optimizer state), so the old styles' outputs stay
the same bit for bit. A single-style network can be the start too: its instance-norm layers become style 0.
A whole multi-style network can also start from a trained one (:func:`load_for_styles`), every style trained.

Torch only (no Lightning, no Hydra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.inference.checkpoint import load_model
from nst_lightning.losses.config import TERM_WEIGHTS
from nst_lightning.models.conditional import (
    add_styles,
    conditional_layers,
    make_conditional,
    num_styles,
    style_parameters,
)
from nst_lightning.transfer.init import describe_arch, load_init_weights, provenance


def source_styles(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The styles a checkpoint holds, as ``{name, image, size, content_weight, style_weight, tv_weight}`` each:
    a multi-style checkpoint's own list, or the one style of a single-style checkpoint."""
    if meta.get("styles"):
        return [dict(s) for s in meta["styles"]]
    loss = meta.get("loss") or {}
    return [{
        "name": meta.get("style_name") or "style0",
        "image": meta.get("style_image"),
        "size": meta.get("style_size"),
        **{k: loss[k] for k in TERM_WEIGHTS if k in loss},
    }]  # fmt: skip


def load_with_new_styles(net: nn.Module, source: str | Path, new: int = 1, arch: str | None = None) -> dict[str, Any]:
    """Copy the network of ``source`` into ``net``, whose last ``new`` styles are the added ones.

    ``net`` must be the source's architecture with ``num_styles`` = the source's styles + ``new``. The added
    styles start from the mean of the source's scales and shifts.

    Returns:
        Provenance (primitives only, as :func:`~nst_lightning.transfer.init.load_init_weights` gives):
        ``init_from`` as given, ``path``, ``sha256`` prefix, ``arch``, the source's ``styles`` (names),
        ``style_name`` and ``global_step``.

    Raises:
        NSTError: the source is missing, or its architecture or style count does not fit ``net``.
    """
    loaded, src, names = _conditional_source(source)
    have = len(names)
    if num_styles(net) != have + new:
        raise NSTError(
            f"{source} holds {have} style(s), so the network with {new} more needs num_styles={have + new}, "
            f"not {num_styles(net)}"
        )
    add_styles(src, new)
    _copy_network(net, src, loaded, source, arch)
    return {**provenance(source, loaded), "styles": names}


def load_for_styles(net: nn.Module, source: str | Path, styles: list[str], arch: str | None = None) -> dict[str, Any]:
    """Start a multi-style network of ``styles`` (every one of them to be trained) from a trained network.

    Everything but the per-style scales and shifts is copied from ``source``; a style the source holds (same
    name) starts from its own scales and shifts, every other style from the mean of the source's. So the shipped
    single-style network can start a five-style one: its body is shared, its style is style 0 if named first.

    Returns:
        Provenance as :func:`load_with_new_styles`, plus ``matched``: the names found in the source.

    Raises:
        NSTError: the source is missing, ``net`` does not hold ``len(styles)`` styles, or the architectures
            differ.
    """
    loaded, src, names = _conditional_source(source)
    if num_styles(net) != len(styles):
        raise NSTError(f"the network holds {num_styles(net)} style(s), not the {len(styles)} named: {styles}")
    add_styles(src, 1)  # row len(names): the mean of the source's styles
    rows = [names.index(s) if s in names else len(names) for s in styles]
    for layer in conditional_layers(src):
        for attr in ("scale", "shift"):
            params = getattr(layer, attr)
            setattr(layer, attr, nn.ParameterList(nn.Parameter(params[r].detach().clone()) for r in rows))
    _copy_network(net, src, loaded, source, arch)
    return {**provenance(source, loaded), "styles": names, "matched": [s for s in styles if s in names]}


def load_start(net: nn.Module, source: str | Path, style: str, arch: str | None = None) -> dict[str, Any]:
    """``init_from`` of a single-style run: copy ``source`` into ``net``, whatever the source holds.

    A multi-style source gives its body and, for the style's instance norms, the scales and shifts of ``style``
    when it holds a style of that name, else the mean of its styles (:func:`load_for_styles`); a single-style
    source goes through :func:`~nst_lightning.transfer.init.load_init_weights` (narrower johnsons included).

    Returns:
        Provenance as :func:`load_init_weights`, whose ``style_name`` says which row (or the mean) was taken.
    """
    if num_styles(net) == 1:
        names = [str(s["name"]) for s in source_styles(load_model(source).meta)]
        if len(names) > 1:
            found = load_for_styles(net, source, [style], arch)
            found["style_name"] = style if found["matched"] else f"the mean of {', '.join(names)}"
            return found
    return load_init_weights(net, source, arch)


def _conditional_source(source: str | Path) -> tuple[Any, nn.Module, list[str]]:
    """The loaded source, its network with conditional norms (a single-style one's become style 0), and its
    style names."""
    loaded = load_model(source)
    if num_styles(loaded.net) == 1:
        make_conditional(loaded.net, 1)
    return loaded, loaded.net, [str(s["name"]) for s in source_styles(loaded.meta)]


def _copy_network(net: nn.Module, src: nn.Module, loaded: Any, source: str | Path, arch: str | None) -> None:
    own, theirs = net.state_dict(), src.state_dict()
    if not conditional_layers(net) and num_styles(src) == 1:  # one style is an ordinary instance-norm network
        plain = {".scale.0": ".weight", ".shift.0": ".bias"}
        theirs = {next((k[: -len(a)] + b for a, b in plain.items() if k.endswith(a)), k): v for k, v in theirs.items()}
    bad = [k for k in own if k not in theirs or own[k].shape != theirs[k].shape] + [k for k in theirs if k not in own]
    if bad:
        raise NSTError(
            f"{source} holds a {describe_arch(loaded.model_name, loaded.model_kwargs)} network, which does not fit "
            f"the {arch or type(net).__name__} being trained (keys {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''})"
        )
    net.load_state_dict(theirs)


def train_only_styles(net: nn.Module, indices: list[int]) -> list[nn.Parameter]:
    """Freeze every parameter of ``net`` except the scales and shifts of the styles ``indices``; returns those."""
    net.requires_grad_(False)
    params = [p for i in indices for p in style_parameters(net, i)]
    for p in params:
        p.requires_grad_(True)
    return params
