"""Files that hold one idea and functions short enough to read at once: no file of the package or of scripts/
over 400 lines, no function over 60 (tests and benchmarks are not held to it)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("nst_lightning", "scripts")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# Known to break the rule, to be split; an entry that no longer breaks it fails the test until it is removed.
KNOWN: set[str] = set()


def python_files() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


def too_long(path: Path, base: Path = REPO) -> list[str]:
    """The file itself if it is over the limit, and each function (methods and nested ones too) over its limit,
    counted from its ``def`` line to its last line."""
    text = path.read_text()
    rel = path.relative_to(base)
    found = []
    lines = len(text.splitlines())
    if lines > MAX_FILE_LINES:
        found.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{rel}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def _key(violation: str) -> str:
    """``path name`` of a function's violation (``path`` of a file's), without line numbers or lengths."""
    where, _, _ = violation.partition(": ")
    path, _, rest = where.partition(":")
    return f"{path} {rest.split(' ', 1)[1]}" if rest else path


def test_no_file_over_400_lines_and_no_function_over_60():
    found = [v for path in python_files() for v in too_long(path)]
    new = [v for v in found if _key(v) not in KNOWN]
    gone = KNOWN - {_key(v) for v in found}
    assert not new, "too long:\n" + "\n".join(new)
    assert not gone, f"no longer too long, remove from KNOWN: {sorted(gone)}"


def test_the_rule_sees_a_long_file_and_a_long_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n" + "    x = 1\n" * 60 + "\n" * 400)
    assert too_long(path, tmp_path) == ["probe.py: 461 lines (at most 400)", "probe.py:1 f: 61 lines (at most 60)"]
    path.write_text("def f():\n" + "    x = 1\n" * 59)
    assert too_long(path, tmp_path) == []
