"""Recipe levers (docs/quality.md): decoder upsampling, padding, crops that are never upscaled, a learning-rate schedule
over the time budget, an EMA of the weights, and torch.compile's mode."""

import math
import random
from types import SimpleNamespace

import lightning as L
import lightning.pytorch.callbacks.timer as lightning_timer
import pytest
import torch

from nst_lightning.cli.train import build_module
from nst_lightning.cli.train import run as train
from nst_lightning.data.datasets import RandomSquareCrop, train_transform
from nst_lightning.errors import NSTError
from nst_lightning.inference import load_model
from nst_lightning.models import create_model
from nst_lightning.models.blocks import UpsampleConv
from nst_lightning.training.callbacks import NetworkEMA, ema_callbacks

from .conftest import ObjectiveRecorder, compose_train, net_state, tiny_train_cfg


# -- networks -------------------------------------------------------------------------------------------
def test_default_johnson_keeps_the_shipped_models_state_dict_keys():
    shipped = load_model("starry_night").net.state_dict()
    assert set(create_model("johnson").state_dict()) == set(shipped)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "pixel_shuffle"])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_johnson_options_keep_shape_and_range(upsample, padding):
    net = create_model("johnson_tiny", upsample=upsample, padding=padding)
    y = net(torch.rand(2, 3, 37, 50))
    assert y.shape == (2, 3, 37, 50) and y.min() >= 0 and y.max() <= 1


def test_bilinear_shares_the_nearest_layout_but_resamples_differently():
    nearest = create_model("johnson_tiny")
    bilinear = create_model("johnson_tiny", upsample="bilinear")
    bilinear.load_state_dict(nearest.state_dict())  # same keys and shapes
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(nearest(x), bilinear(x))


def test_pixel_shuffle_starts_without_a_sub_pixel_checkerboard():
    """ICNR init: the four sub-pixels of every 2×2 output block come from one kernel, so they are equal."""
    torch.manual_seed(0)
    stage = UpsampleConv(8, 4, norm="none", upsample="pixel_shuffle")
    y = stage(torch.rand(1, 8, 6, 6))
    assert y.shape == (1, 4, 12, 12)
    for dy, dx in [(0, 1), (1, 0), (1, 1)]:
        torch.testing.assert_close(y[..., dy::2, dx::2], y[..., 0::2, 0::2])


def test_padding_changes_only_the_border():
    # without instance norm (whose statistics span the whole image) the padding is felt only near the border
    reflect = create_model("johnson_tiny", norm="none").eval()
    zero = create_model("johnson_tiny", norm="none", padding="zero").eval()
    zero.load_state_dict(reflect.state_dict())
    x = torch.rand(1, 3, 64, 64)
    a, b = reflect(x), zero(x)
    assert not torch.allclose(a, b)
    # the receptive field of johnson_tiny is 45 px: 28 px from every border the outputs are identical
    torch.testing.assert_close(a[..., 28:36, 28:36], b[..., 28:36, 28:36])


def test_unknown_upsample_or_padding_is_a_clear_error():
    with pytest.raises(ValueError, match="upsample"):
        create_model("johnson", upsample="transposed")
    with pytest.raises(ValueError, match="padding"):
        create_model("johnson", padding="circular")


# -- data -----------------------------------------------------------------------------------------------
def _span_of_x(transform, width: int = 160, height: int = 120, size: int = 96, draws: int = 60) -> float:
    """Smallest horizontal extent (in source pixels) that the crops cover, from an x-coordinate ramp."""
    ramp = torch.arange(width, dtype=torch.float32).expand(3, height, width).clone()
    spans = []
    for seed in range(draws):
        torch.manual_seed(seed)
        random.seed(seed)
        out = transform(ramp)
        assert out.shape == (3, size, size)
        row = out[0, size // 2]
        spans.append(float(row[-2] - row[1]) * size / (size - 3))
    return min(spans)


def test_max_upscale_one_never_magnifies_a_crop():
    size = 96
    assert _span_of_x(RandomSquareCrop(size, min_scale=0.05, max_upscale=1.0)) >= size - 2
    # without the limit, small crops of a 120-px-high photo are magnified
    assert _span_of_x(train_transform(size, min_scale=0.05, hflip=False)) < size - 10


def test_datamodule_passes_max_upscale(image_dir):
    from nst_lightning.data.datamodule import FolderDataModule

    dm = FolderDataModule(str(image_dir), image_size=24, val_count=2, max_upscale=1.0, num_workers=0)
    dm.setup()
    assert isinstance(dm.train_set.transform.transforms[0], RandomSquareCrop)
    assert dm.train_set[0].shape == (3, 24, 24)


# -- learning-rate schedule over the time budget ---------------------------------------------------------
def test_cosine_time_without_a_time_budget_is_a_clear_error(tmp_path, image_dir, style_path):
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, ["optim.lr_schedule=cosine_time"])
    with pytest.raises(NSTError, match="max_time"):
        train(cfg)


class _LR(ObjectiveRecorder):
    """The learning rate after each optimiser step (the scheduler has stepped by on_train_batch_end)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(trainer.optimizers[0].param_groups[0]["lr"])


def _last_lr(ckpt_path) -> float:
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["lr_schedulers"][0]["_last_lr"][0]


class _StepClock(L.Callback):
    """The clock Lightning's Timer reads in this test: every training step costs one second, whatever the
    machine's load, so a ``max_time`` of N seconds is N steps and the schedule's values are exact."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(lightning_timer, "time", SimpleNamespace(monotonic=lambda: self.now))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.now += 1.0


