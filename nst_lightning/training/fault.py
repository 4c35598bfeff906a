"""Training that survives being killed: checkpoints by time and on signals, and finding the checkpoint to resume
from (the files themselves are written atomically: :mod:`nst_lightning.training.checkpoint_io`; a diverging
loss is :mod:`nst_lightning.training.divergence`'s).

- :class:`TimedLastCheckpoint`: ``last.ckpt`` at least every ``every_minutes`` of training.
- :class:`SignalCheckpoint`: SIGTERM or SIGUSR1 (SLURM's warning before the time limit) → ``last.ckpt`` at the
  end of the current step, then exit; under SLURM, SIGUSR1 also requeues the job.
- :func:`resolve_resume`: ``ckpt_path=last`` / ``resume=auto`` to the checkpoint file.

Checkpoints written at a step boundary resume exactly: the data order is in the checkpoint too
(:mod:`nst_lightning.data.sampler`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint

from nst_lightning.errors import NSTError
from nst_lightning.training.checkpoint_io import CHECKPOINT_DIR, LAST, save_last

log = logging.getLogger(__name__)


# -- checkpoints by time ---------------------------------------------------------------------------------
class TimedLastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at least every ``every_minutes`` minutes of training (checked after each step), and after
    the last step of a run that ends at ``trainer.max_steps``.

    A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with ``train_time_interval`` that writes only
    ``last.ckpt`` (no top-k), overwriting it in place (no ``last-v1.ckpt``), so it can share the folder with the
    step/validation checkpoint callback. Fractional minutes are allowed (tests use a few seconds).

    Why the last step too: once ``fit`` has returned, Lightning marks the interrupted epoch as finished, so a
    checkpoint saved then resumes in a new epoch (skipping the rest of the data order). Saved at the end of the
    last step, ``last.ckpt`` continues exactly when a run is extended with a larger ``trainer.max_steps``.
    """

    def __init__(self, dirpath: str, every_minutes: float) -> None:
        if not every_minutes or every_minutes <= 0:
            raise NSTError(
                f"checkpoint.every_minutes must be > 0 (got {every_minutes}); to turn time-based checkpoints off, "
                "set callbacks.last_by_time=null"
            )
        self.every_minutes = float(every_minutes)
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            train_time_interval=timedelta(minutes=self.every_minutes),
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        )
        self.final_step: int | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step and self.final_step != trainer.global_step:
            if self._last_global_step_saved != trainer.global_step:  # not just saved by time
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self.final_step = trainer.global_step


def saved_at_final_step(trainer: L.Trainer) -> bool:
    """Whether :class:`TimedLastCheckpoint` or :class:`SignalCheckpoint` wrote ``last.ckpt`` at the step the run
    stopped at (then ``last.ckpt`` must not be overwritten by a save after ``fit``: see TimedLastCheckpoint)."""
    for cb in trainer.callbacks:
        if isinstance(cb, TimedLastCheckpoint) and cb.final_step == trainer.global_step:
            return True
        if isinstance(cb, SignalCheckpoint) and cb.saved_at_step == trainer.global_step:
            return True
    return False


# -- checkpoints on signals ------------------------------------------------------------------------------
class SignalCheckpoint(L.Callback):
    """SIGTERM or SIGUSR1 → save ``last.ckpt`` at the end of the current training step, then stop.

    SIGTERM (``kill``, ``docker stop``, Kubernetes, SLURM at the time limit or on preemption): Lightning's
    handler flags it and ends the run after the step (exit status 143, see ``nst_lightning.cli.train``); this
    callback saves the checkpoint first. SIGUSR1 (``sbatch --signal=B:USR1@120``): checkpoint, then, under
    SLURM with ``requeue``, ``scontrol requeue $SLURM_JOB_ID`` (the job restarts later and resumes with
    ``resume=auto``), then a clean stop. The save happens between steps, not inside the signal handler, so
    the resumed run is exact.

    Args:
        dirpath: the checkpoint folder (``last.ckpt`` goes there).
        requeue: under SLURM, requeue the job on SIGUSR1.
    """

    def __init__(self, dirpath: str, requeue: bool) -> None:
        self.dirpath = dirpath
        self.requeue = requeue
        self.received: str | None = None
        self.saved_at_step: int | None = None
        self._previous_usr1: Any = None

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.received = "SIGUSR1"
        if callable(self._previous_usr1):
            self._previous_usr1(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning has installed its own handlers (it chains SIGTERM; SIGUSR1 is ours, chained too).
        if hasattr(signal, "SIGUSR1"):
            try:
                self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)
            except ValueError:  # not the main thread (e.g. inside a notebook worker): no SIGUSR1 support
                self._previous_usr1 = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_usr1 is not None and hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None

    def _requested(self, trainer: L.Trainer) -> str | None:
        local = self.received or ("SIGTERM" if trainer.received_sigterm else None)
        if trainer.world_size > 1:  # every rank must take part in the save
            anyone = trainer.strategy.reduce_boolean_decision(local is not None, all=False)
            return (local or "SIGTERM") if anyone else None
        return local

    def _save(self, trainer: L.Trainer, why: str) -> None:
        path = save_last(trainer, self.dirpath)
        self.saved_at_step = trainer.global_step
        log.warning("%s received: saved %s at step %d", why, path, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        why = self._requested(trainer)
        if why is None or self.saved_at_step == trainer.global_step:
            return
        self._save(trainer, why)
        if why == "SIGUSR1":
            if self.requeue and SLURMEnvironment.detect() and trainer.is_global_zero:
                requeue_slurm_job()
            trainer.should_stop = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # The signal arrived after this step's hook ran (e.g. during validation): save now if not yet saved.
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and self.saved_at_step != trainer.global_step:
            self._save(trainer, "SIGTERM")


def requeue_slurm_job() -> None:
    """``scontrol requeue`` this SLURM job (the command Lightning's SLURM environment uses)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False).returncode
    except FileNotFoundError:
        result = -1
    if result == 0:
        log.warning("requeued SLURM job %s: it will resume from last.ckpt (resume=auto)", job)
    else:
        log.error("could not requeue SLURM job %s (scontrol exit status %d): resubmit it with resume=auto", job, result)


# -- resuming ----------------------------------------------------------------------------------------------
def resolve_resume(ckpt_path: str | None, resume: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint file a run starts from (None: a fresh start).

    - ``ckpt_path=FILE``: that checkpoint; ``ckpt_path=RUN_FOLDER``: its ``checkpoints/last.ckpt``.
    - ``ckpt_path=last``: the newest ``*/checkpoints/last.ckpt`` among the run folders next to this one
      (``outputs/train/<style>/*/``): continue the latest run of this style (in a new folder).
    - ``resume=auto``: this run folder's ``checkpoints/last.ckpt`` if it exists, else a fresh start: for a
      job that is restarted with the same ``hydra.run.dir`` (SLURM requeue, a retry loop).
    """
    out = Path(output_dir)
    if resume not in (None, "auto"):
        raise NSTError(f"resume={resume!r}: use resume=auto (or ckpt_path=FILE|RUN_FOLDER|last)")
    if ckpt_path and resume:
        raise NSTError("give either ckpt_path or resume=auto, not both")
    if resume == "auto":
        own = out / CHECKPOINT_DIR / LAST
        if own.is_file():
            log.info("resume=auto: resuming from %s", own)
            return str(own)
        log.info("resume=auto: no %s yet, starting a new run", own)
        return None
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        found = [p for p in out.parent.glob(f"*/{CHECKPOINT_DIR}/{LAST}") if p.is_file()]
        if not found:
            raise NSTError(f"ckpt_path=last: no {CHECKPOINT_DIR}/{LAST} in any run folder under {out.parent}")
        newest = max(found, key=lambda p: p.stat().st_mtime)
        log.info("ckpt_path=last: resuming from %s", newest)
        return str(newest)
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / LAST if (path / CHECKPOINT_DIR).is_dir() else path / LAST
    if not path.is_file():
        raise NSTError(f"ckpt_path not found: {ckpt_path}")
    return str(path)
