"""Where the Hydra configs live, whether the project is installed editable or as a wheel, and the config
resolvers they use (registered on import: everything that composes ``conf/`` imports :func:`config_dir`)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf

from nst_lightning.data.sample import data_dir_from_env, data_or_sample


def config_dir() -> str:
    """Absolute path of the ``conf/`` folder (repository root, or ``nst_lightning/conf`` in a wheel)."""
    repo_conf = Path(__file__).resolve().parent.parent / "conf"
    if (repo_conf / "train.yaml").exists():
        return str(repo_conf)
    return str(files("nst_lightning.conf"))


def register_resolvers() -> None:
    """``${nst.data_dir:DEFAULT}``: ``$NST_DATA_DIR`` or DEFAULT, absolute; ``${nst.data_or_sample:PATH,REL}``:
    PATH, or the embedded sample's REL when PATH holds no data (``experiment=quick``)."""
    if not OmegaConf.has_resolver("nst.data_dir"):
        OmegaConf.register_new_resolver("nst.data_dir", data_dir_from_env)
    if not OmegaConf.has_resolver("nst.data_or_sample"):
        OmegaConf.register_new_resolver("nst.data_or_sample", data_or_sample)


register_resolvers()
