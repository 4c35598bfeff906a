"""Feature-extractor transfer: freeze named stages of a network (no gradients, no optimizer state, and their
normalisation layers in inference mode), fine-tune the rest."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from nst_lightning.errors import NSTError


def stage_names(net: nn.Module) -> list[str]:
    """The stages a network names for freezing (``net.stage_names()`` if it has one, else its children)."""
    named = getattr(net, "stage_names", None)
    return list(named()) if callable(named) else [name for name, _ in net.named_children()]


def parse_freeze_spec(spec: str | Sequence[str] | None) -> list[str]:
    """``None`` / ``""`` / ``none`` → []; ``"encoder"`` or ``"encoder,residuals.0"`` or a list → stage names."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(s).strip() for s in items]
    return [n for n in names if n and n.lower() != "none"]


def freeze(net: nn.Module, spec: str | Sequence[str] | None) -> list[str]:
    """Freeze the stages named by ``spec`` in place and return their names.

    A stage is any submodule path of ``net`` (``encoder``, ``residuals.0``, ``residuals`` for all residual
    blocks, ``decoder``; :func:`stage_names` lists each network's own). Its parameters stop requiring
    gradients (so the optimizer, built from the parameters that require them, holds no state for them) and the
    stage is put in eval mode; call :func:`keep_frozen_norms_in_eval` after every ``train()``.

    Raises:
        NSTError: a name is not a submodule of ``net`` (the message lists the network's stages).
    """
    names = parse_freeze_spec(spec)
    modules = dict(net.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        raise NSTError(
            f"cannot freeze {unknown}: {type(net).__name__} has no such stage; "
            f"its stages are {', '.join(stage_names(net))} (or any submodule path inside them)"
        )
    for name in names:
        modules[name].requires_grad_(False)
    keep_frozen_norms_in_eval(net, names)
    return names


def keep_frozen_norms_in_eval(net: nn.Module, frozen: Sequence[str]) -> None:
    """Put the frozen stages back in eval mode: their batch-norm layers use (and keep) their running
    statistics instead of the batch's, and any dropout is off. Instance norm is unaffected either way."""
    for name in frozen:
        net.get_submodule(name).eval()
