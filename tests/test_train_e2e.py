"""End to end: train → checkpoint → resume → stylize, in-process and through the real entry points."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from nst_lightning.cli.train import run as train
from nst_lightning.inference import export_model, load_model

from .conftest import run_cli, synthetic_photo, tiny_train_cfg


def test_training_writes_last_and_best_checkpoints_without_the_loss_network(tiny_run):
    cfg, result = tiny_run
    assert result["global_step"] == 4
    last, best = Path(result["last_ckpt"]), Path(result["best_ckpt"])
    assert last.exists() and best.exists() and best.name.startswith("best-")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("net.") for k in keys)
    assert not any(k.startswith("loss_fn.") for k in keys)
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["name"] == "johnson_tiny" and hp["loss"]["content_layers"] == ["relu2_2"]
    assert hp["loss"]["style_weight"] == cfg.style.style_weight  # the weight has one name: style.style_weight


def _events(result: dict) -> EventAccumulator:
    events = list(Path(result["output_dir"]).glob("events.out.tfevents*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_has_losses_lr_images_and_hparams(tiny_run):
    cfg, result = tiny_run
    acc = _events(result)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/content", "train/style", "train/tv", "train/objective", "val/objective"} <= scalars
    assert any(t.startswith("lr") for t in scalars)
    assert "stylized" in acc.Tags()["images"]
    assert (Path(result["output_dir"]) / "hparams.yaml").read_text().count("name: johnson_tiny") == 1
    assert list((Path(result["output_dir"]) / "grids").glob("step_*.png"))


def test_tensorboard_hparams_tab_has_the_hyperparameters_against_val_objective(tiny_run):
    _, result = tiny_run
    acc = _events(result)
    content = acc.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/objective"]
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/name"].string_value == "johnson_tiny"
    assert start.hparams["optim/lr"].number_value == pytest.approx(1e-3)
    assert start.hparams["loss/content_layers"].string_value == "['relu2_2']"
    # No placeholder value: the metric's points are the two validations' (after steps 2 and 4), nothing else.
    assert len(acc.Scalars("val/objective")) == 2
    assert "hp_metric" not in acc.Tags()["scalars"]


def test_each_grid_is_logged_once(tiny_run):
    cfg, result = tiny_run
    steps = [e.step for e in _events(result).Images("stylized")]
    assert cfg.callbacks.grid.every_n_steps == 2 and result["global_step"] == 4
    assert steps == [2, 4]  # the final state is step 4's periodic grid, not logged a second time


def test_resume_continues_exactly_where_it_stopped(tiny_run, image_dir, style_path, tmp_path):
    _, result = tiny_run
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, [f"ckpt_path={result['last_ckpt']}", "trainer.max_steps=6"])
    before = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    resumed = train(cfg)
    assert resumed["global_step"] == 6
    after = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=True)
    # The optimizer state carried over: Adam's step counter went from 4 to 6, not from 0 to 2.
    steps_before = next(iter(before["optimizer_states"][0]["state"].values()))["step"]
    steps_after = next(iter(after["optimizer_states"][0]["state"].values()))["step"]
    assert float(steps_before) == 4 and float(steps_after) == 6


def test_inference_loads_without_lightning_and_keeps_odd_sizes(tiny_run):
    _, result = tiny_run
    loaded = load_model(result["last_ckpt"])
    assert loaded.model_name == "johnson_tiny"
    x = torch.rand(1, 3, 37, 29)
    assert loaded.net(x).shape == x.shape


def test_exported_fp16_model_matches_the_checkpoint(tiny_run, tmp_path):
    _, result = tiny_run
    out = export_model(result["last_ckpt"], tmp_path / "model.pt", half=True)
    a, b = load_model(result["last_ckpt"]).net, load_model(out).net
    x = torch.rand(1, 3, 40, 40)
    assert torch.allclose(a(x), b(x), atol=2e-2)


@pytest.mark.slow
def test_entry_points_train_resume_and_stylize(tmp_path, image_dir, style_path):
    out = tmp_path / "cli_run"
    common = ["experiment=tiny", "style=custom", f"style.image={style_path}", f"data.root={image_dir}",
              f"hydra.run.dir={out}", "trainer.max_steps=2"]  # fmt: skip
    first = run_cli("train.py", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    assert last.exists()
    # To step 4: the resumed run validates (every 2 steps), so its sweep metric val/objective exists.
    resumed = run_cli("train.py", *common, "trainer.max_steps=4", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4

    photo = tmp_path / "photo.png"
    synthetic_photo(61, 35, seed=3).save(photo)
    result = run_cli("stylize.py", f"ckpt={last}", f"input={photo}", f"output={tmp_path / 'out.jpg'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(tmp_path / "out.jpg").size == (61, 35)

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(40, 30), (33, 50)]):
        synthetic_photo(*size, seed=i).save(folder / f"p{i}.png")
    result = run_cli("stylize.py", f"ckpt={last}", f"input={folder}", f"output={tmp_path / 'styled'}", "max_size=36")
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = sorted(Image.open(p).size for p in (tmp_path / "styled").glob("*.png"))
    assert sizes == [(24, 36), (36, 27)]


@pytest.mark.slow
def test_bad_inputs_exit_nonzero_with_a_clear_message(tmp_path, image_dir):
    missing_style = run_cli("train.py", "experiment=tiny", "style=custom", f"style.image={tmp_path}/nope.jpg",
                            f"data.root={image_dir}", f"hydra.run.dir={tmp_path / 'r'}")  # fmt: skip
    assert missing_style.returncode == 2
    assert "style image not found" in missing_style.stderr and "Traceback" not in missing_style.stderr

    unknown_style = run_cli("train.py", "style=not_a_style", f"hydra.run.dir={tmp_path / 'r2'}")
    assert unknown_style.returncode != 0 and "not_a_style" in unknown_style.stderr

    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    bad = run_cli("stylize.py", f"ckpt={tmp_path / 'none.ckpt'}", f"input={not_image}")
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr
