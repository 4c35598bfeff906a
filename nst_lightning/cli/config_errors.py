"""Hydra's and OmegaConf's configuration errors, said in one line with the valid choices.

Hydra reports an unknown option (``style=nope``), an unknown key (``data.rot=3``) or a bad value over several
lines (search path, hints, a note about ``HYDRA_FULL_ERROR``) and exits with status 1; the commands turn them
into :class:`~nst_lightning.errors.NSTError` messages instead (one ``error:`` line, exit 2).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from nst_lightning.errors import NSTError

_MISSING_OPTION = re.compile(r"Could not find '(?P<group>[\w/]+)/(?P<option>[^'/]+)'")
_BAD_OVERRIDE = re.compile(r"Could not override '(?P<key>[^']+)'")


def _choices(names: Iterable[str], wanted: str) -> str:
    """``a, b, c`` with the closest name to ``wanted`` suggested first, when there is one."""
    names = [str(n) for n in names if not str(n).startswith("_") and str(n) != "hydra"]
    close = difflib.get_close_matches(wanted, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{', '.join(names)}{hint}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def config_error(exc: BaseException) -> NSTError | None:
    """The one-line user error for a Hydra/OmegaConf configuration error, or None when ``exc`` is not one.

    Args:
        exc: what composing, resolving or instantiating the configuration raised.
    """
    from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        if isinstance(cause, NSTError):
            return cause
        key = re.search(r"full_key: (?P<key>[\w.]+)", str(exc))
        where = f"{key['key']}: " if key else ""
        detail = _first_line(cause) if cause is not None else _first_line(exc)
        return NSTError(f"bad value in {where}{detail}".replace(": :", ":"))
    if isinstance(exc, OverrideParseException):
        return NSTError(f"cannot read the command-line override ({_first_line(exc)}); write key=value or group=option")
    if isinstance(exc, ConfigCompositionException):
        options = getattr(exc, "options", None)
        missing = _MISSING_OPTION.search(str(exc))
        if missing and options is not None:
            group, option = missing["group"], missing["option"]
            hint = (f" (a network's own style that is not a preset, e.g. one learned with adapt=: "
                    f"style_mix='{{{option}: 1}}')") if group == "style" else ""  # fmt: skip
            return NSTError(f"no {group} option named {option!r}; choose one of: {_choices(options, option)}{hint}")
        bad = _BAD_OVERRIDE.search(str(exc))
        cause = exc.__cause__
        parent = getattr(cause, "parent_node", None)
        if bad and parent is not None and hasattr(parent, "keys"):
            key = bad["key"]
            leaf = key.rsplit(".", 1)[-1]
            section = f"keys of {key.rsplit('.', 1)[0]}" if "." in key else "top-level keys"
            return NSTError(f"unknown key {key} ({section}: {_choices(parent.keys(), leaf)}; +{key}=... adds one)")
        return NSTError(_first_line(exc))
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        return NSTError(f"bad configuration value{f' at {key}' if key else ''}: {_first_line(exc)}")
    return None
