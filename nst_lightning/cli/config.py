"""Where the Hydra configs live, whether the project is installed editable or as a wheel, and the config
resolvers they use (registered on import: everything that composes ``conf/`` imports :func:`config_dir`)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def config_dir() -> str:
    """Absolute path of the ``conf/`` folder (repository root, or ``nst_lightning/conf`` in a wheel)."""
    repo_conf = Path(__file__).resolve().parents[2] / "conf"
    if (repo_conf / "train.yaml").exists():
        return str(repo_conf)
    return str(files("nst_lightning.conf"))


def group_options(group: str) -> list[str]:
    """The options of a config group: ``conf/<group>/*.yaml`` except the bases they inherit (``_*.yaml``)."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml") if not p.stem.startswith("_"))


def plain(node: Any) -> Any:
    """A config node as plain Python values (lists, dicts), resolved; any other value as it is."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def plain_values(cfg: Any, keys: Iterable[str]) -> dict[str, Any]:
    """``{key: value}`` of ``cfg``'s top-level ``keys`` as plain Python values (:func:`plain`)."""
    return {key: plain(cfg[key]) for key in keys}


def gpu_or_cpu(gpu_value: Any, cpu_value: Any, *, _root_: Any) -> Any:
    """``${nst.gpu_or_cpu:GPU_VALUE,CPU_VALUE}``: a recipe's value for the device ``trainer.accelerator`` trains
    on here (CPU_VALUE on a CPU, and on Apple's MPS, whose memory and speed are nearer a laptop's than a GPU's)."""
    from nst_lightning.training.precision import device_type

    return gpu_value if device_type(_root_.trainer.accelerator) == "cuda" else cpu_value


def _data_dir(default: str = "./data") -> str:
    from nst_lightning.data.sample import data_dir_from_env  # imports torch: only when a config is resolved

    return data_dir_from_env(default)


def _data_or_sample(path: str, sample_relative: str) -> str:
    from nst_lightning.data.sample import data_or_sample

    return data_or_sample(path, sample_relative)


def stylize_default(name: str) -> Any:
    """``${nst.stylize_default:FIELD}``: the library's default of a :class:`StylizeOptions` field, so that
    ``conf/stylize.yaml`` and the service settings read it instead of restating it."""
    from nst_lightning.inference.options import option_default

    return option_default(name)


def _field_default(cls: type, name: str) -> Any:
    from dataclasses import MISSING, fields

    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def serve_default(name: str) -> Any:
    """``${nst.serve_default:FIELD}``: the :class:`~nst_lightning.serve.settings.ServeSettings` default, so that
    ``conf/serve.yaml`` documents each key without restating its value."""
    from nst_lightning.serve.settings import ServeSettings

    return _field_default(ServeSettings, name)


def cache_default(name: str) -> Any:
    """``${nst.cache_default:FIELD}``: the :class:`~nst_lightning.serve.settings.CacheSettings` default."""
    from nst_lightning.serve.settings import CacheSettings

    return _field_default(CacheSettings, name)


def zeroshot_default(name: str) -> Any:
    """``${nst.zeroshot_default:NAME}``: the zero-shot model's default ``method`` or ``refine_steps``."""
    from nst_lightning.inference import zeroshot

    defaults = {"method": zeroshot.DEFAULT_METHOD, "refine_steps": zeroshot.REFINE_STEPS}
    if name not in defaults:
        raise KeyError(f"no zero-shot default {name!r}; known: {', '.join(defaults)}")
    return defaults[name]


def loss_default(name: str) -> Any:
    """``${nst.loss_default:FIELD}``: the :class:`~nst_lightning.losses.config.LossConfig` default (the style
    presets' loss weights)."""
    from nst_lightning.losses.config import LossConfig

    return _field_default(LossConfig, name)


def image_default(name: str) -> Any:
    """``${nst.image_default:max_pixels}``: the image reader's default pixel limit."""
    from nst_lightning.image import DEFAULT_MAX_PIXELS

    if name != "max_pixels":
        raise KeyError(f"no image default {name!r}; known: max_pixels")
    return DEFAULT_MAX_PIXELS


LIBRARY_DEFAULTS = {"stylize_default": stylize_default, "zeroshot_default": zeroshot_default,
                    "serve_default": serve_default, "cache_default": cache_default,
                    "image_default": image_default, "loss_default": loss_default}  # fmt: skip
"""The resolvers ``${nst.NAME:FIELD}`` that read a default from the library (``--help`` shows their values)."""


def register_resolvers() -> None:
    """``${nst.data_dir:DEFAULT}``: ``$NST_DATA_DIR`` or DEFAULT, absolute; ``${nst.data_or_sample:PATH,REL}``:
    PATH, or the embedded sample's REL when PATH holds no data (``experiment=quick``); ``${nst.gpu_or_cpu:G,C}``:
    the recipe's value for the device that trains (:func:`gpu_or_cpu`); ``${nst.stylize_default:FIELD}``: a
    stylize option's default (:func:`stylize_default`); ``${nst.zeroshot_default:NAME}``: the zero-shot model's
    (:func:`zeroshot_default`); ``${nst.serve_default:FIELD}``, ``${nst.cache_default:FIELD}``: the service
    settings' (:func:`serve_default`, :func:`cache_default`); ``${nst.image_default:max_pixels}``;
    ``${nst.loss_default:FIELD}`` (:func:`loss_default`). Each imports
    what it needs when a configuration is resolved, so that composing one (and its errors) stays quick."""

    for name, resolver in (("nst.data_dir", _data_dir), ("nst.data_or_sample", _data_or_sample),
                           ("nst.gpu_or_cpu", gpu_or_cpu), ("nst.stylize_default", stylize_default),
                           ("nst.zeroshot_default", zeroshot_default), ("nst.serve_default", serve_default),
                           ("nst.cache_default", cache_default), ("nst.image_default", image_default),
                           ("nst.loss_default", loss_default)):  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()
