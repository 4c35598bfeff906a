"""Where the Hydra configs live, whether the project is installed editable or as a wheel."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> str:
    """Absolute path of the ``conf/`` folder (repository root, or ``nst_lightning/conf`` in a wheel)."""
    repo_conf = Path(__file__).resolve().parent.parent / "conf"
    if (repo_conf / "train.yaml").exists():
        return str(repo_conf)
    from importlib.resources import files

    return str(files("nst_lightning.conf"))