def _cosine(progress: float, lr: float = 1e-3) -> float:
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.slow
def test_cosine_time_decays_over_max_time_and_resumes_its_clock(tmp_path, image_dir, style_path, monkeypatch):
    over = ["optim.lr_schedule=cosine_time", "optim.min_lr_ratio=0.0", "trainer.max_steps=100000",
            "++trainer.max_time=00:00:00:04", "trainer.val_check_interval=1000", "data.val_count=0",
            "callbacks.grid.every_n_steps=0"]  # fmt: skip
    first_lr = _LR()
    first = train(tiny_train_cfg(tmp_path / "a", image_dir, style_path, over),
                  extra_callbacks=[_StepClock(monkeypatch), first_lr])  # fmt: skip
    # stopped by max_time (4 s: 4 steps of the step clock), the run reached the end of its schedule; a step-based
    # cosine over max_steps would have stayed near 1e-3
    assert first["global_step"] == 4
    assert first_lr.values == pytest.approx([_cosine(s / 4) for s in (1, 2, 3, 4)], abs=1e-12)
    assert _last_lr(first["last_ckpt"]) == pytest.approx(0.0, abs=1e-12)
    # resumed with a doubled budget, the clock goes on from the 4 s already spent (saved by Lightning's Timer):
    # the first resumed step is at 5 s of 8 (a restarted clock would give 1 s of 8: a rate near 1e-3)
    resumed = _LR()
    over2 = [*over[:3], "++trainer.max_time=00:00:00:08", *over[4:], f"ckpt_path={first['last_ckpt']}"]
    result = train(tiny_train_cfg(tmp_path / "b", image_dir, style_path, over2),
                   extra_callbacks=[_StepClock(monkeypatch), resumed])  # fmt: skip
    assert result["global_step"] == 8
    assert resumed.values == pytest.approx([_cosine(s / 8) for s in (5, 6, 7, 8)], abs=1e-12)
    assert _last_lr(result["last_ckpt"]) == pytest.approx(0.0, abs=1e-12)


# -- exponential moving average of the weights -----------------------------------------------------------
def test_ema_is_off_by_default_and_built_from_the_config():
    assert ema_callbacks(compose_train().ema) == []
    (cb,) = ema_callbacks(compose_train(["ema.decay=0.99", "ema.start_step=5"]).ema)
    assert isinstance(cb, NetworkEMA) and cb.decay == 0.99 and cb.start_step == 5
    with pytest.raises(NSTError, match="decay"):
        NetworkEMA(decay=1.5)


def _net_state(ckpt_path):
    raw = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return raw, net_state(raw)


@pytest.mark.slow
def test_ema_weights_are_checkpointed_exported_and_resume_exactly(tmp_path, image_dir, style_path):
    over = ["ema.decay=0.5", "data.shuffle=false", "data.augment=false", "trainer.val_check_interval=2"]
    straight = train(tiny_train_cfg(tmp_path / "straight", image_dir, style_path, [*over, "trainer.max_steps=6"]))
    raw, ema_state = _net_state(straight["last_ckpt"])
    cb_state = next(v for k, v in raw["callbacks"].items() if k.startswith("NetworkEMA"))
    assert cb_state["updates"] == 6
    # the state_dict holds the average, the callback state the raw training weights: they differ
    assert any(not torch.equal(ema_state[k], cb_state["raw_net"][k]) for k in ema_state)
    # inference and export load the average
    loaded = load_model(straight["last_ckpt"]).net.state_dict()
    assert all(torch.equal(loaded[k], ema_state[k]) for k in ema_state)
    # interrupted after 4 steps and resumed to 6: the same average and raw weights as the straight run
    first = train(tiny_train_cfg(tmp_path / "a", image_dir, style_path, [*over, "trainer.max_steps=4"]))
    resumed = train(
        tiny_train_cfg(tmp_path / "b", image_dir, style_path,
                       [*over, "trainer.max_steps=6", f"ckpt_path={first['last_ckpt']}"])
    )  # fmt: skip
    raw2, ema2 = _net_state(resumed["last_ckpt"])
    cb2 = next(v for k, v in raw2["callbacks"].items() if k.startswith("NetworkEMA"))
    for k in ema_state:
        torch.testing.assert_close(ema2[k], ema_state[k])
        torch.testing.assert_close(cb2["raw_net"][k], cb_state["raw_net"][k])


@pytest.mark.slow
def test_validation_runs_on_the_average(tmp_path, image_dir, style_path):
    """With decay close to 1 and a huge learning rate, raw weights move far while the average barely does:
    val/objective must be that of the average (the state_dict of the best checkpoint)."""
    over = ["ema.decay=0.999", "ema.start_step=0", "optim.lr=0.05", "trainer.max_steps=4", "data.augment=false"]
    cfg = tiny_train_cfg(tmp_path, image_dir, style_path, over)
    result = train(cfg)
    module = build_module(cfg, str(style_path))
    module.setup("validate")
    raw, ema_state = _net_state(result["last_ckpt"])
    module.net.load_state_dict(ema_state)
    from nst_lightning.data.datamodule import FolderDataModule

    dm = FolderDataModule(str(image_dir), image_size=32, val_count=2, val_size=32, num_workers=0)
    dm.setup()
    batch = torch.stack([dm.val_set[i] for i in range(len(dm.val_set))])
    with torch.no_grad():
        expected = float(module.loss_fn(module.net(batch), batch)["objective"])
    assert result["metrics"]["val/objective"] == pytest.approx(expected, rel=1e-4)


# -- torch.compile mode ----------------------------------------------------------------------------------
def test_compile_mode_reaches_the_module(style_path):
    cfg = compose_train(["model=johnson_tiny", "model.compile_mode=max-autotune"])
    module = build_module(cfg, str(style_path))
    assert module.hparams.runtime["compile_mode"] == "max-autotune"
    assert "compile_mode" not in module.hparams.model["kwargs"]  # not an argument of the network's builder
