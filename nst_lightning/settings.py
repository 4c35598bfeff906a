"""One converter from a plain mapping (a resolved Hydra config, a checkpoint's hyper-parameters, a form) to a
settings dataclass: unknown and missing keys are reported by name, and every value is checked against its
field's type before the dataclass sees it.

Each settings class (``StylizeOptions``, ``LossConfig``, the training groups, ``ServeSettings``, the optimizer's
and the evaluation's settings) keeps its defaults and its range checks; this module only knows types:
``bool``, ``int``, ``float`` (an int is accepted and converted), ``str``, ``None``, ``Literal[...]`` choices,
tuples and lists of those, mappings, unions of those and nested settings dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from nst_lightning.errors import BadValue

T = TypeVar("T")
_NUMBER_TYPES = (int, float)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _name_of(annotation: Any) -> str:
    """How a type reads in an error message (``int | None`` → ``a whole number or null``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_name_of(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list) or annotation in (tuple, list):
        return "a list"
    if origin is not None and issubclass(origin, Mapping):
        return "a mapping"
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


class _Mismatch(Exception):
    """A value does not have its field's type (internal: turned into a BadValue naming the key)."""


def _convert(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` says (ints to floats, lists to tuples), or :class:`_Mismatch`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _convert(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is float:
        if isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = args[0] if args else Any
        converted = [_convert(v, item) for v in value]
        return tuple(converted) if origin is tuple else converted
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return value  # nested settings: converted by from_mapping on their own
    return value  # a type this converter does not know: the dataclass checks it


def check_value(cls: type, name: str, value: Any, source: str) -> Any:
    """``value`` for field ``name`` of ``cls``, converted to the field's type.

    Raises:
        BadValue: the value does not have the field's type (the message names ``source.name``).
    """
    annotation = _hints(cls)[name]
    try:
        return _convert(value, annotation)
    except _Mismatch:
        raise BadValue(f"{source}: {name} must be {_name_of(annotation)}, got {value!r}") from None


def from_mapping(
    cls: type[T],
    values: Mapping[str, Any] | None,
    source: str,
    *,
    require_all: bool = False,
    ignore: tuple[str, ...] = (),
) -> T:
    """Build the settings dataclass ``cls`` from ``values``.

    Args:
        cls: a dataclass whose fields carry type annotations.
        values: some (or, with ``require_all``, all) of its fields; nested dataclass fields take a mapping.
        source: where the values come from, for messages (``"optimize"``, ``"serve setting"``, ``"checkpoint"``).
        require_all: every field must be given (a checkpoint that fully defines what it was trained with).
        ignore: keys that belong to the caller and are skipped.

    Raises:
        BadValue: unknown keys (named, with the known ones), missing keys, or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in (values or {}).items() if k not in ignore}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BadValue(f"unknown {source} key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # fmt: skip
    missing = [n for n in (fields if require_all else required) if n not in values]
    if missing:
        raise BadValue(f"{source} lacks {', '.join(missing)}")
    converted = {}
    for name, value in values.items():
        hint = _hints(cls)[name]
        nested = next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)
        if nested is not None and isinstance(value, Mapping):
            converted[name] = from_mapping(nested, value, f"{source} {name}")  # type: ignore[arg-type]
        else:
            converted[name] = check_value(cls, name, value, source)
    return cls(**converted)
