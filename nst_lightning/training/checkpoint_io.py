"""Checkpoint files that survive a kill or a full disk: written to a temporary file in the same folder, flushed
to disk (fsync) and renamed over the old one, never written when the weights hold NaN/inf.

- :func:`atomic_save` / :class:`AtomicCheckpointIO` (Lightning's writer, made atomic), :func:`trainer_plugins`.
- :func:`check_writable`: fail at start, not at the first checkpoint hours later.
- :func:`save_last`: the full training state to ``last.ckpt`` (used by the signal and divergence callbacks).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nst_lightning.errors import NSTError

LAST = "last.ckpt"
CHECKPOINT_DIR = "checkpoints"


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (the one place that writes checkpoint bytes)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """The temporary file next to ``path`` that :func:`atomic_save` writes before the rename."""
    return path.with_name(f".{path.name}.tmp")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` such that ``path`` is always either the old file or the complete new one.

    Raises:
        NSTError: the folder cannot be created or written, or the disk is full; ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NSTError(
            f"cannot create the checkpoint folder {path.parent}: {exc.strerror or exc}. "
            "Point paths.output_dir (or hydra.run.dir) at a writable folder."
        ) from exc
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    tmp = temp_path(path)
    try:
        _write_file(tmp, buffer.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise NSTError(
            f"could not write the checkpoint {path} ({len(buffer.getvalue()) / 2**20:.1f} MiB): "
            f"{exc.strerror or exc}; {kept}. Free disk space or point paths.output_dir at another disk, "
            "then resume with resume=auto."
        ) from exc
    _fsync_dir(path.parent)


def check_writable(folder: str | Path) -> None:
    """Fail now, not after hours of training, if checkpoints cannot be written to ``folder``."""
    folder = Path(folder)
    probe = folder / ".write_test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_file(probe, b"ok")
        probe.unlink()
    except OSError as exc:
        raise NSTError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}. "
            "Point paths.output_dir (or hydra.run.dir) at a writable folder."
        ) from exc


def nonfinite_weights(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or inf."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on local disks (see :func:`atomic_save`).

    Lightning's own ``_atomic_save`` writes the temporary file in the system temp folder and moves it, which is
    a plain copy when that is another file system, and never fsyncs. Remote URLs (``s3://``...) keep
    Lightning's behaviour. A checkpoint whose weights hold NaN/inf is refused, so ``last.ckpt`` always holds a
    usable network.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        bad = nonfinite_weights(checkpoint.get("state_dict", {}))
        if bad:
            raise NSTError(
                f"refusing to write {path}: the weights hold NaN/inf ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}); the previous checkpoint is kept. Lower optim.lr, use "
                "trainer.precision=32-true or bf16-mixed, or set trainer.gradient_clip_val."
            )
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            atomic_save(checkpoint, path)


def trainer_plugins() -> list[Any]:
    """Plugins for ``Trainer(plugins=...)``: the atomic writer, and under SLURM the SLURM environment with
    Lightning's own requeue handler off (:class:`SignalCheckpoint` saves at a step boundary, then requeues)."""
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def save_last(trainer: L.Trainer, dirpath: str | Path) -> Path:
    """Save the full training state to ``dirpath/last.ckpt`` (collective under DDP: call on every rank)."""
    path = Path(dirpath) / LAST
    trainer.save_checkpoint(path)
    for cb in trainer.checkpoint_callbacks:  # so ckpt_path="last" and the run's summary point at it
        if isinstance(cb, ModelCheckpoint) and cb.dirpath and Path(cb.dirpath) == Path(dirpath):
            cb.last_model_path = str(path)
    return path
