"""Fault tolerance in-process: atomic writes, full disks, resumable data order, the divergence guard, resume lookup."""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nst_lightning.cli.train import run as train
from nst_lightning.data.datamodule import FolderDataModule
from nst_lightning.data.datasets import ImageFolderDataset, train_transform, training_images
from nst_lightning.data.sampler import ResumableSampler
from nst_lightning.errors import NSTError
from nst_lightning.training import checkpoint_io, fault

from .conftest import net_state, tiny_train_cfg


# -- atomic writes and disks ------------------------------------------------------------------------------
def test_atomic_save_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt" / "last.ckpt"
    checkpoint_io.atomic_save({"w": torch.ones(3)}, path)
    checkpoint_io.atomic_save({"w": torch.full((3,), 2.0)}, path)
    assert torch.equal(torch.load(path)["w"], torch.full((3,), 2.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def _file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG (a real OS error, as on a full disk), not SIGXFSZ."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    return old, old_handler


def test_a_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    checkpoint_io.atomic_save({"w": torch.zeros(10)}, path)
    before = path.read_bytes()
    old, old_handler = _file_size_limit(64 * 1024)
    try:
        with pytest.raises(NSTError, match=r"could not write the checkpoint .*last.ckpt.*previous last.ckpt is intact"):
            checkpoint_io.atomic_save({"w": torch.zeros(1_000_000)}, path)  # 4 MB > 64 kB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before
    assert not checkpoint_io.temp_path(path).exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_gives_a_clear_message_and_keeps_the_previous_checkpoint(tiny_disk):
    path = tiny_disk / "checkpoints" / "last.ckpt"
    checkpoint_io.atomic_save({"w": torch.zeros(100_000)}, path)  # 400 kB of 1 MiB
    with pytest.raises(NSTError, match="No space left on device.*previous last.ckpt is intact.*Free disk space"):
        checkpoint_io.atomic_save({"w": torch.ones(200_000)}, path)  # 800 kB more does not fit
    assert torch.equal(torch.load(path)["w"], torch.zeros(100_000))
    assert not checkpoint_io.temp_path(path).exists()


def test_an_output_folder_that_cannot_be_written_is_reported_before_training(tmp_path, image_dir, style_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, [f"paths.output_dir={blocker / 'run'}"])
    with pytest.raises(NSTError, match=r"cannot write to the output folder .*a_file/run/checkpoints"):
        train(cfg)


def test_checkpoint_io_refuses_nan_weights(tmp_path):
    path = tmp_path / "last.ckpt"
    io = checkpoint_io.AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"net.w": torch.ones(2)}}, path)
    with pytest.raises(NSTError, match=r"refusing to write .*NaN/inf \(net.w\)"):
        io.save_checkpoint({"state_dict": {"net.w": torch.tensor([1.0, float("nan")])}}, path)
    assert torch.equal(torch.load(path)["state_dict"]["net.w"], torch.ones(2))


# -- resumable data order ---------------------------------------------------------------------------------
def test_sampler_resumes_mid_epoch_and_rolls_over_at_the_end():
    full = ResumableSampler(10, seed=3)
    epoch0 = list(full)
    resumed = ResumableSampler(10, seed=3)
    resumed.load_state_dict(full.state_dict(consumed=4))
    assert list(resumed) == epoch0[4:]
    assert list(resumed) == epoch0  # the next iteration of that epoch starts from its beginning
    end = full.state_dict(consumed=10)
    assert (end["epoch"], end["position"]) == (1, 0)
    full.set_epoch(1)
    assert [i for i, _ in full] != [i for i, _ in epoch0]
    with pytest.raises(NSTError, match="same data and devices"):
        ResumableSampler(11, seed=3).load_state_dict(end)


@pytest.mark.parametrize("max_upscale", [None, 1.0])  # torchvision's crop (torch RNG), RandomSquareCrop (Python's)
def test_a_photo_crop_depends_on_its_seed_only(image_dir, max_upscale):
    dataset = ImageFolderDataset(training_images(image_dir), train_transform(16, 0.25, max_upscale=max_upscale))
    first = dataset[(3, 123)]
    random.random(), torch.rand(3)  # whatever ran in between (another photo, a worker's history)
    assert torch.equal(dataset[(3, 123)], first)
    assert not torch.equal(dataset[(3, 124)], first)


