"""Every value a user can set, set badly, ends in the one-line error that names it, never in a traceback.

For each command's composed configuration, each key whose value has a type (a number, a switch) or a fixed set of
choices is given a value of the wrong kind and the command is run in-process on tiny inputs: it must raise an
:class:`~nst_lightning.errors.NSTError` (which the entry points print as ``error: ...``, exit status 2) whose
message names the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nst_lightning.cli.config import config_dir
from nst_lightning.errors import NSTError

from .conftest import synthetic_photo

BAD = "bogus"
CHOICES = {
    "stylize": ["zeroshot_method", "device", "consistency"],
    "optimize": ["device", "init", "optimizer", "line_search", "precision"],
    "evaluate": ["device", "lbfgs_precision", "zeroshot"],
    "export": ["format"],
    "serve": ["device", "runtime", "log_level"],
}
"""Keys with a fixed set of string values (the typed keys are found by their value's type)."""
SKIP: dict[str, set[str]] = {}
"""Keys whose handling is not the command's (none today beyond those listed)."""


def _compose(app: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(app, overrides=overrides)


def _leaves(values: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def settable_keys(app: str, overrides: list[str]) -> list[str]:
    """The keys of ``app``'s config (with ``overrides``) whose value is a number, a switch or one of fixed choices."""
    cfg = _compose(app, overrides)
    values = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(values, dict)
    typed = []
    for key, _ in _leaves(values):
        try:
            value = OmegaConf.select(cfg, key)
        except Exception:  # an interpolation of Hydra's run (output folders): no value a user sets here
            continue
        if isinstance(value, (bool, int, float)) and key not in SKIP.get(app, set()):
            typed.append(key)
    return sorted(set(typed) | set(CHOICES.get(app, [])))


def _inputs(folder: Path) -> dict[str, list[str]]:
    """Per command, the overrides of a quick valid run on tiny inputs in ``folder``."""
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    synthetic_photo(40, 32, seed=1).save(photos / "photo.png")
    photo = photos / "photo.png"
    return {
        "stylize": ["ckpt=starry_night", f"input={photo}", f"output={folder / 'out.png'}", "device=cpu"],
        "optimize": [f"content={photo}", f"output={folder / 'opt.png'}", "size=32", "iterations=1", "device=cpu",
                     "progress=false", f"paths.output_dir={folder}"],
        "evaluate": ["ckpt=starry_night", f"eval_dir={photos}", "size=32", "lbfgs_iterations=[1]", "device=cpu",
                     "tensorboard=false", f"output_dir={folder / 'eval'}"],
        "export": ["ckpt=starry_night", "format=nst", f"output={folder / 'net.pt'}"],
    }  # fmt: skip


def _run(app: str, cfg: Any) -> Any:
    if app == "serve":
        from nst_lightning.cli.serve import settings_from_config

        return settings_from_config(cfg)
    import importlib

    return importlib.import_module(f"nst_lightning.cli.{app}").run(cfg)


def _cases() -> list[tuple[str, str]]:
    base = _inputs(Path("/tmp/nst-bad-values-keys"))  # only to list the keys: the paths need not exist later
    return [(app, key) for app in (*base, "serve") for key in settable_keys(app, base.get(app, []))]


@pytest.mark.parametrize(("app", "key"), _cases())
def test_a_bad_value_of_any_key_is_a_one_line_error_naming_it(tmp_path: Path, app: str, key: str) -> None:
    overrides = _inputs(tmp_path).get(app, [])
    cfg = _compose(app, [*overrides, f"{key}={BAD}"])
    with pytest.raises(NSTError) as info:
        _run(app, cfg)
    assert key.rsplit(".", 1)[-1] in str(info.value), str(info.value)
    assert "\n" not in str(info.value).strip()


TRAIN = ["experiment=tiny"]


class _ReachedFit(Exception):
    pass


def _train_cases() -> list[str]:
    return settable_keys("train", [*TRAIN, "paths.output_dir=/tmp/nst-bad-values-keys"])


@pytest.mark.parametrize("key", _train_cases())
def test_a_bad_value_of_any_train_key_fails_before_training_naming_it(tmp_path: Path, key: str) -> None:
    """The training command checks every value before it builds data, network or trainer."""
    import lightning as L

    from nst_lightning.cli.train import run

    class Stop(L.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            raise _ReachedFit

    from nst_lightning.cli.config_errors import config_error

    cfg = _compose("train", [*TRAIN, f"paths.output_dir={tmp_path}", f"{key}={BAD}"])
    with pytest.raises(Exception) as info:
        run(cfg, extra_callbacks=[Stop()])
    # What the command prints: an NSTError as it is, or Lightning's own check of a trainer value in one line.
    error = info.value if isinstance(info.value, NSTError) else config_error(info.value)
    assert error is not None, repr(info.value)
    assert key.rsplit(".", 1)[-1] in str(error), str(error)
