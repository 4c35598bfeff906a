"""The release manifest (``nst_lightning/pretrained/release.json``): what ships, where, with its figures."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from .profiles import MANIFEST, PRETRAINED


def load_manifest(path: Path | None = None) -> dict[str, Any]:
    """The manifest at ``path`` (default :data:`MANIFEST`); an empty one when there is none yet."""
    path = path or MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def shipped_and_passing(manifest: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is in the package and its recorded figures pass the gates."""
    row = manifest.get("models", {}).get(name)
    return bool(row and row.get("passed") and (PRETRAINED / row["file"]).exists())


def package_file(name: str) -> str:
    """Where the package looks for a released model, relative to ``nst_lightning/pretrained/``: a student is its
    teacher's fast variant (``fast/<style>.pt``), the decoder is the zero-shot one."""
    if name == "decoder":
        return "zeroshot/relu4_1.pt"
    if name.endswith("_student"):
        return f"fast/{name.removesuffix('_student')}.pt"
    return f"{name}.pt"


def install(out: Path) -> None:
    """Unpack a release's passing models into the package and merge its figures into the manifest."""
    release = json.loads((out / "release.json").read_text())
    for pack in sorted(out.glob("models_*.tgz")):
        with tarfile.open(pack) as tar:
            tar.extractall(PRETRAINED, filter="data")
    manifest = load_manifest()
    if release.get("recipe", {}).get("measured"):
        manifest["recipe"] = release["recipe"]
    for name, row in release["models"].items():
        if row.get("passed"):
            manifest["models"][name] = row
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"installed {sorted(n for n, r in release['models'].items() if r.get('passed'))} into {PRETRAINED}")
