"""What every command shares: a Hydra main around ``run(cfg)``, user errors as one line, help from the YAML.

Each command module (:mod:`~nst_lightning.cli.train`, ``stylize``, ``optimize``, ``evaluate``, ...) defines
``run(cfg) -> result`` (called directly by tests and other code); :mod:`nst_lightning.cli.commands` makes each a
console command with ``hydra_app(NAME, "module:run")``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from nst_lightning.cli.config import config_dir, group_options
from nst_lightning.cli.config_errors import config_error
from nst_lightning.errors import NSTError

log = logging.getLogger("nst_lightning")

Run = Callable[[DictConfig], Any]


def _load(target: Callable[..., Any] | str | None) -> Callable[..., Any] | None:
    """``target`` itself, or the function a ``"module:function"`` path names (imported now)."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def hydra_app(
    name: str, run: Run | str, *, summary: str, metric: Callable[[Any], Any] | str | None = None
) -> Callable[[], Any]:
    """A console entry point for ``conf/<name>.yaml`` that calls ``run(cfg)``.

    Args:
        name: the command and its config file.
        run: the command's logic, or its ``"module:function"`` path (imported only when the command runs, so
            that ``--help`` and configuration errors do not wait for torch).
        summary: one line for ``--help``.
        metric: maps ``run``'s result to the value returned to Hydra (what ``--multirun`` sweepers optimise);
            a function or its ``"module:function"`` path.
    """

    state = {"ran": False}  # whether Hydra got as far as calling task (it creates the run folder before that)

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name=name)
    def task(cfg: DictConfig) -> Any:
        state["ran"] = True
        try:
            command = _load(run)
            _single_log_stream()  # after the command's imports: Lightning installs its handlers on import
            result = command(cfg)
        except KeyboardInterrupt:
            _log_to_files(logging.ERROR, "interrupted")
            print("interrupted", file=sys.stderr)
            _remove_empty_dirs(_run_dir())
            sys.exit(130)
        except Exception as exc:
            error = exc if isinstance(exc, NSTError) else config_error(exc)
            if error is None:
                log.exception("%s failed", name)
                _remove_empty_dirs(_run_dir())
                raise
            _exit_with(error)
        to_metric = _load(metric)
        return to_metric(result) if to_metric else None

    def main() -> Any:
        if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
            return _print_help(name, summary)
        # Hydra prints its own errors over several lines and exits 1; let them reach us instead.
        state["ran"] = False
        previous = os.environ.get(_FULL_ERROR)
        os.environ[_FULL_ERROR] = "1"
        try:
            return task()
        except Exception as exc:
            _exit_if_user_error(exc, before_run=not state["ran"])
            raise
        finally:
            if previous is None:
                os.environ.pop(_FULL_ERROR, None)
            else:
                os.environ[_FULL_ERROR] = previous

    main.__doc__ = summary
    return main


_FULL_ERROR = "HYDRA_FULL_ERROR"


def _print_help(name: str, summary: str) -> None:
    try:
        print(app_help(name, summary), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _exit_if_user_error(exc: Exception, before_run: bool) -> None:
    """Exit with the one-line error when ``exc`` is a configuration error, or an ``OSError`` of Hydra creating
    the run folder (``hydra.run.dir`` under a file, a read-only disk) before the command ran; else return."""
    error = config_error(exc)
    if error is None and before_run and isinstance(exc, OSError):
        error = NSTError(
            f"cannot write to the output folder {exc.filename or ''}: {exc.strerror or exc}. "
            "Point paths.output_dir (or hydra.run.dir) at a writable folder."
        )
    if error is not None:
        _exit_with(error)


def _exit_with(error: BaseException) -> None:
    """Print ``error:`` and the message once (on stderr; the run's log file gets it too), then exit 2."""
    _log_to_files(logging.ERROR, str(error))
    print(f"error: {error}", file=sys.stderr)
    _remove_empty_dirs(_run_dir())
    sys.exit(2)


def _log_to_files(level: int, message: str) -> None:
    """Write ``message`` to the run's log files only: the console shows the ``error:`` line already."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _single_log_stream() -> None:
    """Lightning installs its own console handlers; Hydra already logs to the console (and to the run's log
    file), so route Lightning's records through Hydra's handlers only: each line once, also in the file."""
    if "lightning" not in sys.modules:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def _run_dir() -> Path | None:
    """The run's own output folder, or None when the command writes where it was started (``run.dir: .``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    out = Path(HydraConfig.get().runtime.output_dir).resolve()
    return None if out == Path.cwd().resolve() else out


def _remove_empty_dirs(root: Path | None) -> None:
    """Delete empty folders below ``root`` (and ``root`` itself if empty): a failed run leaves none behind."""
    if root is None or not root.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):  # rmdir only succeeds when the folder is empty
            Path(dirpath).rmdir()


