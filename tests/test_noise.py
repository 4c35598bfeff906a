"""The seeded input noise that keeps smooth skies from turning into stripes (nst_lightning.inference.noise)."""

import pytest
import torch

from nst_lightning.errors import NSTError
from nst_lightning.evaluation.metrics import smooth_test_images
from nst_lightning.image import load_image, save_image
from nst_lightning.inference import load_model, stylize
from nst_lightning.inference.noise import BLOCK, InputNoise, noise_window, smooth_mask, smooth_mask_window


def test_same_seed_same_noise_other_seed_other_noise():
    a = noise_window(0, 0, 70, 0, 90)
    assert a.shape == (1, 3, 70, 90)
    assert torch.equal(a, noise_window(0, 0, 70, 0, 90))
    assert not torch.allclose(a, noise_window(1, 0, 70, 0, 90))
    assert abs(float(a.std()) - 1) < 0.05 and abs(float(a.mean())) < 0.05


def test_any_window_gets_the_noise_the_whole_image_gets_there():
    whole = noise_window(3, 0, 3 * BLOCK + 7, 0, 2 * BLOCK + 5)
    for y0, y1, x0, x1 in [(0, 10, 0, 10), (BLOCK - 3, 2 * BLOCK + 4, 5, BLOCK + 1), (50, 3 * BLOCK + 7, 60, 130)]:
        assert torch.equal(noise_window(3, y0, y1, x0, x1), whole[..., y0:y1, x0:x1])


def test_tiles_of_an_image_agree_with_the_whole_image_smooth_only_too():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 150, 200)
    image[..., :60, :] = smooth_test_images(200)["sky"][..., :60, :]  # a smooth band with texture below it
    for noise in (InputNoise(0.05), InputNoise(0.05, smooth_only=True)):
        whole = noise.add(image)
        tile = noise.add(image[..., 40:140, 70:190], 40, 70, context=image)
        assert torch.equal(tile, whole[..., 40:140, 70:190])


def test_smooth_mask_is_one_on_a_sky_and_near_zero_on_texture():
    sky = smooth_test_images(96)["sky"]
    torch.manual_seed(0)
    texture = torch.rand(1, 3, 96, 96)
    assert float(smooth_mask(sky).min()) > 0.95
    assert float(smooth_mask(texture).max()) < 0.05
    assert smooth_mask((sky * 255).to(torch.uint8)).shape == (1, 1, 96, 96)
    assert torch.allclose(smooth_mask_window(texture, 10, 50, 20, 60), smooth_mask(texture)[..., 10:50, 20:60])


def test_zero_strength_is_the_identity_and_bad_strengths_are_refused():
    x = torch.rand(1, 3, 20, 20)
    assert InputNoise(0.0).add(x) is x
    for bad in (-0.1, 2.0, float("nan"), True, "0.1"):
        with pytest.raises(NSTError, match="input_noise"):
            InputNoise(bad)


# -- in the stylize core ------------------------------------------------------------------------------------
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def test_stylize_adds_the_default_noise_repeatably_and_zero_turns_it_off():
    image = smooth_test_images(80)["sky"]
    noisy = stylize(image, _identity)
    assert torch.equal(noisy, stylize(image, _identity))  # seeded: the same result every call
    assert float((noisy - image).abs().max()) > 0.01
    assert torch.allclose(stylize(image, _identity, input_noise=0), image)
    assert torch.allclose(noisy, InputNoise().add(image).clamp(0, 1))
    with pytest.raises(NSTError, match="input_noise"):
        stylize(image, _identity, input_noise=-1)


def test_tiles_get_the_whole_image_noise_so_tiled_equals_untiled():
    torch.manual_seed(0)
    image = smooth_test_images(300)["sky"][..., :220, :]
    image[..., 150:, :] = torch.rand(1, 3, 70, 300)  # texture below the sky: the smooth-only mask varies
    for noise in (InputNoise(0.05), InputNoise(0.05, smooth_only=True)):
        whole = stylize(image, _identity, input_noise=noise)
        tiled = stylize(image, _identity, input_noise=noise, tile_size=96, tile_overlap=24)
        assert torch.allclose(tiled, whole, atol=1e-5)


def test_stylize_cli_passes_the_noise_options(tmp_path):
    from hydra import compose, initialize_config_dir

    from nst_lightning.cli.config import config_dir
    from nst_lightning.cli.stylize import run

    photo = tmp_path / "sky.png"
    save_image(smooth_test_images(64)["sky"], photo)
    written = {}
    for name, extra in (("default", []), ("off", ["input_noise=0"])):
        overrides = ["ckpt=starry_night", f"input={photo}", f"output={tmp_path / name}.png", "device=cpu", *extra]
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            written[name] = load_image(run(compose("stylize", overrides=overrides))[0])
    net = load_model("starry_night").net
    assert torch.allclose(written["off"], stylize(load_image(photo), net, input_noise=0), atol=1 / 255)
    assert torch.allclose(written["default"], stylize(load_image(photo), net), atol=1 / 255)
    assert not torch.allclose(written["default"], written["off"], atol=2 / 255)
