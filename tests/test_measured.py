"""The benchmarks' training run: validated at its start (the weights it trains from) and every N steps."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.losses.config import LossConfig
from nst_lightning.training.measured import fit_measured
from nst_lightning.training.module import StyleTransferModule


class _Validations(L.Callback):
    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.points.append((trainer.global_step, float(trainer.callback_metrics["val/objective"])))


def test_a_measured_run_validates_its_start_and_every_n_steps(tiny_ckpt, image_dir, style_path, tmp_path):
    def module() -> StyleTransferModule:
        loss = LossConfig(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1")).to_dict()
        return StyleTransferModule(model={"name": "johnson_tiny"}, loss=loss, transfer={"init_from": str(tiny_ckpt)},
                                   style={"name": "stripes", "image": str(style_path), "size": 32})  # fmt: skip

    def data() -> FolderDataModule:
        return FolderDataModule(image_dir, image_size=32, batch_size=2, num_workers=0, val_count=1, val_size=32)

    seen = _Validations()
    seconds = fit_measured(module(), data(), steps=4, val_every=2, callbacks=[seen], ckpt=tmp_path / "run.ckpt")
    assert [step for step, _ in seen.points] == [0, 2, 4] and seconds > 0
    assert torch.load(tmp_path / "run.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4
    # Step 0 scores the weights the run starts from (init_from), not the random ones the module was built with.
    start, start_seen = module(), _Validations()
    start.load_init_weights()
    L.Trainer(logger=False, callbacks=[start_seen], enable_progress_bar=False).validate(start, datamodule=data())
    assert seen.points[0][1] == pytest.approx(start_seen.points[0][1], rel=1e-5)