# -- help ------------------------------------------------------------------------------------------------
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.]*)\s*:\s*(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def documented_keys(path: Path, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, value, comment)`` for each key of a YAML file, nested keys dotted; ``defaults``,
    ``hydra`` and ``_target_`` entries are left out. Comments are the ones written on the key's line."""
    rows: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []
    skip_indent: int | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        m = _KEY.match(line)
        if not m:
            continue
        indent, key = len(m["indent"]), m["key"]
        if skip_indent is not None and indent > skip_indent:
            continue
        skip_indent = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if key in ("defaults", "hydra", "_target_"):
            skip_indent = indent if key != "_target_" else None
            continue
        dotted = ".".join([prefix, *[k for _, k in stack], key] if prefix else [*[k for _, k in stack], key])
        value = m["value"]
        if value == "":
            stack.append((indent, key))
            if m["comment"]:
                rows.append((dotted, "", m["comment"]))
            continue
        rows.append((dotted, value, m["comment"] or ""))
    return rows


def _defaults_entries(path: Path) -> list[str]:
    """The entries of a config's defaults list as written (``group: option``, ``_base``, ``_self_``), comments
    left out."""
    entries, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("defaults:"):
            inside = True
            continue
        if inside and not line.startswith((" ", "-")):
            break
        m = re.match(r"^\s*-\s*(?P<entry>[^#]*?)\s*(#.*)?$", line)
        if inside and m:
            entries.append(m["entry"])
    return entries


def _defaults(path: Path) -> list[tuple[str, str]]:
    """``(group, option)`` pairs of a config's defaults list (``_self_`` and Hydra's own groups left out)."""
    pairs = []
    for entry in _defaults_entries(path):
        m = re.match(r"(?P<group>[\w/]+)\s*:\s*(?P<option>[\w.]+)", entry)
        if m and not m["group"].startswith(("override", "hydra")):
            pairs.append((m["group"], m["option"]))
    return pairs


def option_keys(group_dir: Path, option: str) -> list[tuple[str, str, str]]:
    """:func:`documented_keys` of a group option, with those of the bases its defaults list inherits
    (``- _base``): each key once, with the option's value and the first comment written for it."""
    path = group_dir / f"{option}.yaml"
    rows: dict[str, tuple[str, str, str]] = {}
    for base in _bases(path):
        rows.update((k, (k, v, c)) for k, v, c in option_keys(group_dir, base))
    for key, value, comment in documented_keys(path, prefix=group_dir.name):
        rows[key] = (key, value, comment or rows.get(key, ("", "", ""))[2])
    return list(rows.values())


def _bases(path: Path) -> list[str]:
    """The same-group configs a group option's defaults list names (``- _base``), ``_self_`` left out."""
    return [e for e in _defaults_entries(path) if re.fullmatch(r"[\w.]+", e) and e != "_self_"]


_LIBRARY_DEFAULT = re.compile(r"^\$\{nst\.(\w+_default):(\w+)\}$")


def _shown_default(value: str) -> str:
    """A key's value as ``--help`` shows it: a library default (``${nst.stylize_default:X}`` and the other
    ``LIBRARY_DEFAULTS`` resolvers) as its value (importing the library)."""
    m = _LIBRARY_DEFAULT.match(value)
    if m is None:
        return value
    from nst_lightning.cli.config import LIBRARY_DEFAULTS

    if m[1] not in LIBRARY_DEFAULTS:
        return value
    default = LIBRARY_DEFAULTS[m[1]](m[2])
    return default if isinstance(default, str) else json.dumps(default)


def app_help(name: str, summary: str) -> str:
    """The ``--help`` text of a command: its own config groups and its documented keys with their comments."""
    conf = Path(config_dir())
    app_file = conf / f"{name}.yaml"
    lines = [f"{name}: {summary}", "", f"Usage: python {name}.py [group=option ...] [key=value ...]", ""]
    groups = _defaults(app_file)
    rows = documented_keys(app_file)
    if groups:
        lines.append("Config groups (choose one option each; files in conf/<group>/):")
        for group, option in groups:
            options = group_options(group)
            shown = ", ".join(f"{o} (default)" if o == option else o for o in options)
            lines.append(f"  {group:<14} {shown}")
            if option != "null" and (conf / group / f"{option}.yaml").exists():
                rows += option_keys(conf / group, option)
        lines.append("")
    lines.append(f"Keys (conf/{name}.yaml" + (" and each group's default)" if groups else ")") + ":")
    width = min(40, max((len(k) + len(v) + 2 for k, v, _ in rows), default=0))
    for key, value, comment in rows:
        value = _shown_default(value)
        entry = f"{key}: {value}" if value else f"{key}:"
        lines.append(f"  {entry:<{width}}  # {comment}" if comment else f"  {entry}")
    lines += [
        "",
        f"python {name}.py --cfg job prints the composed configuration; --hydra-help lists Hydra's own options.",
    ]
    return "\n".join(lines)
