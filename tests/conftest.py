"""Shared fixtures and helpers: small synthetic images, a style image, Hydra config composition, and running
an entry script in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from nst_lightning.cli.config import config_dir

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NST_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python *args`` (an entry script and its overrides) as a user would; output captured as text."""
    env = {**(os.environ if env is None else env), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def net_state(ckpt: Path | str | dict) -> dict[str, torch.Tensor]:
    """The network's weights in a training checkpoint (a path or the loaded dict), without the ``net.`` prefix."""
    if not isinstance(ckpt, dict):
        ckpt = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def synthetic_photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth image with a few edges: gradients plus rectangles, deterministic per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 7 + seed)], axis=-1)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.random(3)
    return Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder tree of 10 small photos (png, jpg, webp, in a subfolder too) and one non-image file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i in range(10):
        ext = ("png", "jpg", "webp")[i % 3]
        folder = root / "sub" if i % 2 else root
        synthetic_photo(48 + i, 40 + 2 * i, seed=i).save(folder / f"img{i}.{ext}")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def style_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64×48 striped, colourful 'painting'."""
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    img = np.stack([0.5 + 0.5 * np.sin(xx / 2), 0.5 + 0.5 * np.cos((xx + yy) / 3), 0.5 + 0.5 * np.sin(yy)], -1)
    path = tmp_path_factory.mktemp("style") / "stripes.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/train.yaml as the CLI would (without Hydra's runtime output dir)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides or [])
    return cfg


def tiny_train_cfg(tmp_path: Path, image_dir: Path, style_path: Path, extra: list[str] | None = None) -> DictConfig:
    """The tiny experiment on synthetic data, writing into ``tmp_path``."""
    cfg = compose_train(
        [
            "experiment=tiny",
            "style=custom",
            f"style.image={style_path}",
            f"data.root={image_dir}",
            f"paths.output_dir={tmp_path / 'run'}",
            *(extra or []),
        ]
    )
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, image_dir: Path, style_path: Path) -> tuple[DictConfig, dict]:
    """The one tiny trained model the tests share: ``(cfg, train(cfg))`` of the tiny experiment (4 steps,
    validation at steps 2 and 4, grids every 2 steps). Read it, never write into its folder."""
    from nst_lightning.cli.train import run

    cfg = tiny_train_cfg(tmp_path_factory.mktemp("tiny_run"), image_dir, style_path)
    return cfg, run(cfg)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run: tuple[DictConfig, dict]) -> Path:
    """``last.ckpt`` of :func:`tiny_run`."""
    return Path(tiny_run[1]["last_ckpt"])


class ObjectiveRecorder(L.Callback):
    """Records the training objective of every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


@dataclass
class RedisServer:
    """A real redis-server started by a test: its URL and process (to stop, kill or SIGSTOP it)."""

    url: str
    proc: subprocess.Popen


def start_redis(folder: Path, port: int | None = None) -> RedisServer:
    """redis-server on a free (or the given) loopback port in ``folder``, without persistence; skips the test when
    the binary is missing (CI installs it)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
         "--appendonly", "no", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return RedisServer(f"redis://127.0.0.1:{port}/0", proc)
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.proc.send_signal(signal.SIGCONT)  # in case the test stopped it
        server.proc.terminate()
        server.proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a real redis-server on a free loopback port (see :func:`start_redis`)."""
    return redis_server.url
