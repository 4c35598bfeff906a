"""A training run as the benchmarks measure it: a fixed number of steps, validated at its start and at a fixed
interval, with nothing else (no logger, checkpoints, progress bar or model summary) to add time or files."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L


def fit_measured(
    module: L.LightningModule,
    data: L.LightningDataModule,
    steps: int,
    val_every: int,
    callbacks: Sequence[L.Callback] = (),
    accelerator: str = "cpu",
    precision: str = "32-true",
    ckpt: str | Path | None = None,
) -> float:
    """Train ``module`` for ``steps`` steps on ``data``, validating first (step 0: the start the run trains from,
    after ``module.load_init_weights()`` when it has one) and then every ``val_every`` steps; the callbacks record
    what they measure. Saves the final state to ``ckpt`` when given.

    Returns:
        seconds of the whole run, the validations included.
    """
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=-1,
        val_check_interval=val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
    )  # fmt: skip
    t0 = time.perf_counter()
    if hasattr(module, "load_init_weights"):
        module.load_init_weights()  # fit loads the same weights again: validation must see them first
    trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - t0
    if ckpt is not None:
        trainer.save_checkpoint(ckpt)
    return seconds
