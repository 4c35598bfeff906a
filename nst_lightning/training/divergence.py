"""The divergence guard: a step whose loss is NaN/inf is skipped (no update) and counted
(``train/skipped_steps``); after N such steps in a row the run stops with a message, ``last.ckpt`` holding the
last good state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nst_lightning.errors import NSTError
from nst_lightning.training.checkpoint_io import LAST, nonfinite_weights, save_last

log = logging.getLogger(__name__)


def loss_is_finite(module: L.LightningModule, loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every rank (one scalar read per step; a collective under DDP, where all
    ranks must skip together). ``training_step`` returns None when it is not: Lightning then skips backward
    and the optimizer update; :class:`DivergenceGuard` counts the skip."""
    finite = bool(torch.isfinite(loss.detach()).all())
    return bool(module.trainer.strategy.reduce_boolean_decision(finite, all=True))


class DivergenceGuard(L.Callback):
    """Counts the steps skipped for a non-finite loss; stops the run after ``max_consecutive_nonfinite`` in a row.

    The count is logged as ``train/skipped_steps`` and kept in checkpoints. On the stop, ``last.ckpt`` holds the
    last good state (the skipped steps changed nothing) and the run ends with an :class:`NSTError` message.

    Args:
        dirpath: the checkpoint folder.
        max_consecutive_nonfinite: non-finite losses in a row that stop the run.
    """

    def __init__(self, dirpath: str, max_consecutive_nonfinite: int) -> None:
        if max_consecutive_nonfinite < 1:
            raise NSTError(f"guard.max_consecutive_nonfinite must be >= 1 (got {max_consecutive_nonfinite})")
        self.dirpath = dirpath
        self.max_consecutive = max_consecutive_nonfinite
        self.skipped = 0
        self.consecutive = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if outputs:  # the loss (a dict holding it); empty when training_step returned None
            self.consecutive = 0
        else:
            self.skipped += 1
            self.consecutive += 1
            log.warning(
                "non-finite loss at step %d: update skipped (%d in a row, %d in all)",
                trainer.global_step,
                self.consecutive,
                self.skipped,
            )
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        if self.consecutive >= self.max_consecutive:
            self._stop(trainer, pl_module)

    def _stop(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = nonfinite_weights(pl_module.state_dict())
        if bad:
            kept = f"kept the previous {Path(self.dirpath) / LAST} (not overwritten with NaN weights)"
        else:
            kept = f"saved the last good state to {save_last(trainer, self.dirpath)}"
        raise NSTError(
            f"training diverged: {self.consecutive} non-finite losses in a row at step {trainer.global_step} "
            f"({self.skipped} skipped in all); {kept}. Lower optim.lr, use trainer.precision=32-true or "
            "bf16-mixed, set trainer.gradient_clip_val, or check the data; resume with ckpt_path=PATH."
        )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped, self.consecutive = state_dict["skipped"], state_dict["consecutive"]
