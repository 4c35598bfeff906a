"""Learning-rate schedules: linear warm-up, then constant or cosine decay over steps or over a time budget."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Timer

from nst_lightning.errors import NSTError

SCHEDULES = ("constant", "cosine", "cosine_time")


class LRSchedule:
    """Picklable learning-rate multiplier for ``LambdaLR``: linear warm-up, then constant or cosine decay.

    Args:
        warmup: optimiser steps of linear warm-up (the multiplier climbs from ``1 / warmup`` to 1).
        kind: ``constant``; ``cosine`` (to ``min_ratio`` at step ``total``); ``cosine_time`` (to ``min_ratio``
            as :attr:`progress` goes from 0 to 1; the caller sets it, e.g. from :func:`budget_progress`).
        total: the step the ``cosine`` decay ends at (None: no decay).
        min_ratio: the final multiplier of the cosine decays.

    Raises:
        NSTError: an unknown ``kind``.
    """

    def __init__(self, warmup: int, kind: str, total: int | None, min_ratio: float) -> None:
        if kind not in SCHEDULES:
            raise NSTError(f"unknown optim.lr_schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
        self.warmup, self.kind, self.total, self.min_ratio = warmup, kind, total, min_ratio
        self.progress = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine_time":
            progress = self.progress
        elif self.kind == "constant" or not self.total:
            return 1.0
        else:
            progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def budget_progress(trainer: L.Trainer) -> float:
    """Share of the training budget used, in [0, 1]: elapsed training time / ``max_time`` (Lightning's Timer,
    whose elapsed time survives a resume), or the step share if ``max_steps`` runs out first.

    Raises:
        NSTError: the trainer has no time budget (``trainer.max_time``).
    """
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        raise NSTError("optim.lr_schedule=cosine_time needs a time budget: set trainer.max_time=DD:HH:MM:SS")
    elapsed = timer.time_elapsed("train")
    steps = trainer.global_step / trainer.max_steps if trainer.max_steps > 0 else 0.0
    return min(1.0, max(elapsed / max(elapsed + remaining, 1e-9), steps))
