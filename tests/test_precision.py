"""Mixed precision: bf16 autocast trains like fp32 (short run), with fp32 Grams and finite losses."""

import pytest
import torch

from nst_lightning.cli.train import run as train

from .conftest import ObjectiveRecorder, tiny_train_cfg


def run(tmp_path, image_dir, style_path, precision: str) -> list[float]:
    torch.manual_seed(0)
    cfg = tiny_train_cfg(
        tmp_path / precision,
        image_dir,
        style_path,
        [f"trainer.precision={precision}", "trainer.max_steps=8", "trainer.val_check_interval=8",
         "data.shuffle=false", "data.augment=false", "callbacks.grid.every_n_steps=0"],
    )  # fmt: skip
    recorder = ObjectiveRecorder()
    train(cfg, extra_callbacks=[recorder])
    return recorder.values


@pytest.mark.slow
def test_bf16_mixed_loss_curve_follows_fp32(tmp_path, image_dir, style_path):
    fp32 = run(tmp_path, image_dir, style_path, "32-true")
    bf16 = run(tmp_path, image_dir, style_path, "bf16-mixed")
    assert len(fp32) == len(bf16) == 8
    assert all(torch.isfinite(torch.tensor(bf16)))
    gaps = [abs(a - b) / a for a, b in zip(fp32, bf16, strict=True)]
    assert max(gaps) < 0.08, (fp32, bf16)
    assert abs(sum(bf16) - sum(fp32)) / sum(fp32) < 0.03, (fp32, bf16)
