"""The training regulariser against stripes on smooth inputs: its term, its images and its wiring."""

import math
from functools import partial

import lightning as L
import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.evaluation.metrics import oriented_texture, smooth_test_images
from nst_lightning.training.hparams import SmoothGroup
from nst_lightning.training.module import StyleTransferModule
from nst_lightning.training.smooth import oriented_excess, random_smooth_images, smoothest_windows, window_excess

SIZE = 128


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")


def test_term_is_the_stripe_figure_on_stripes_and_about_zero_on_flat_or_isotropic_outputs():
    yy, xx = _grid()
    base = smooth_test_images(SIZE)["sky"]
    striped = (base + 0.03 * torch.sin(2 * math.pi * yy * (SIZE - 1) / 4)).clamp(0, 1)  # the sky's bands
    hatched = (base + 0.03 * torch.sin(2 * math.pi * (xx + yy) * (SIZE - 1) / 6)
               + 0.03 * torch.sin(2 * math.pi * (xx - yy) * (SIZE - 1) / 6)).clamp(0, 1)  # fmt: skip
    flat = torch.full((1, 3, SIZE, SIZE), 0.5)
    torch.manual_seed(0)
    noisy = (flat + 0.05 * torch.randn(1, 1, SIZE, SIZE)).clamp(0, 1)
    term = oriented_excess(torch.cat([striped, hatched, flat, base, noisy]))
    assert term.shape == (5,)
    stripe_rms = float(oriented_texture(striped)["stripe_rms"][0])
    assert float(term[0]) == pytest.approx(stripe_rms, rel=0.05) and stripe_rms > 0.015
    assert float(term[1]) > 0.015  # a cross-hatching
    assert float(term[2]) < 0.002 and float(term[3]) < 0.002  # flat, smooth gradient: the floor only
    assert float(term[4]) < 0.4 * float(term[0])  # isotropic noise of more power than the stripes


def test_term_has_finite_gradients_that_flatten_stripes():
    yy, _ = _grid()
    image = (0.5 + 0.03 * torch.sin(2 * math.pi * yy * (SIZE - 1) / 5)).expand(1, 3, SIZE, SIZE).clone()
    flat = torch.full((1, 3, SIZE, SIZE), 0.5, requires_grad=True)
    oriented_excess(flat).sum().backward()
    assert torch.isfinite(flat.grad).all()
    image.requires_grad_(True)
    before = oriented_excess(image).sum()
    before.backward()
    with torch.no_grad():
        after = oriented_excess(image - 0.5 * image.grad / image.grad.norm() * 3.0).sum()
    assert float(after) < float(before.detach())


