"""Progress without a terminal: log lines with the step, images/s, losses and an ETA; the run's bar counts steps."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import open_dict

from nst_lightning.training.progress import StepProgress, format_duration

from .conftest import tiny_train_cfg


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [format_duration(s) for s in (4.4, 65, 3 * 3600 + 240)] == ["4s", "1m05s", "3h04m"]


def test_without_a_terminal_progress_is_logged_as_lines(tmp_path: Path, image_dir: Path, style_path: Path,
                                                         caplog) -> None:  # fmt: skip
    from nst_lightning.cli.train import run as train

    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["callbacks.progress.every_seconds=0",
                                                           "+callbacks.progress.terminal=false"])  # fmt: skip
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = True
    with caplog.at_level(logging.INFO, logger="nst_lightning.training.progress"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "nst_lightning.training.progress"]
    steps = [line for line in lines if line.startswith("step ") and "img/s" in line]
    assert [line.split(" |")[0] for line in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert all("objective" in line and "style" in line and "ETA" in line for line in steps)
    assert "step 2: val/objective" in " ".join(lines) and lines[-1].startswith("trained 4 steps")


def test_the_progress_callback_is_the_runs_progress_bar(tmp_path: Path, image_dir: Path, style_path: Path) -> None:
    """Lightning's default bar reads "Epoch 39/-2" in step-bounded runs; the project's own replaces it."""
    import hydra

    cfg = tiny_train_cfg(tmp_path, image_dir, style_path)
    assert isinstance(hydra.utils.instantiate(cfg.callbacks.progress), StepProgress)
