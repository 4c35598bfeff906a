"""Name → builder registry for image transformation networks (one front door: ``create_model``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nst_lightning.errors import BadValue

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a network builder under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered networks, sorted."""
    return sorted(_REGISTRY)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``.

    Raises:
        BadValue: no network has that name (the message lists them).
    """
    if name not in _REGISTRY:
        raise BadValue(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network by name with primitive keyword arguments."""
    return model_builder(name)(**kwargs)
