"""The application layer and the one loss description: help, errors, sweeps, LossConfig, the library API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import nst_lightning
from nst_lightning.cli.app import app_help, documented_keys
from nst_lightning.cli.presets import config_loss
from nst_lightning.cli.train import build_module, objective
from nst_lightning.errors import NSTError
from nst_lightning.inference import export_model, load_model
from nst_lightning.losses.config import LossConfig

from .conftest import REPO, compose_train


def test_loss_config_yaml_defaults_are_the_dataclass_defaults() -> None:
    """conf/loss/default.yaml + the default style preset describe the same loss as LossConfig() (no drift)."""
    cfg = compose_train([])
    assert config_loss(cfg) == LossConfig()


def test_loss_weights_have_one_name() -> None:
    cfg = compose_train(["style.style_weight=3", "style.tv_weight=1e-4"])
    assert (config_loss(cfg).style_weight, config_loss(cfg).tv_weight) == (3.0, 1e-4)
    with pytest.raises(NSTError, match="loss weights are set on the style"):
        config_loss(compose_train(["+loss.style_weight=3"]))


def test_loss_config_rejects_missing_and_unknown_keys() -> None:
    values = LossConfig().to_dict()
    del values["tv_weight"]
    with pytest.raises(NSTError, match="lacks tv_weight"):
        LossConfig.from_dict(values, "checkpoint x")
    with pytest.raises(NSTError, match="unknown loss keys colour"):
        LossConfig.from_dict({**LossConfig().to_dict(), "colour": 1})
    with pytest.raises(NSTError, match="style_layer_weights has 1 entries"):
        LossConfig(style_layer_weights=[1.0])


def test_module_checkpoints_the_whole_loss_and_exports_keep_it(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=tiny", "style.style_weight=7"])
    module = build_module(cfg, "unused.png")
    assert module.hparams["loss"] == config_loss(cfg).to_dict()
    assert module.loss_fn.config.style_weight == 7.0
    ckpt = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ckpt)
    exported = export_model(ckpt, tmp_path / "m.pt")
    meta = load_model(exported).meta
    assert LossConfig.from_dict(meta["loss"]) == config_loss(cfg)


def test_a_checkpoint_missing_a_loss_key_is_an_error(tmp_path: Path) -> None:
    from nst_lightning.evaluation.evaluate import loss_from_meta

    meta = {"loss": {k: v for k, v in LossConfig().to_dict().items() if k != "style_weight"}, "source": "old.pt"}
    with pytest.raises(NSTError, match="lacks style_weight"):
        loss_from_meta(meta)


def test_help_lists_only_the_commands_own_groups_and_documented_keys() -> None:
    stylize = app_help("stylize", "stylize images")
    assert "max_size: null" in stylize and "longest side" in stylize  # the key's comment
    groups = stylize.split("Config groups")[1].split("Keys")[0]  # stylize's own group (style), none of train's
    assert "style" in groups and "model" not in groups and "trainer" not in groups
    train = app_help("train", "train")
    assert "experiment" in train and "quick" in train
    assert "model.base_channels: 32" in train
    assert "# gradient checkpointing" in train


def test_documented_keys_nests_and_skips_hydra(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("defaults:\n  - a: b\nouter:\n  inner: 3   # the inner value\nhydra:\n  job:\n    name: x\nz: 1\n")
    assert documented_keys(f, "g") == [("g.outer.inner", "3", "the inner value"), ("g.z", "1", "")]


def test_sweep_metric_is_returned_with_a_fallback_when_it_was_not_logged(caplog) -> None:
    result = {"metrics": {"val/objective": 2.5, "val/style_raw": 0.1, "train/objective": 3.0}}
    assert objective({**result, "sweep_metric": "val/style_raw"}) == 0.1
    assert objective({**result, "sweep_metric": "val/nope"}) == 3.0
    assert "sweep_metric val/nope was not logged" in caplog.text


def test_library_api() -> None:
    for name in nst_lightning.__all__:
        assert getattr(nst_lightning, name) is not None
    net = nst_lightning.create_model("johnson_tiny")
    assert isinstance(nst_lightning.PerceptualLoss(vgg_weights="random").config, nst_lightning.LossConfig)
    assert net(torch.rand(1, 3, 24, 20)).shape == (1, 3, 24, 20)
    with pytest.raises(AttributeError):
        _ = nst_lightning.not_a_name


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_failed_run_logs_its_error_and_leaves_no_empty_folders(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "experiment=tiny", "style=custom", "style.image=/no/such.jpg"],
        cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "error: style image not found: /no/such.jpg" in proc.stderr
    assert "Traceback" not in proc.stderr
    logs = list(tmp_path.glob("outputs/train/custom/*/train.log"))
    assert len(logs) == 1 and "style image not found" in logs[0].read_text()
    empty = [d for d in tmp_path.rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == []


@pytest.mark.slow
def test_help_runs_from_the_entry_scripts(tmp_path: Path) -> None:
    for app in ("train", "stylize", "optimize", "evaluate"):
        proc = subprocess.run([sys.executable, str(REPO / f"{app}.py"), "--help"], capture_output=True, text=True,
                              env=_env(), cwd=tmp_path, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.startswith(f"{app}: "), proc.stderr


def test_help_piped_into_a_reader_that_stops_early_is_quiet(tmp_path: Path) -> None:
    """``evaluate.py --help | head -1``: no BrokenPipeError traceback when the reader closes the pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is already gone: the first write fails
    proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--help"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path, timeout=60)  # fmt: skip
    os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_optuna_sweep_gets_the_metric(tmp_path: Path, image_dir: Path, style_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=optuna", "experiment=tiny", "style=custom",
         f"style.image={style_path}", f"data.root={image_dir}", "hydra.sweeper.n_trials=2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", "trainer.max_steps=2", "trainer.val_check_interval=2"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_value > 0 and "optim.lr" in results.best_params