class _Recorder(L.LightningModule):
    """A one-parameter module that records a fingerprint of each training batch (its pixel sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(round(float(batch.sum()), 3))
        return (self.w - batch.mean()) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(image_dir: Path, root: Path, max_steps: int, ckpt_path: str | None = None) -> list[float]:
    dm = FolderDataModule(str(image_dir), image_size=8, batch_size=2, num_workers=0, val_count=0, seed=5)
    module = _Recorder()
    every_step = ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        callbacks=[every_step],
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        plugins=checkpoint_io.trainer_plugins(),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module.seen


@pytest.mark.filterwarnings("error:.*dataloader is not resumable")
def test_a_resumed_run_sees_the_same_photos_and_crops_in_the_same_order(tmp_path, image_dir):
    # 9 training photos, batches of 2: 4 batches per epoch; 10 steps cross two epoch boundaries.
    full = _fit(image_dir, tmp_path / "full", 10)
    assert len(full) == 10 and len(set(full[:4])) == 4 and full[:4] != full[4:8]
    for step in (1, 4, 6):  # mid-epoch, at an epoch's end, and in the second epoch
        rest = _fit(image_dir, tmp_path / f"from{step}", 10, str(tmp_path / "full" / f"step={step}.ckpt"))
        assert full[:step] + rest == full, step


# -- divergence guard -------------------------------------------------------------------------------------
class _PoisonBatches(L.Callback):
    """Fills the training batches of the given (0-based) batch numbers with NaN: a bad batch, in place."""

    def __init__(self, batches: set[int]) -> None:
        self.batches = batches
        self.count = 0
        self.weights: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.weights[self.count] = torch.cat([p.detach().flatten().clone() for p in pl_module.net.parameters()])
        if self.count in self.batches:
            batch.fill_(float("nan"))
        self.count += 1


@pytest.mark.slow
def test_a_nan_loss_skips_the_update_and_is_counted(tmp_path, image_dir, style_path):
    poison = _PoisonBatches({1})
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["trainer.max_steps=3", "callbacks.grid.every_n_steps=0"])
    result = train(cfg, extra_callbacks=[poison])
    assert result["metrics"]["train/skipped_steps"] == 1.0
    assert torch.equal(poison.weights[1], poison.weights[2])  # the NaN step changed nothing
    assert not torch.equal(poison.weights[0], poison.weights[1])  # the others did
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["callbacks"]["DivergenceGuard"] == {"skipped": 1, "consecutive": 0}
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_n_nans_in_a_row_stop_the_run_with_a_message_and_finite_weights(tmp_path, image_dir, style_path):
    poison = _PoisonBatches({2, 3, 4, 5})
    extra = ["trainer.max_steps=8", "guard.max_consecutive_nonfinite=3", "callbacks.grid.every_n_steps=0"]
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, extra)
    with pytest.raises(
        NSTError, match=r"training diverged: 3 non-finite losses in a row at step \d+ .*saved the last good"
    ):
        train(cfg, extra_callbacks=[poison])
    assert poison.count == 5  # stopped at the third NaN batch in a row
    ckpt = torch.load(tmp_path / "run/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    saved = _flat_params(ckpt)
    assert torch.isfinite(saved).all()
    assert torch.equal(saved, poison.weights[2])  # the state before the first NaN batch: the last good one


def _flat_params(ckpt: dict) -> torch.Tensor:
    from nst_lightning.models import create_model

    net = create_model("johnson_tiny")
    net.load_state_dict(net_state(ckpt))
    return torch.cat([p.detach().flatten() for p in net.parameters()])


# -- finding the checkpoint to resume from ----------------------------------------------------------------
def test_resume_lookup(tmp_path):
    runs = tmp_path / "outputs/train/starry_night"
    old, new, current = runs / "2026-01-01_00-00-00", runs / "2026-01-02_00-00-00", runs / "2026-01-03_00-00-00"
    for run in (old, new):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints/last.ckpt").write_bytes(b"x")
    os.utime(old / "checkpoints/last.ckpt", (2e9, 2e9))  # the older folder name holds the newer checkpoint
    assert fault.resolve_resume("last", None, current) == str(old / "checkpoints/last.ckpt")
    assert fault.resolve_resume(str(new), None, current) == str(new / "checkpoints/last.ckpt")
    assert fault.resolve_resume(None, "auto", current) is None  # nothing to resume yet: a fresh start
    assert fault.resolve_resume(None, "auto", new) == str(new / "checkpoints/last.ckpt")
    assert fault.resolve_resume(None, None, new) is None
    with pytest.raises(NSTError, match="ckpt_path not found"):
        fault.resolve_resume(str(tmp_path / "nope.ckpt"), None, current)
    with pytest.raises(NSTError, match="no checkpoints/last.ckpt in any run folder"):
        fault.resolve_resume("last", None, tmp_path / "elsewhere/run")
    with pytest.raises(NSTError, match="resume=auto"):
        fault.resolve_resume(None, "yes", current)
