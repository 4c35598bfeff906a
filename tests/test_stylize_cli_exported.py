"""``stylize.py ckpt=FILE`` takes an exported file as the README says ("a shipped name, a checkpoint or an exported
file"): a graph export runs in its own runtime and gives the eager network's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from nst_lightning.cli.config import config_dir
from nst_lightning.cli.stylize import run
from nst_lightning.errors import NSTError
from nst_lightning.export.exporter import export
from nst_lightning.inference import load_model
from nst_lightning.inference.checkpoint import EXPORT_FORMAT
from nst_lightning.models import create_model


def stylize_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("stylize", overrides=overrides)


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A johnson_tiny model file with random weights (as export_model writes it)."""
    torch.manual_seed(0)
    net = create_model("johnson_tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": net.state_dict(), "meta": {"style_name": "noise"}}, path)  # fmt: skip
    return path


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_stylize_cli_runs_a_torchscript_export_like_the_eager_model(tiny_pt: Path, photo: Path, tmp_path: Path):
    exported = export(load_model(tiny_pt), "torchscript", tmp_path / "tiny.ts")
    common = [f"input={photo}", "device=cpu", "input_noise=0"]
    run(stylize_cfg([f"ckpt={tiny_pt}", *common, f"output={tmp_path / 'eager.png'}"]))
    run(stylize_cfg([f"ckpt={exported}", *common, f"output={tmp_path / 'ts.png'}"]))
    eager = np.asarray(Image.open(tmp_path / "eager.png"), dtype=np.int16)
    graph = np.asarray(Image.open(tmp_path / "ts.png"), dtype=np.int16)
    assert graph.shape == eager.shape == (30, 40, 3)
    assert np.abs(graph - eager).max() <= 1


def test_a_file_that_is_no_model_is_still_not_a_checkpoint(photo: Path, tmp_path: Path):
    with pytest.raises(NSTError, match="is not a checkpoint"):
        run(stylize_cfg([f"ckpt={photo}", f"input={photo}", f"output={tmp_path / 'out.png'}"]))