def test_random_smooth_images_are_smooth_varied_and_never_the_test_images():
    photos = torch.rand(2, 3, 64, 80)  # even pure noise photos come out smooth once blurred this much
    images = random_smooth_images(6, SIZE, photos, torch.Generator().manual_seed(0))
    assert images.shape == (6, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    # little fine texture (the finest fields and blurred photos keep some at periods just under 32 px), against
    # the ≈ 0.1 RMS a style paints
    assert float(oriented_texture(images)["texture_rms"].max()) < 0.01
    gaps = (images[:, None] - images[None]).abs().flatten(2).amax(2) + torch.eye(6)
    assert float(gaps.min()) > 0.01  # six different images
    again = random_smooth_images(6, SIZE, photos, torch.Generator().manual_seed(0))
    assert torch.equal(images, again)
    for test_image in smooth_test_images(SIZE).values():
        assert (images - test_image).abs().flatten(1).amax(1).min() > 0.01


def test_group_refuses_bad_values():
    assert SmoothGroup().weight == 0
    for values, message in (({"weight": -1.0}, "smooth.weight must be >= 0"),
                            ({"weight": float("nan")}, "smooth.weight must be >= 0"),
                            ({"batch_size": 0}, "smooth.batch_size"), ({"size": 8}, "smooth.size"),
                            ({"sky_weight": -1.0}, "smooth.sky_weight"), ({"sky_window": 8}, "smooth.sky_window"),
                            ({"wieght": 1.0}, "unknown smooth key")):  # fmt: skip
        with pytest.raises(NSTError, match=message):
            SmoothGroup.from_dict(values, "smooth")


def _record(into: dict, name: str, value: torch.Tensor, **kwargs) -> None:
    into[name] = value


def test_weight_adds_the_term_to_the_training_loss_and_zero_leaves_it_out(tiny_ckpt):
    hparams = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    common = {k: hparams[k] for k in ("model", "style", "loss", "runtime")}
    batch = torch.rand(2, 3, 32, 32)
    losses = {}
    for weight in (0.0, 50.0):
        module = StyleTransferModule(**common, smooth={"weight": weight, "size": 64})
        module.net.load_state_dict({k[4:]: v for k, v in torch.load(tiny_ckpt, weights_only=True)["state_dict"].items()
                                    if k.startswith("net.")})  # fmt: skip
        module.setup("fit")
        module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        logged = {}
        module.log = partial(_record, logged)  # outside a fit loop
        losses[weight] = float(module.training_step(batch, 0).detach())
        if weight:
            assert float(logged["train/smooth_stripes"]) > 0
            assert dict(module.hparams)["smooth"]["weight"] == weight
        else:
            assert "train/smooth_stripes" not in logged
    extra = losses[50.0] - losses[0.0]
    assert extra > 50.0 * 0.001  # at least the term's floor, weighted


def _keep_arg(into: list, index: int, module: torch.nn.Module, args: tuple) -> None:
    into.append(args[index].detach().clone())


def test_photo_noise_gives_the_network_the_inference_noise_and_the_loss_the_clean_photo(tiny_ckpt):
    hparams = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    common = {k: hparams[k] for k in ("model", "style", "loss", "runtime")}
    flat = torch.full((2, 3, 48, 48), 0.4)  # smooth everywhere: the noise mask is 1
    for photo_noise in (False, True):
        module = StyleTransferModule(**common, smooth={"photo_noise": photo_noise})
        module.setup("fit")
        module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        module.log = partial(_record, {})
        seen: list[torch.Tensor] = []
        scored: list[torch.Tensor] = []
        module.net.register_forward_pre_hook(partial(_keep_arg, seen, 0))
        module.loss_fn.register_forward_pre_hook(partial(_keep_arg, scored, 1))
        module.training_step(flat, 0)
        assert torch.equal(scored[0], flat)
        noise = seen[0] - flat
        if photo_noise:
            assert 0.03 < float(noise.std()) < 0.05  # the default strength, 0.04
        else:
            assert torch.equal(noise, torch.zeros_like(noise))


def _photo_with_sky(seed: int) -> torch.Tensor:
    """1×3×96×96: textured noise everywhere but a flat blue square at rows 8–56, columns 40–88."""
    photo = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(seed))
    photo[0, :, 8:56, 40:88] = torch.tensor([0.4, 0.6, 0.9])[:, None, None]
    return photo


def test_smoothest_windows_find_the_sky_and_weigh_textured_crops_zero():
    photos = torch.cat([_photo_with_sky(0), torch.rand(1, 3, 96, 96)])
    corners, weights = smoothest_windows(photos, 32)
    y, x = corners[0]
    assert 8 <= y <= 56 - 32 and 40 <= x <= 88 - 32  # inside the smooth square
    assert float(weights[0]) > 0.5 and float(weights[1]) == 0


def test_window_excess_penalises_stripes_in_the_sky_window_only():
    photos = _photo_with_sky(1).expand(2, 3, 96, 96).clone()
    corners, weights = smoothest_windows(photos, 32)
    yy, xx = _grid()
    stripes = 0.5 + 0.1 * torch.sin(2 * math.pi * (xx + yy) * SIZE / 8)  # period 8 px along the diagonal
    out = photos.clone()
    out[0] = stripes[:96, :96]
    clean = window_excess(photos, corners, weights, 32)
    striped = window_excess(out, corners, weights, 32)
    assert float(striped) > 10 * float(clean)
    assert float(window_excess(out, corners, torch.zeros(2), 32)) == 0


def test_sky_weight_adds_the_sky_term_to_the_training_loss(tiny_ckpt):
    hparams = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    common = {k: hparams[k] for k in ("model", "style", "loss", "runtime")}
    batch = torch.nn.functional.interpolate(_photo_with_sky(2), size=64).expand(2, 3, 64, 64).clone()
    losses = {}
    for weight in (0.0, 1000.0):
        module = StyleTransferModule(**common, smooth={"sky_weight": weight, "sky_window": 32})
        module.setup("fit")
        module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
        logged = {}
        module.log = partial(_record, logged)
        torch.manual_seed(0)
        losses[weight] = float(module.training_step(batch, 0).detach())
        assert ("train/sky_stripes" in logged) == bool(weight)
    assert losses[1000.0] - losses[0.0] > 1000.0 * 0.001 * 0.5  # the term's floor, weighted by the sky's weight
