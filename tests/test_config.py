import hashlib
import shutil
from pathlib import Path

import hydra
import lightning as L
import pytest
from omegaconf import OmegaConf

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.presets import group_options, style_image_path
from nst_lightning.cli.train import apply_auto_precision, build_module
from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.models import create_model
from nst_lightning.training.precision import resolve_precision

from .conftest import SHARED_DATA, compose_train

CONF = Path(config_dir())
REQUIRED_STYLES = [
    "starry_night", "the_scream", "the_wave", "candy", "mosaic", "udnie",
    "composition_vii", "la_muse", "feathers", "rain_princess",
]  # fmt: skip


def options(group: str) -> list[str]:
    return group_options(group)


def test_defaults_compose_and_do_not_change_directory():
    cfg = compose_train(["paths.output_dir=x"])
    assert cfg.style.name == "starry_night" and cfg.model.name == "johnson"
    assert cfg.data.root.endswith("/train")
    assert cfg.loss.content_layers == ["relu4_2"]
    assert cfg.loss.style_layers == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    raw = OmegaConf.load(CONF / "train.yaml")
    assert raw.hydra.job.chdir is False


def test_data_dir_defaults_to_env_then_local(monkeypatch):
    monkeypatch.setenv("NST_DATA_DIR", "/somewhere")
    assert compose_train(["paths.output_dir=x"]).paths.data_dir == "/somewhere"
    monkeypatch.delenv("NST_DATA_DIR")
    assert compose_train(["paths.output_dir=x"]).paths.data_dir == str(Path.cwd() / "data")


@pytest.mark.parametrize("style", options("style"))
def test_every_style_preset_composes(style, style_path, tmp_path):
    """Each preset names a file under the data folder's styles/ (found there without any download)."""
    image = ["style.image=" + str(style_path)] if style == "custom" else []
    cfg = compose_train([f"style={style}", "paths.output_dir=x", f"paths.data_dir={tmp_path}", *image])
    expected = style_path if style == "custom" else tmp_path / "styles" / cfg.style.file
    expected.parent.mkdir(exist_ok=True)
    expected.exists() or shutil.copy(style_path, expected)
    assert style_image_path(cfg.style) == expected
    for key in ("content_weight", "style_weight", "tv_weight", "size"):
        assert cfg.style[key] is not None
    if style != "custom":
        assert cfg.style.url.startswith("https://") and len(cfg.style.sha256) == 64
        assert cfg.style.image.endswith(f"/styles/{cfg.style.file}")


def test_required_style_presets_exist():
    assert set(REQUIRED_STYLES) <= set(options("style"))


@pytest.mark.skipif(not (SHARED_DATA / "styles").is_dir(), reason="needs NST_DATA_DIR with styles/")
@pytest.mark.parametrize("style", REQUIRED_STYLES)
def test_style_preset_checksums_match_the_images(style):
    cfg = OmegaConf.load(CONF / "style" / f"{style}.yaml")
    data = (SHARED_DATA / "styles" / cfg.file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == cfg.sha256


@pytest.mark.parametrize("model", options("model"))
def test_every_model_option_instantiates(model, style_path):
    cfg = compose_train([f"model={model}", "loss=tiny", "style=custom", f"style.image={style_path}",
                         "paths.output_dir=x"])  # fmt: skip
    module = build_module(cfg, str(style_path))
    assert type(module.net).__name__ in ("JohnsonNet", "TimmUNet")
    # The checkpoint's hyper-parameters alone rebuild the same network (what inference relies on).
    rebuilt = create_model(module.hparams.model["name"], **module.hparams.model["kwargs"]).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in module.net.state_dict().items()}


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_option_instantiates(loss, style_path):
    cfg = compose_train([f"loss={loss}", "model=johnson_tiny", "paths.output_dir=x"])
    module = build_module(cfg, str(style_path))
    assert list(module.loss_fn.style_layers) == list(cfg.loss.style_layers)


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(data, tmp_path):
    cfg = compose_train([f"data={data}", f"paths.data_dir={tmp_path}", "paths.output_dir=x"])
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, FolderDataModule)
    assert dm.batch_size == cfg.data.batch_size


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option_instantiates(trainer, tmp_path):
    cfg = compose_train([f"trainer={trainer}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}"])
    apply_auto_precision(cfg)
    assert isinstance(hydra.utils.instantiate(cfg.trainer, logger=False), L.Trainer)


def test_auto_precision_reaches_the_trainer_and_the_module(tmp_path, style_path):
    """The default trainer.precision=auto becomes this machine's choice before Lightning sees it."""
    cfg = compose_train(["trainer.accelerator=cpu", "style=custom", f"style.image={style_path}",
                         f"paths.output_dir={tmp_path}"])  # fmt: skip
    choice = resolve_precision("auto", "cpu", "auto")
    assert apply_auto_precision(cfg) == choice
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert trainer.precision == choice.precision
    assert build_module(cfg, str(style_path)).hparams.runtime["channels_last"] is choice.channels_last  # not "auto"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_with_its_callbacks_and_logger(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    apply_auto_precision(cfg)
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()]
    assert callbacks and loggers
    hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)


def test_optim_options_drive_the_optimizer_of_the_network_only(style_path):
    for optim in options("optim"):
        cfg = compose_train([f"optim={optim}", "optim.lr=0.02", "optim.warmup_steps=4", "model=johnson_tiny",
                             "loss=tiny", "paths.output_dir=x"])  # fmt: skip
        module = build_module(cfg, str(style_path))
        module.trainer = L.Trainer(max_steps=8, logger=False, accelerator="cpu", enable_checkpointing=False)
        setup = module.configure_optimizers()
        optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert trained == {id(p) for p in module.net.parameters()}  # the loss network is never trained
        lrs = []
        for _ in range(6):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])  # linear warm-up to optim.lr
