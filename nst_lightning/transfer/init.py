"""Weight-initialisation transfer: start a network from the weights of a trained checkpoint or shipped model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nst_lightning.errors import NSTError
from nst_lightning.image import file_digest
from nst_lightning.inference.checkpoint import load_model
from nst_lightning.transfer.shrink import can_shrink, shrink_into

# Builder arguments that do not change the weights' layout (and so never make two architectures differ).
_LAYOUT_FREE_KWARGS = ("checkpointing", "pretrained", "weights_file")


def describe_arch(model_name: str, model_kwargs: dict[str, Any] | None = None) -> str:
    """``johnson(base_channels=32, num_residual=5, norm=instance)``: a network's name and layout arguments."""
    kwargs = {k: v for k, v in (model_kwargs or {}).items() if k not in _LAYOUT_FREE_KWARGS}
    return f"{model_name}({', '.join(f'{k}={v}' for k, v in sorted(kwargs.items()))})"


def load_init_weights(net: nn.Module, source: str | Path, arch: str | None = None) -> dict[str, Any]:
    """Copy the network weights of ``source`` into ``net`` (weights only: no optimizer, step or schedule).

    Args:
        net: the network to initialise (any registered transformation network).
        source: a Lightning checkpoint, an exported model file, or the name of a shipped model
            (``starry_night``), as :func:`nst_lightning.inference.checkpoint.resolve_checkpoint` finds it.
        arch: how to name ``net``'s architecture in error messages (default: its class name).

    A narrower and/or shallower johnson than the source's starts from the source's most important channels and
    residual blocks (:mod:`nst_lightning.transfer.shrink`); any other difference of architecture is an error.

    Returns:
        Provenance (primitives only, for hyper-parameters and exports): ``init_from`` as given, the resolved
        ``path``, its ``sha256`` prefix, the source's ``arch``, ``style_name`` and ``global_step``; ``shrunk``
        (kept blocks, source width and depth) when channels were selected.

    Raises:
        NSTError: the source is missing or unreadable, or holds a different architecture (both are named).
    """
    loaded = load_model(source)
    source_arch = describe_arch(loaded.model_name, loaded.model_kwargs)
    target_arch = arch or type(net).__name__
    own, theirs = net.state_dict(), loaded.net.state_dict()
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    reshaped = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
    if (missing or unexpected or reshaped) and can_shrink(loaded.net, net):
        return {**provenance(source, loaded), "shrunk": shrink_into(net, loaded.net)}  # type: ignore[arg-type]
    if missing or unexpected or reshaped:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", reshaped))
            if keys
        )
        raise NSTError(
            f"init_from={source} holds a {source_arch} network, which does not fit the {target_arch} being "
            f"trained ({detail}). Train the source's architecture (model=... with the same widths) or start "
            "from a checkpoint of this one."
        )
    net.load_state_dict(theirs)
    return provenance(source, loaded)


def provenance(source: str | Path, loaded: Any) -> dict[str, Any]:
    """Where a network's starting weights came from: ``source`` as given, the file, its digest, its architecture,
    style and step (recorded in hyper-parameters and exports). ``loaded``: the source's ``LoadedModel``."""
    path = Path(loaded.meta["source"])
    return {
        "init_from": str(source),
        "path": str(path.resolve()),
        "sha256": file_digest(path)[:16],
        "arch": describe_arch(loaded.model_name, loaded.model_kwargs),
        "style_name": loaded.meta.get("style_name"),
        "global_step": loaded.meta.get("global_step"),
    }
