"""A short run on real photos from $NST_DATA_DIR/train: the training objective must fall."""

import pytest
import torch

from nst_lightning.cli.train import run as train

from .conftest import SHARED_DATA, ObjectiveRecorder, tiny_train_cfg


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "train").is_dir(), reason="needs NST_DATA_DIR with train/ photos")
def test_training_loss_falls_on_real_photos(tmp_path):
    torch.manual_seed(0)
    style = SHARED_DATA / "styles" / "starry_night.jpg"
    cfg = tiny_train_cfg(
        tmp_path,
        SHARED_DATA / "train",
        style,
        ["model=johnson_tiny", "loss=default", "data.image_size=64", "data.batch_size=2", "style.size=256",
         "trainer.max_steps=40", "trainer.val_check_interval=40", "optim.lr=5e-3", "callbacks.grid.every_n_steps=0"],
    )  # fmt: skip
    recorder = ObjectiveRecorder()
    result = train(cfg, extra_callbacks=[recorder])
    values = recorder.values
    assert len(values) == 40 and result["global_step"] == 40
    first, last = sum(values[:8]) / 8, sum(values[-8:]) / 8
    assert last < 0.8 * first, (first, last)
