"""The ship phase: the figures of every checked model and the passing models, in at most 8 files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from .manifest import package_file
from .profiles import MiB
from .session import Session


def phase_ship(s: Session, models: dict[str, Path], rows: dict[str, dict[str, Any]], recipe: dict[str, Any]) -> None:
    """OUT gets: runs.jsonl, release.json (figures of every checked model), ablation.md, session.log (from the
    shell), logs.tgz (logs, TensorBoard events, hydra configs) and models_N.tgz (passing models, ≤ 15 MiB each)."""
    passed = [n for n, r in rows.items() if r.get("passed")]
    release = {"card": s.card, "recipe": recipe, "models": {}, "finished_s": round(s.elapsed(), 1)}
    for name, row in rows.items():
        file = package_file(name)
        train = _train_rows(s).get(name, {})
        release["models"][name] = {
            "file": file,
            **{k: v for k, v in row.items() if k != "file"},
            "train_seconds": train.get("train_seconds"),
            "images_seen": train.get("images_seen"),
            "steps": train.get("steps"),
            "card": s.card,
        }
    (s.out / "release.json").write_text(json.dumps(release, indent=1, default=str) + "\n")
    with tarfile.open(s.out / "logs.tgz", "w:gz") as tar:
        for path in sorted(s.work.rglob("*")):
            if path.is_file() and (
                path.suffix in (".log", ".yaml", ".md", ".jsonl", ".json", ".png")
                or path.name.startswith("events.out.tfevents")
            ):
                tar.add(path, arcname=str(path.relative_to(s.work)))
    packs: list[list[str]] = [[]]
    sizes = [0]
    for name in passed:
        size = models[name].stat().st_size
        if sizes[-1] + size > 15 * MiB and packs[-1]:
            packs.append([])
            sizes.append(0)
        packs[-1].append(name)
        sizes[-1] += size
    for i, names in enumerate(p for p in packs if p):
        if i >= 4:  # runs.jsonl, release.json, ablation.md, session.log, logs.tgz + 3 model packs = 8 files
            s.record("ship", "models", left_out=names, reason="at most 8 files come back")
            continue
        with tarfile.open(s.out / f"models_{i + 1}.tgz", "w:gz") as tar:
            for name in names:
                tar.add(models[name], arcname=release["models"][name]["file"])
    s.record(
        "ship",
        "release",
        passed=passed,
        failed={n: r["failed_gates"] for n, r in rows.items() if not r.get("passed")},
        files=sorted(p.name for p in s.out.iterdir()),
    )


def _train_rows(s: Session) -> dict[str, dict[str, Any]]:
    path = s.out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["name"]: r for r in rows if r["phase"] == "train"}
