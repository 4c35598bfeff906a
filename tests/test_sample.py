"""The embedded offline sample and the data folder's location: experiment=quick runs with no data folder."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from nst_lightning.data.datasets import training_images
from nst_lightning.data.sample import SAMPLE_DIR, data_dir_from_env

from .conftest import REPO, SHARED_DATA, compose_train, run_cli


@pytest.fixture
def fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with no ``data/`` and no ``NST_DATA_DIR``."""
    monkeypatch.delenv("NST_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sample_ships_the_style_a_few_dozen_photos_and_their_provenance():
    photos = training_images(SAMPLE_DIR / "train")
    assert len(photos) >= 16 and (SAMPLE_DIR / "styles" / "starry_night.jpg").is_file()
    provenance = (SAMPLE_DIR / "PROVENANCE.md").read_text()
    assert all(p.name in provenance for p in photos) and "starry_night.jpg" in provenance
    assert sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*")) < 5 * 2**20


def test_quick_uses_the_sample_when_there_is_no_data_folder(fresh_machine):
    cfg = compose_train(["experiment=quick", "paths.output_dir=x"])
    assert cfg.paths.data_dir == str(fresh_machine / "data")
    assert Path(cfg.data.root) == SAMPLE_DIR / "train"
    assert Path(cfg.style.image) == SAMPLE_DIR / "styles" / "starry_night.jpg"
    # Other experiments keep the data folder (and download into it, as before).
    assert compose_train(["paths.output_dir=x"]).data.root == str(fresh_machine / "data" / "train")


@pytest.mark.skipif(not (SHARED_DATA / "train").is_dir(), reason="needs NST_DATA_DIR with train/ and styles/")
def test_quick_prefers_the_data_folder_when_it_has_the_files(fresh_machine, monkeypatch):
    monkeypatch.setenv("NST_DATA_DIR", str(SHARED_DATA))
    cfg = compose_train(["experiment=quick", "paths.output_dir=x"])
    assert Path(cfg.data.root) == SHARED_DATA / "train"
    assert Path(cfg.style.image) == SHARED_DATA / "styles" / "starry_night.jpg"


def test_quick_falls_back_per_file(fresh_machine):
    """Photos here but no style painting: the photos are used, the painting comes from the sample."""
    (fresh_machine / "data" / "train").mkdir(parents=True)
    shutil.copy(SAMPLE_DIR / "train" / "kodim01.jpg", fresh_machine / "data" / "train" / "a.jpg")
    cfg = compose_train(["experiment=quick", "paths.output_dir=x"])
    assert cfg.data.root == str(fresh_machine / "data" / "train")
    assert Path(cfg.style.image) == SAMPLE_DIR / "styles" / "starry_night.jpg"


def test_relative_nst_data_dir_resolves_against_the_current_directory_once(fresh_machine, monkeypatch):
    (fresh_machine / "here" / "mydata").mkdir(parents=True)
    monkeypatch.setenv("NST_DATA_DIR", "mydata")
    monkeypatch.chdir(fresh_machine / "here")
    assert compose_train(["paths.output_dir=x"]).paths.data_dir == str(fresh_machine / "here" / "mydata")
    # Exported as an absolute path: a child process started in another folder finds the same data.
    assert os.environ["NST_DATA_DIR"] == str(fresh_machine / "here" / "mydata")
    monkeypatch.chdir(fresh_machine)
    assert data_dir_from_env() == str(fresh_machine / "here" / "mydata")


def test_relative_nst_data_dir_missing_here_is_taken_from_the_shell_directory(fresh_machine, monkeypatch):
    """A Jupyter kernel runs in the notebook's folder; $PWD still names the folder the user started from."""
    (fresh_machine / "repo" / "notebooks").mkdir(parents=True)
    (fresh_machine / "shared").mkdir()
    monkeypatch.setenv("PWD", str(fresh_machine / "repo"))
    monkeypatch.setenv("NST_DATA_DIR", "../shared")
    monkeypatch.chdir(fresh_machine / "repo" / "notebooks")
    assert data_dir_from_env() == str(fresh_machine / "shared")


@pytest.mark.slow
def test_quick_trains_offline_on_the_sample_from_any_folder(tmp_path):
    """``python train.py experiment=quick`` on a machine with no data folder (shrunk to two steps)."""
    env = {k: v for k, v in os.environ.items() if k != "NST_DATA_DIR"}
    result = run_cli(
        str(REPO / "train.py"), "experiment=quick", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "data.image_size=32", "data.val_size=32", "data.num_workers=0", "style.size=64", "model.base_channels=8",
        "model.num_residual=1", "callbacks.grid.every_n_steps=0", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"using the embedded sample {SAMPLE_DIR / 'train'}" in log
    # 16 photos: validation takes what a small folder can spare (a fifth, at most val_count=4)
    assert f"training on 13 images from {SAMPLE_DIR / 'train'} (3 held out for validation)" in log
    assert not (tmp_path / "data").exists()  # nothing was downloaded
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["style"]["image"].startswith(str(SAMPLE_DIR))


def test_the_five_styles_of_the_multistyle_network_are_in_the_sample_with_their_provenance():
    provenance = (SAMPLE_DIR / "PROVENANCE.md").read_text()
    for name in ("starry_night", "the_scream", "the_wave", "candy", "mosaic"):
        assert (SAMPLE_DIR / "styles" / f"{name}.jpg").is_file()
        assert f"`styles/{name}.jpg`" in provenance


def test_multistyle_trains_offline_and_reads_only_the_listed_paintings(fresh_machine, caplog):
    """``styles=[the_wave,candy]`` with no data folder and no network: neither the default style's painting
    (starry_night) nor any other is fetched; the listed presets come from the sample."""
    from nst_lightning.cli.train import run

    cfg = compose_train(["experiment=quick", "styles=[the_wave,candy]", "trainer.max_steps=1",
                         "trainer.val_check_interval=1", "data.image_size=32", "data.val_size=32",
                         "data.num_workers=0", "model.base_channels=8", "model.num_residual=1",
                         "callbacks.grid.every_n_steps=0", "paths.output_dir=run"])  # fmt: skip
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    with caplog.at_level(logging.INFO):
        result = run(cfg)
    assert result["global_step"] == 1
    styles = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)["hyper_parameters"]["styles"]
    paths = {s["name"]: Path(s["image"]) for s in styles}
    if not (fresh_machine / "data" / "styles").exists():  # offline: nothing was downloaded
        assert paths == {n: SAMPLE_DIR / "styles" / f"{n}.jpg" for n in ("the_wave", "candy")}
    assert not (fresh_machine / "data" / "styles" / "starry_night.jpg").exists()
    assert "starting from random weights" in caplog.text


def test_custom_style_without_an_image_names_style_image(fresh_machine):
    from nst_lightning.cli.presets import style_image_path
    from nst_lightning.errors import NSTError

    for overrides in (["style=custom"], ["experiment=finetune", "style=custom"]):
        cfg = compose_train([*overrides, "paths.output_dir=x"])
        with pytest.raises(NSTError, match=r"style\.image=PATH"):
            style_image_path(cfg.style)
