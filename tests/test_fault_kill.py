"""Fault tolerance through the real entry point: SIGKILL, SIGTERM and SIGUSR1 during training, then resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nst_lightning.training import checkpoint_io

from .conftest import REPO, net_state

pytestmark = pytest.mark.slow
STEPS = 12


def start(run_dir: Path, image_dir: Path, style_path: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``python train.py experiment=tiny ...`` writing into ``run_dir`` (fp32, CPU, seed 0, shuffled crops)."""
    args = ["experiment=tiny", "style=custom", f"style.image={style_path}", f"data.root={image_dir}",
            f"hydra.run.dir={run_dir}", f"trainer.max_steps={STEPS}", "callbacks.grid.every_n_steps=2",
            *extra]  # fmt: skip
    # The same Gram/VGG cache for every run, module-scoped fixtures included (conftest sets it per test only).
    cache = {"NST_CACHE_DIR": str(run_dir.parent.parent / "cache"), "HF_HUB_OFFLINE": "1"}
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **cache, **(env or {})}
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=log, stderr=log, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def log_of(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.log").read_text()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "training ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out waiting for training to progress"
        time.sleep(0.02)


def ckpt_step(path: Path) -> int:
    """The global step of ``path``, or -1 if there is none (safe while training writes it: writes are atomic)."""
    if not path.exists():
        return -1
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = net_state(a), net_state(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6), (k, (wa[k] - wb[k]).abs().max())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, image_dir, style_path) -> Path:
    run = tmp_path_factory.mktemp("fault") / "uninterrupted"
    assert finish(start(run, image_dir, style_path)) == 0, log_of(run)[-3000:]
    last = run / "checkpoints/last.ckpt"
    assert ckpt_step(last) == STEPS
    return last


def test_sigkill_after_a_time_based_checkpoint_then_resume_matches_an_uninterrupted_run(
    tmp_path, image_dir, style_path, uninterrupted
):
    run = tmp_path / "killed"
    last = run / "checkpoints/last.ckpt"
    # A checkpoint every 0.1 s of training (validations write best-*.ckpt only, never last.ckpt).
    timed = ["checkpoint.every_minutes=0.002"]
    proc = start(run, image_dir, style_path, *timed)
    wait_for(lambda: ckpt_step(last) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    killed_at = ckpt_step(last)
    assert 3 <= killed_at < STEPS

    resumed = start(run, image_dir, style_path, *timed, "resume=auto")
    assert finish(resumed) == 0, log_of(run)[-3000:]
    assert f"resume=auto: resuming from {last}" in log_of(run)
    assert ckpt_step(last) == STEPS
    assert_same_weights(last, uninterrupted)


def test_sigterm_writes_a_checkpoint_at_the_signal_and_the_resume_matches(
    tmp_path, image_dir, style_path, uninterrupted
):
    run = tmp_path / "terminated"
    last = run / "checkpoints/last.ckpt"
    # No time-based checkpoint in this run (validations write best-*.ckpt only): last.ckpt can only come from
    # the signal.
    quiet = ["checkpoint.every_minutes=600"]
    proc = start(run, image_dir, style_path, *quiet)
    wait_for(lambda: (run / "grids/step_000002.png").exists(), proc)  # training is under way
    assert not last.exists()
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM
    step = ckpt_step(last)
    assert 2 <= step < STEPS
    assert f"SIGTERM received: saved {last} at step {step}" in log_of(run)

    resumed = start(run, image_dir, style_path, *quiet, "resume=auto")
    assert finish(resumed) == 0, log_of(run)[-3000:]
    assert_same_weights(last, uninterrupted)


def test_sigusr1_under_slurm_checkpoints_and_requeues_the_job(tmp_path, image_dir, style_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    scontrol = bin_dir / "scontrol"  # stands in for SLURM's command (no SLURM cluster here)
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "nst", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
    run = tmp_path / "slurm"
    last = run / "checkpoints/last.ckpt"
    proc = start(run, image_dir, style_path, "checkpoint.every_minutes=600", env=slurm)
    wait_for(lambda: (run / "grids/step_000002.png").exists(), proc)
    proc.send_signal(signal.SIGUSR1)
    assert finish(proc) == 0, log_of(run)[-3000:]
    step = ckpt_step(last)
    assert 2 <= step < STEPS
    assert f"SIGUSR1 received: saved {last} at step {step}" in log_of(run)
    assert calls.read_text().split() == ["requeue", "4242"]


WRITER = """
import sys, torch
from nst_lightning.training.checkpoint_io import atomic_save
for i in range(1000):
    atomic_save({"i": i, "w": torch.full((8_000_000,), float(i))}, sys.argv[1])  # 32 MB each
"""


def test_a_kill_during_a_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    tmp = checkpoint_io.temp_path(path)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path)], cwd=REPO)
    try:
        wait_for(lambda: path.exists() and tmp.exists(), proc, timeout=120)  # a new version is being written
        proc.send_signal(signal.SIGKILL)
    finally:
        finish(proc)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(ckpt["w"], torch.full((8_000_000,), float(ckpt["i"])))
