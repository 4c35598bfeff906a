"""The layer table of docs/architecture.md is what the package's imports do: read every import (ast, lazy ones
inside functions included), place each module in its layer by the table's paths, and fail on an import that
climbs a layer, on an import cycle, on a module the table does not place, and on Hydra or Lightning outside
the layers allowed to use them."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nst_lightning"
ARCHITECTURE = REPO / "docs" / "architecture.md"
HYDRA = ("hydra", "omegaconf")
LIGHTNING = ("lightning", "pytorch_lightning")
HYDRA_LAYERS = ("cli",)
LIGHTNING_LAYERS = ("training wing", "cli")

KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_table() -> list[tuple[str, list[str]]]:
    """The rows of the ``## Layers`` table, top first: (layer name, the ``nst_lightning/...`` paths it lists)."""
    text = ARCHITECTURE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("layer", "---"):
            continue
        rows.append((cells[0], re.findall(r"`(nst_lightning/[\w/.]*)`", cells[1])))
    return rows


def layer_of(name: str, rows: list[tuple[str, list[str]]]) -> int | None:
    """The index of the row whose path is the longest prefix of the module's file (None: no row places it)."""
    rel = str(modules()[name].relative_to(REPO))
    best: tuple[int, int] | None = None
    for index, (_, paths) in enumerate(rows):
        for path in paths:
            placed = rel == path or (path.endswith("/") and rel.startswith(path))
            if placed and (best is None or len(path) > best[1]):
                best = (index, len(path))
    return None if best is None else best[0]


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of the file: package modules resolved, others by top name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def graph() -> dict[str, dict[str, int]]:
    """{module: {imported package module: line}}."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges[name] = {}
        for target, line in imports_of(name, path, known):
            while target not in known and "." in target and target.startswith("nst_lightning."):
                target = target.rpartition(".")[0]
            if target in known and target != name:
                edges[name].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_table_places_every_module():
    rows = layer_table()
    assert [r[0] for r in rows][:2] == ["ground floor", "losses"] and rows[-1][0] == "cli"
    unplaced = [name for name in modules() if layer_of(name, rows) is None]
    assert not unplaced, f"modules docs/architecture.md's layer table does not place: {', '.join(unplaced)}"


def climbs(edges: dict[str, dict[str, int]], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Each import whose target sits in a lower layer (further down the table) than its importer."""
    found = []
    for source, targets in edges.items():
        here = layer_of(source, rows)
        for target, line in targets.items():
            there = layer_of(target, rows)
            if here is not None and there is not None and there > here:
                found.append(f"{source}:{line} imports {target} ({rows[here][0]} -> {rows[there][0]})")
    return found


def test_no_import_climbs_a_layer():
    found = climbs(graph(), layer_table())
    assert not found, "imports that climb a layer of docs/architecture.md:\n" + "\n".join(found)


def test_no_import_cycles():
    found = set(cycles(graph()))
    new = [" <-> ".join(sorted(c)) for c in found - KNOWN_CYCLES]
    gone = [" <-> ".join(sorted(c)) for c in KNOWN_CYCLES - found]
    assert not new, "import cycles:\n" + "\n".join(new)
    assert not gone, "no longer a cycle, remove it from KNOWN_CYCLES: " + "; ".join(gone)


def test_hydra_only_in_the_cli_and_lightning_only_in_the_training_wing():
    rows = layer_table()
    known = modules()
    wrong = []
    for name, path in known.items():
        layer = rows[layer_of(name, rows) or 0][0]
        for target, line in imports_of(name, path, known):
            top = target.split(".")[0]
            if (top in HYDRA and layer not in HYDRA_LAYERS) or (top in LIGHTNING and layer not in LIGHTNING_LAYERS):
                wrong.append(f"{name}:{line} imports {target} (layer {layer})")
    assert not wrong, "Hydra or Lightning outside their layers:\n" + "\n".join(wrong)


def test_the_checker_sees_a_climb_and_a_cycle():
    """The checks above would fail on a climb and on a cycle (the same functions, on made-up edges)."""
    assert cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {}}) == [frozenset({"a", "b", "c"})]
    edges = {"nst_lightning.losses.vgg": {"nst_lightning.training.module": 7}, "nst_lightning.training.module": {}}
    assert climbs(edges, layer_table()) == [
        "nst_lightning.losses.vgg:7 imports nst_lightning.training.module (losses -> training wing)"
    ]
    assert "nst_lightning.transfer" in graph()["nst_lightning.training.module"]  # the import the old table denied
