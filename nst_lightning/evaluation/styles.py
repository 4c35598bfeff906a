"""One style of a multi-style network as a model of its own, for evaluation: its network with the style fixed
and its own objective (the shared layers with the style's loss weights) and Gram targets."""

from __future__ import annotations

import dataclasses

from nst_lightning.inference import LoadedModel
from nst_lightning.losses.config import TERM_WEIGHTS
from nst_lightning.models.conditional import StyleBound, resolve_style


def style_view(loaded: LoadedModel, style: str | int) -> LoadedModel:
    """``loaded`` (a multi-style network) reduced to ``style``: ``net(x)`` runs that style and ``meta`` says
    ``style_name``, ``style_image``, ``style_size`` and the ``loss`` with that style's weights.

    Raises:
        NSTError: an unknown style (the message lists the network's).
    """
    names = list(loaded.net.style_names)
    weights = resolve_style(names, style)
    record = loaded.meta["styles"][int(weights.argmax())]
    loss = {**loaded.meta["loss"], **{k: record[k] for k in TERM_WEIGHTS if k in record}}
    meta = {**loaded.meta, "style_name": record["name"], "style_image": record.get("image"),
            "style_size": record.get("size"), "loss": loss}  # fmt: skip
    return dataclasses.replace(loaded, net=StyleBound(loaded.net, weights), meta=meta)
