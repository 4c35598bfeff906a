"""A run stops within one step of its time budget or of SIGTERM, however slow a step is, with a checkpoint."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from .conftest import tiny_train_cfg
from .test_fault_kill import finish, log_of, start, wait_for


class SlowStep(L.Callback):
    """Makes every training step take at least ``seconds`` (a CPU emulating bf16, a huge batch); touches
    ``marker`` when the first step begins."""

    def __init__(self, seconds: float, marker: str | None = None) -> None:
        self.seconds, self.marker = seconds, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.marker:
            Path(self.marker).touch()
        time.sleep(self.seconds)


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_a_time_budget_shorter_than_one_step_stops_after_that_step_with_a_checkpoint(
    tmp_path: Path, image_dir: Path, style_path: Path
) -> None:
    from nst_lightning.cli.train import run as train

    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["++trainer.max_time=00:00:00:01", "trainer.max_steps=1000"])
    result = train(cfg, extra_callbacks=[SlowStep(seconds=1.5)])
    assert result["global_step"] == 1
    assert _step(Path(result["last_ckpt"])) == 1


@pytest.mark.slow
def test_sigterm_during_a_slow_step_ends_the_run_after_it_with_a_checkpoint(
    tmp_path: Path, image_dir: Path, style_path: Path
) -> None:
    run, marker = tmp_path / "run", tmp_path / "step_started"
    slow = [f"+callbacks.slow._target_={__name__}.SlowStep", "+callbacks.slow.seconds=4",
            f"+callbacks.slow.marker={marker}", "checkpoint.every_minutes=600"]  # fmt: skip
    proc = start(run, image_dir, style_path, *slow)
    wait_for(marker.exists, proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM, log_of(run)[-3000:]
    assert _step(run / "checkpoints/last.ckpt") == 1
