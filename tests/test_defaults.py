"""One home for every default: every option of every config group composes, and each Python default table
(for the library called without Hydra) agrees with the YAML the applications read."""

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from nst_lightning.baseline.optimize import OptimizeSettings
from nst_lightning.cli.config import config_dir
from nst_lightning.cli.presets import group_options, load_option
from nst_lightning.data.datamodule import CocoDataModule, FolderDataModule
from nst_lightning.evaluation.evaluate import EvalSettings
from nst_lightning.inference import StylizeOptions, stylize_paths
from nst_lightning.losses.config import LossConfig
from nst_lightning.models.johnson import JohnsonNet
from nst_lightning.serve.settings import CacheSettings, ServeSettings
from nst_lightning.training.callbacks import NetworkEMA, StylizedGridCallback
from nst_lightning.training.hparams import (
    ModelGroup,
    OptimGroup,
    RuntimeGroup,
    SmoothGroup,
    StyleGroup,
    TransferGroup,
)

CONF = Path(config_dir())
APP_OF_GROUP = {"cache": "serve"}  # every other group belongs to train.yaml
NEEDS = {("style", "custom"): ["style.image=painting.jpg"]}  # a required value (???) the option leaves open


def _compose(app: str, overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(app, overrides=overrides or [])


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _every_option() -> list[tuple[str, str]]:
    groups = sorted(d.name for d in CONF.iterdir() if d.is_dir() and any(d.glob("*.yaml")))
    return [(group, option) for group in groups for option in group_options(group)]


def test_every_group_has_options():
    groups = {g for g, _ in _every_option()}
    assert {"style", "model", "loss", "optim", "data", "trainer", "callbacks", "logger", "cache"} <= groups


@pytest.mark.parametrize(("group", "option"), _every_option())
def test_every_option_of_every_group_composes_and_resolves(group, option):
    app = APP_OF_GROUP.get(group, "train")
    extra = ["paths.output_dir=out"] if app == "train" else []
    cfg = _compose(app, [f"{group}={option}", *extra, *NEEDS.get((group, option), [])])
    values = _plain(cfg)
    assert values  # every interpolation resolves (a key a base forgot, a typo in ${...}) and nothing is ???
    assert not OmegaConf.missing_keys(cfg)


def _fields(table) -> dict:
    return {f.name: getattr(table, f.name) for f in dataclasses.fields(table)}


def _signature_defaults(target) -> dict:
    """The keyword defaults of a class's constructor or of a function."""
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _same(python: dict, yaml: dict) -> dict:
    """The keys where the two disagree (tuples and lists compare as lists)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return {k: (python[k], yaml.get(k, "<missing>")) for k in python if norm(python[k]) != norm(yaml.get(k))}


def test_loss_config_defaults_are_the_loss_yaml_and_the_style_base():
    base = load_option("style", "_base")
    weights = {k: base[k] for k in ("content_weight", "style_weight", "tv_weight")}
    yaml = {**_plain(load_option("loss", "default")), **weights}
    assert LossConfig().to_dict() == yaml


def test_module_groups_agree_with_the_training_yaml():
    cfg = _compose("train", ["paths.output_dir=out"])
    runtime = _plain(load_option("model", "_runtime"))
    assert ModelGroup().name == cfg.model.name
    assert StyleGroup().size == load_option("style", "_base").size
    assert not _same(_fields(OptimGroup()), _plain(cfg.optim))
    assert not _same(_fields(RuntimeGroup()), runtime)
    transfer = {"init_from": cfg.init_from, "teacher": cfg.teacher, "freeze": runtime["freeze"], **_plain(cfg.distill)}
    assert not _same({k: v for k, v in _fields(TransferGroup()).items() if k != "init_provenance"}, transfer)
    assert _fields(SmoothGroup()) == _plain(cfg.smooth)


def test_network_builder_defaults_are_the_model_yaml():
    """ModelGroup's empty kwargs mean the builder's defaults: those of conf/model/johnson.yaml."""
    yaml = _plain(load_option("model", "johnson"))
    builder = _signature_defaults(JohnsonNet)
    builder.pop("num_styles")  # not a setting: the multi-style module derives it from the styles list
    assert not _same(builder, yaml)


def test_multistyle_module_balances_as_the_train_yaml():
    from nst_lightning.training.multistyle import MultiStyleModule

    cfg = _compose("train", ["paths.output_dir=out"])
    assert _signature_defaults(MultiStyleModule)["balance"] == cfg.style_balance


def test_datamodule_defaults_are_the_data_yaml():
    cfg = _compose("train", ["paths.output_dir=out"])
    assert not _same(_signature_defaults(FolderDataModule), _plain(cfg.data))
    coco = _plain(_compose("train", ["paths.output_dir=out", "data=coco"]).data)
    assert not _same(_signature_defaults(CocoDataModule), coco)


def test_grid_callback_defaults_are_the_callbacks_yaml():
    grid = _plain(_compose("train", ["paths.output_dir=out"]).callbacks.grid)
    assert not _same({k: v for k, v in _signature_defaults(StylizedGridCallback).items() if k in grid}, grid)


def test_evaluation_and_baseline_settings_are_their_yaml():
    assert not _same(_fields(EvalSettings()), _plain(_compose("evaluate", ["paths.output_dir=out"])))
    assert not _same(_fields(OptimizeSettings()), _plain(_compose("optimize", ["paths.output_dir=out"])))


def test_ema_callback_defaults_are_the_ema_yaml():
    """The decay has no Python default: the YAML's null means no callback, any callback is given its decay."""
    ema = _plain(_compose("train", ["paths.output_dir=out"]).ema)
    assert ema["decay"] is None and "decay" not in _signature_defaults(NetworkEMA)
    assert not _same(_signature_defaults(NetworkEMA), ema)


def test_service_settings_are_the_serve_yaml_and_its_cache_options():
    serve = _plain(_compose("serve"))
    cache = serve.pop("cache")
    assert not _same({k: v for k, v in _fields(ServeSettings()).items() if k != "cache"}, serve)
    assert not _same({k: v for k, v in _fields(CacheSettings()).items() if k in cache}, cache)  # memory, the default
    redis = _plain(_compose("serve", ["cache=redis"]).cache)
    assert CacheSettings().ttl_s == redis["ttl_s"]


def test_stylize_defaults_are_the_stylize_yaml():
    """The library's stylize_paths and stylize.py agree (device: None and auto both choose for you)."""
    yaml = _plain(_compose("stylize"))
    python = {k: v for k, v in _signature_defaults(stylize_paths).items() if k not in ("device", "progress")}
    python.update({k: v for k, v in _fields(StylizeOptions()).items() if k in yaml})
    assert not _same(python, yaml)
