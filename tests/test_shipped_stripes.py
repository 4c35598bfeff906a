"""Shipped models must keep smooth gradients free of stripes and flat images free of texture.

The metric is :func:`nst_lightning.evaluation.metrics.oriented_texture` on 128-px synthetic images (CPU):
``stripe_rms``, the RMS luma of the texture that runs along one direction beyond what the other directions
carry, and ``texture_rms`` for flat images. The thresholds come from the controls below: sinusoidal stripes of
amplitude 0.03 (about 8 grey levels, plainly visible on a smooth sky) score 0.021; isotropic noise as strong as
0.1 RMS (more texture than the shipped model paints) scores 0.012; so a stylized gradient may keep at most
0.015 of oriented texture. A flat image must stay within 0.005 RMS of flat (about 1.3 grey levels).

Measured on the shipped starry_night (fp16 export, 128 px), the bare network: diagonal gradient 0.0215 (a regular
cross-hatching over the swirls), vertical "sky" gradient 0.060 (the sky becomes horizontal stripes: a
translation-equivariant network can only answer an input that is constant along x with an output that is constant
along x, away from the side borders, so any texture it paints there is stripes), flat colours 0.0000.

The sky's stripes have an inference-side cure, on by default in ``stylize()``: seeded input noise
(:mod:`nst_lightning.inference.noise`) turns them into the style's texture: stripe_share 0.78 → 0.07 (the diagonal
gradient's own level) and stripe_rms 0.060 → 0.028; that is tested below for every shipped model. What is left,
0.025–0.028 on both gradients with the cure, is the network's own hatching, which needs retraining; so the absolute
test (run the way users run it, through ``stylize()``) stays xfail(strict=True) for starry_night, and a retrained
model that passes will turn the xfail into an error, so the mark must then be removed.

The shipped five-style network was retrained with the regulariser against oriented texture on smooth inputs
(``smooth.weight``, :mod:`nst_lightning.training.smooth`) and passes both tests for every style
(docs/results/multistyle_stripes_cpu.md).
"""

import math

import pytest
import torch

from nst_lightning.evaluation.metrics import oriented_texture, smooth_test_images
from nst_lightning.inference import Stylizer, choose_style, load_model, prepare_model, pretrained_models, stylize

SIZE = 128
STRIPE_MAX = 0.015  # RMS luma of oriented texture allowed on a stylized smooth gradient
FLAT_MAX = 0.005  # RMS luma of any fine texture allowed on a stylized flat image

# Shipped models measured to fail the stripe test (figures at SIZE px; see the module docstring).
KNOWN_STRIPY = {
    "starry_night": "with the default input noise: stripe_rms 0.025 on the diagonal gradient and 0.028 on the sky "
    "gradient (threshold 0.015): the network's own cross-hatching, which needs retraining",
}
# Shipped styles whose sky stripes the default input noise does not bring down to 0.6x of the bare network's.
KNOWN_UNCURED: dict[str, str] = {}


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")


def gradients() -> dict[str, torch.Tensor]:
    """1×3×SIZE×SIZE smooth images: a colour ramp along both axes and a sky-like ramp along y only."""
    return smooth_test_images(SIZE)


def flats() -> dict[str, torch.Tensor]:
    colours = {"grey": (0.5, 0.5, 0.5), "blue": (0.4, 0.6, 0.9), "skin": (0.85, 0.65, 0.55)}
    return {k: torch.tensor(c).view(1, 3, 1, 1).expand(1, 3, SIZE, SIZE).clone() for k, c in colours.items()}


def _shipped() -> list[str]:
    """``name`` of each shipped single-style model and ``name:style`` for each style of a multi-style one."""
    out = []
    for name, path in pretrained_models().items():
        styles = load_model(path).net.style_names
        out += [f"{name}:{s}" for s in styles] if len(styles) > 1 else [name]
    return out


