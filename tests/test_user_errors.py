"""What a user meets first: typos in options and keys, a file that is not a checkpoint, a mistyped data root, a
small folder of photos. Each mistake is one ``error:`` line and exit status 2."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nst_lightning.data.datamodule import FolderDataModule, spare_val_count
from nst_lightning.errors import NSTError

from .conftest import REPO, synthetic_photo, tiny_train_cfg


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stdout + proc.stderr
    assert "HYDRA_FULL_ERROR" not in proc.stderr and "Traceback" not in proc.stderr
    return errors[0]


def test_an_unknown_option_is_one_line_with_the_choices(tmp_path: Path) -> None:
    line = _one_error_line(_run("train.py", "style=nope", cwd=tmp_path))
    assert "style" in line and "'nope'" in line and "starry_night" in line and "the_scream" in line


def test_an_unknown_key_is_one_line_with_the_keys_of_its_section(tmp_path: Path) -> None:
    line = _one_error_line(_run("train.py", "data.rot=3", cwd=tmp_path))
    assert "data.rot" in line and "did you mean root?" in line and "batch_size" in line


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    synthetic_photo(32, 32, seed=0).save(tmp_path / "photo.png")
    line = _one_error_line(_run("stylize.py", f"ckpt={junk}", f"input={tmp_path / 'photo.png'}", cwd=tmp_path))
    assert f"{junk} is not a checkpoint" in line and "weights_only" not in line


def test_a_run_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """Hydra creates the run folder before the command runs: an output path under a file is still one line."""
    (tmp_path / "a_file").write_text("")
    line = _one_error_line(_run("train.py", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path))
    assert "cannot write to the output folder" in line and "Not a directory" in line and "hydra.run.dir" in line


def test_commands_and_help_do_not_import_torch() -> None:
    """--help and configuration errors answer without waiting for torch: the entry points import it only
    when a command runs."""
    code = ("import sys, nst_lightning.cli.commands as c; from nst_lightning.cli.app import app_help; "
            "app_help('train', 'x'); assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_mistyped_data_root_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "dta" / "train"
    dm = FolderDataModule(str(typo), manifest_prefix="train/", download="auto", num_workers=0)
    with pytest.raises(NSTError, match="does not exist"):
        dm.prepare_data()
    assert not (tmp_path / "dta").exists()


def test_auto_download_goes_only_into_the_data_folders_own_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    assert FolderDataModule(str(tmp_path / "data" / "train"), manifest_prefix="train/")._may_download(
        tmp_path / "data" / "train"
    )
    assert not FolderDataModule(str(tmp_path / "x"), manifest_prefix="train/")._may_download(tmp_path / "x")
    assert FolderDataModule(str(tmp_path / "x"), manifest_prefix="train/", download=True)._may_download(tmp_path)


def test_validation_takes_what_a_small_folder_can_spare() -> None:
    assert spare_val_count(8, 10) == 2
    assert spare_val_count(8, 3) == 1
    assert spare_val_count(8, 704) == 8
    assert spare_val_count(0, 10) == 0
    assert spare_val_count(8, 1) == 0


def test_a_folder_of_ten_photos_trains_with_the_default_validation_count(
    tmp_path: Path, style_path: Path, caplog
) -> None:
    from nst_lightning.cli.train import run as train

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        synthetic_photo(40, 36, seed=100 + i).save(photos / f"p{i}.jpg")
    cfg = tiny_train_cfg(tmp_path, photos, style_path, ["data.val_count=16", "trainer.max_steps=2"])
    with caplog.at_level(logging.INFO):
        result = train(cfg)
    assert result["global_step"] == 2 and "val/objective" in result["metrics"]
    assert "2 held out for validation instead of data.val_count=16" in caplog.text