def _models(stripe_test: bool, known: dict[str, str] | None = None) -> list:
    known = KNOWN_STRIPY if stripe_test else (known or {})
    params = []
    for name in _shipped():
        marks = [pytest.mark.xfail(strict=True, reason=known[name])] if name in known else []
        params.append(pytest.param(name, marks=marks))
    return params


# -- the metric and its thresholds, on controls -----------------------------------------------------------
def test_metric_flags_stripes_and_hatching_but_not_isotropic_texture():
    yy, xx = _grid()
    base = gradients()["diagonal"]
    clean = oriented_texture(base)["stripe_rms"]
    assert clean < 0.001
    for pattern in (torch.sin(2 * math.pi * yy * (SIZE - 1) / 4),  # horizontal stripes, period 4 px
                    torch.sin(2 * math.pi * xx * (SIZE - 1) / 9),  # vertical stripes, period 9 px
                    torch.sin(2 * math.pi * (xx + yy) * (SIZE - 1) / 6)):  # diagonal hatching  # fmt: skip
        assert oriented_texture((base + 0.03 * pattern).clamp(0, 1))["stripe_rms"] > STRIPE_MAX
    torch.manual_seed(0)
    noisy = (base + 0.1 * torch.randn(1, 1, SIZE, SIZE)).clamp(0, 1)
    m = oriented_texture(noisy)
    assert m["texture_rms"] > 0.08 and m["stripe_rms"] < STRIPE_MAX


def test_flat_metric_sees_faint_periodic_texture_but_not_8_bit_rounding():
    yy, xx = _grid()
    grey = flats()["grey"]
    texture = 0.015 * torch.sin(2 * math.pi * xx * (SIZE - 1) / 5) * torch.sin(2 * math.pi * yy * (SIZE - 1) / 7)
    assert oriented_texture(grey + texture)["texture_rms"] > FLAT_MAX  # ±4 grey levels of 255 (RMS 0.0075)
    torch.manual_seed(0)
    rounding = (torch.rand(1, 1, SIZE, SIZE) - 0.5) / 255
    assert oriented_texture(grey + rounding)["texture_rms"] < FLAT_MAX / 2


# -- every shipped model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets() -> dict[str, Stylizer]:
    """Each shipped network (a multi-style one once per style), ready to run."""
    runners = {}
    for key in _shipped():
        name, _, style = key.partition(":")
        runner = prepare_model(load_model(name).net)
        runners[key] = choose_style(runner, style) if style else runner
    return runners


def test_at_least_one_model_ships():
    assert pretrained_models()


@pytest.mark.parametrize("name", _models(stripe_test=False))
def test_flat_images_stay_flat(nets, name):
    for colour, image in flats().items():
        texture = float(oriented_texture(nets[name](image))["texture_rms"][0])
        assert texture <= FLAT_MAX, f"{name} paints texture {texture:.4f} RMS into a flat {colour} image"


@pytest.mark.parametrize("name", _models(stripe_test=False, known=KNOWN_UNCURED))
def test_default_input_noise_turns_sky_stripes_into_texture(nets, name):
    sky = gradients()["sky"]
    bare = oriented_texture(nets[name](sky))
    cured = oriented_texture(stylize(sky, nets[name]))  # the library default: seeded input noise
    share, rms = float(cured["stripe_share"][0]), float(cured["stripe_rms"][0])
    assert share <= 0.15, (
        f"{name}: {share:.3f} of the sky's texture runs one way (bare network {float(bare['stripe_share'][0]):.3f})"
    )
    assert rms <= max(0.6 * float(bare["stripe_rms"][0]), STRIPE_MAX), f"{name}: sky stripe_rms {rms:.4f}"


@pytest.mark.parametrize("name", _models(stripe_test=True))
def test_smooth_gradients_stay_free_of_stripes(nets, name):
    scores = {k: float(oriented_texture(stylize(x, nets[name]))["stripe_rms"][0]) for k, x in gradients().items()}
    assert max(scores.values()) <= STRIPE_MAX, f"{name}: oriented texture {scores} above {STRIPE_MAX}"
