"""Zero-shot style transfer: the feature transforms, the decoder, the model, the CLI and the shipped decoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from nst_lightning.cli.config import config_dir
from nst_lightning.errors import NSTError
from nst_lightning.inference.zeroshot import ZeroShotModel, adain, feature_stats, read_decoder, transform, wct
from nst_lightning.losses.vgg import VGG19Features
from nst_lightning.models.decoder import VGGDecoder

from .conftest import synthetic_photo


def correlated(channels: int, h: int, w: int, seed: int, shift: float) -> torch.Tensor:
    """C×H×W features with channel correlations, non-zero means and unequal scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(channels, channels, generator=g)
    return (mix @ torch.randn(channels, h * w, generator=g)).reshape(channels, h, w) + shift


def test_adain_matches_the_targets_channel_mean_and_std() -> None:
    content, style = correlated(16, 12, 10, 0, 1.0), correlated(16, 20, 20, 1, 5.0) * 3
    target, out = feature_stats(style), feature_stats(adain(content, feature_stats(style)))
    assert torch.allclose(out.mean, target.mean, atol=1e-4)
    assert torch.allclose(out.std, target.std, rtol=1e-4)
    assert not torch.allclose(out.covariance, target.covariance, rtol=0.1)  # AdaIN leaves correlations alone


def test_wct_matches_the_targets_mean_and_covariance() -> None:
    content, style = correlated(16, 12, 10, 2, -2.0), correlated(16, 20, 20, 3, 4.0)
    target, out = feature_stats(style), feature_stats(wct(content, feature_stats(style)))
    assert torch.allclose(out.mean, target.mean, atol=1e-4)
    scale = target.covariance.abs().max()
    assert (out.covariance - target.covariance).abs().max() < 1e-4 * scale


def test_fixed_content_statistics_make_a_crop_transform_like_the_whole() -> None:
    whole, style = correlated(8, 16, 16, 4, 0.5), feature_stats(correlated(8, 10, 10, 5, 2.0))
    stats = feature_stats(whole)
    for method in ("wct", "adain"):
        full = transform(whole, method, style)
        crop = transform(whole[:, 2:9, 3:12], method, style, content=stats)
        assert torch.allclose(crop, full[:, 2:9, 3:12], atol=1e-4)
        assert not torch.allclose(transform(whole[:, 2:9, 3:12], method, style), crop, atol=1e-2)


@pytest.mark.parametrize("level", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
def test_decoder_mirrors_vgg_back_to_the_image_size(level: str) -> None:
    vgg = VGG19Features([level], weights="random")
    decoder = VGGDecoder(level, width=1 / 16)
    x = torch.rand(1, 3, 32, 40)
    assert decoder(vgg(x)[level]).shape == x.shape


def tiny_model(method: str = "wct", refine_steps: int = 0) -> ZeroShotModel:
    torch.manual_seed(0)
    decoders = [VGGDecoder("relu2_1", 1 / 16), VGGDecoder("relu1_1", 1 / 16)]
    vgg = VGG19Features(["relu2_1"], weights="random")
    return ZeroShotModel(decoders, method=method, vgg=vgg, refine_steps=refine_steps).eval()


@pytest.mark.parametrize("method", ["wct", "adain"])
def test_output_changes_with_the_style_image(method: str) -> None:
    model = tiny_model(method)
    photo = torch.rand(1, 3, 30, 45)  # any size: padded to the decoders' multiple inside
    stripes = torch.from_numpy(np.array(synthetic_photo(40, 32, seed=7), dtype=np.float32) / 255).permute(2, 0, 1)
    a, b = model.with_style(stripes)(photo), model.with_style(stripes.flip(0) * 0.3)(photo)
    assert a.shape == photo.shape
    assert (a - b).abs().mean() > 1e-3
    assert model.style is None  # with_style leaves the shared model without a style


def test_a_model_without_a_style_says_what_to_do() -> None:
    with pytest.raises(NSTError, match="style_image"):
        tiny_model()(torch.rand(1, 3, 16, 16))


def test_read_decoder_refuses_other_files(tmp_path: Path) -> None:
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(NSTError, match="not a zero-shot decoder"):
        read_decoder(tmp_path / "x.pt")


def compose_stylize(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("stylize", overrides=overrides)


def test_stylize_cli_with_a_painting_never_seen_uses_the_shipped_decoders(tmp_path: Path, style_path: Path) -> None:
    from nst_lightning.cli.stylize import run

    synthetic_photo(56, 40, seed=3).save(tmp_path / "photo.png")
    painting_b = tmp_path / "other.png"
    synthetic_photo(50, 50, seed=11).save(painting_b)
    outs = []
    for painting in (style_path, painting_b):
        out = tmp_path / f"{painting.stem}.png"
        run(compose_stylize([f"style_image={painting}", f"input={tmp_path / 'photo.png'}", f"output={out}",
                             "device=cpu"]))  # fmt: skip
        outs.append(np.asarray(Image.open(out), dtype=np.float32))
    assert outs[0].shape == (40, 56, 3)
    assert np.abs(outs[0] - outs[1]).mean() > 2.0
    with pytest.raises(NSTError, match="not both"):
        run(compose_stylize(["ckpt=starry_night", f"style_image={style_path}", f"input={tmp_path / 'photo.png'}"]))


def test_tiles_share_the_whole_image_content_statistics() -> None:
    from nst_lightning.inference import prepare_model, stylize
    from nst_lightning.inference.tiling import stylize_tiled

    stripes = torch.from_numpy(np.array(synthetic_photo(40, 32, seed=7), dtype=np.float32) / 255).permute(2, 0, 1)
    model = tiny_model().with_style(stripes)
    photo = torch.from_numpy(np.array(synthetic_photo(112, 96, seed=2), dtype=np.float32) / 255).permute(2, 0, 1)
    whole = stylize(photo, model, tile_size=None)
    tiled = stylize(photo, model, tile_size=64, tile_overlap=16, tile_stats_size=112)
    per_tile = stylize_tiled(prepare_model(model), photo[None], 64, 16, None)[0].clamp(0, 1)
    assert (tiled - whole).abs().mean() < 0.5 * (per_tile - whole).abs().mean()


def test_library_stylize_takes_a_style_image(style_path: Path) -> None:
    from nst_lightning import stylize

    photo = synthetic_photo(40, 36, seed=4)
    out = stylize(photo, style_image=style_path)
    assert out.size == photo.size
    with pytest.raises(NSTError, match="not both"):
        stylize(photo, "starry_night", style_image=style_path)
    with pytest.raises(NSTError, match="no model"):
        stylize(photo)


def test_evaluate_zeroshot_scores_each_painting_against_lbfgs(tmp_path: Path, style_path: Path) -> None:
    from nst_lightning.evaluation.evaluate import EvalSettings
    from nst_lightning.evaluation.zeroshot import evaluate_zeroshot
    from nst_lightning.losses.config import LossConfig

    synthetic_photo(40, 32, seed=6).save(tmp_path / "photo.png")
    other = tmp_path / "other.png"
    synthetic_photo(48, 48, seed=12).save(other)
    settings = EvalSettings(size=32, lbfgs_iterations=[1], grid_cell=32)
    result = evaluate_zeroshot([style_path, other], LossConfig(vgg_weights="random"), 32, [tmp_path / "photo.png"],
                               settings, torch.device("cpu"), tmp_path / "eval")  # fmt: skip
    assert set(result["paintings"]) == {"stripes", "other"}
    for summary in result["paintings"].values():
        assert summary["mean"]["network"]["objective"] > 0 and summary["mean"]["lbfgs@1"]["objective"] > 0
        assert summary["photo_objective"] > 0
    assert (tmp_path / "eval" / "other" / "report.json").is_file()


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (1, 300)])
def test_a_tiny_painting_is_enlarged_and_gives_its_colour(tmp_path: Path, size: tuple[int, int]) -> None:
    from nst_lightning.inference.zeroshot import load_zeroshot

    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (230, 120, 20)).save(path)  # orange
    model = load_zeroshot(path)
    photo = torch.from_numpy(np.array(synthetic_photo(64, 48, seed=1), dtype=np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        out = model(photo[None]).clamp(0, 1)
    assert out.shape == (1, 3, 48, 64) and torch.isfinite(out).all()
    red, blue = out[0, 0].mean(), out[0, 2].mean()
    assert red > blue + 0.1, f"an orange painting gave red {red:.2f}, blue {blue:.2f}"


# -- refinement: gradient steps on the objective after decoding ------------------------------------------------
def _objective(model: ZeroShotModel, out: torch.Tensor, photo: torch.Tensor) -> float:
    from nst_lightning.losses.config import LossConfig
    from nst_lightning.losses.perceptual import PerceptualLoss

    loss = PerceptualLoss(LossConfig())
    loss.set_style_grams(model.style.grams)
    with torch.no_grad():
        return loss(out, photo)["objective"].item()


def test_refinement_lowers_the_objective_through_stylize(style_path: Path) -> None:
    from nst_lightning.inference import stylize
    from nst_lightning.inference.zeroshot import load_zeroshot

    photo = torch.from_numpy(np.array(synthetic_photo(72, 56, seed=5), dtype=np.float32) / 255).permute(2, 0, 1)
    refined = load_zeroshot(style_path, refine_steps=2)
    plain = refined.with_style(refined.style)
    plain.objective, plain.refine_steps = None, 0
    a, b = stylize(photo, plain), stylize(photo, refined)  # stylize runs under torch.inference_mode
    assert b.shape == a.shape == (3, 56, 72) and b.min() >= 0 and b.max() <= 1
    assert _objective(refined, b[None], photo[None]) < 0.9 * _objective(refined, a[None], photo[None])
    assert load_zeroshot(style_path, refine_steps=0).objective is None  # 0: no objective network is even built


def test_refining_grams_are_the_objectives_grams_of_the_painting(tmp_path: Path) -> None:
    """The model takes the painting's Grams exactly as the evaluation does (PIL resize to 512, Lanczos)."""
    from nst_lightning.inference.zeroshot import load_zeroshot
    from nst_lightning.losses.config import LossConfig
    from nst_lightning.losses.perceptual import PerceptualLoss
    from nst_lightning.losses.styles import style_grams

    rng = np.random.default_rng(3)
    blocks = np.kron(rng.integers(0, 256, (9, 8, 3)), np.ones((100, 100, 1))).astype(np.uint8)  # hard edges
    painting = tmp_path / "blocks.png"
    Image.fromarray(blocks[:, :, :]).save(painting)
    expected = style_grams(painting, 512, PerceptualLoss(LossConfig()), cache_dir=tmp_path / "cache")
    got = load_zeroshot(painting).style.grams
    for layer, gram in expected.items():
        assert (got[layer] - gram).norm() < 1e-3 * gram.norm(), layer


@pytest.mark.parametrize("steps", [-1, 1.5, True, 51, "2"])
def test_bad_refine_steps_are_refused_by_name(steps) -> None:
    from nst_lightning.errors import BadValue
    from nst_lightning.inference.zeroshot import load_zeroshot

    with pytest.raises(BadValue, match="refine_steps"):
        load_zeroshot(refine_steps=steps)


def test_a_paintings_statistics_are_computed_once_by_its_pixels(tmp_path: Path, monkeypatch) -> None:
    """The same pixels (a path, a PIL image, a tensor; another model; the library's stylize called twice) cost no
    further VGG pass over the painting; other pixels do."""
    from nst_lightning.inference import stylize
    from nst_lightning.inference.zeroshot import load_zeroshot
    from nst_lightning.losses import vgg as vgg_module

    shapes: list[tuple[int, int]] = []
    forward = vgg_module.VGG19Features.forward

    def counting(self, images, layers=None):
        shapes.append(tuple(images.shape[-2:]))
        return forward(self, images, layers)

    monkeypatch.setattr(vgg_module.VGG19Features, "forward", counting)
    painting = tmp_path / "p.png"
    synthetic_photo(52, 48, seed=21).save(painting)
    painting_passes = lambda: sum(s in ((48, 52), (473, 512)) for s in shapes)  # noqa: E731 (as seen, and at 512)

    model = load_zeroshot()
    first = model.style_stats(painting)
    assert painting_passes() == 2  # the statistics, and the objective's Grams
    assert model.style_stats(Image.open(painting)) is first
    assert load_zeroshot().style_stats(torch.from_numpy(np.asarray(Image.open(painting), dtype=np.float32) / 255)
                                       .permute(2, 0, 1)) is first  # fmt: skip
    photo = synthetic_photo(40, 36, seed=4)
    stylize(photo, style_image=painting)
    stylize(photo, style_image=painting)
    assert painting_passes() == 2
    other = np.asarray(Image.open(painting)).copy()
    other[0, 0] = 255 - other[0, 0]
    assert model.style_stats(Image.fromarray(other)) is not first
    assert painting_passes() == 4


@pytest.mark.slow  # about a minute on a busy CPU: converts VGG-19 and the decoder, measures the candidates
def test_zeroshot_through_the_auto_runtime_matches_eager(tmp_path: Path, style_path: Path, monkeypatch, caplog) -> None:
    """The shipped encoder and decoder through runtime=auto (and openvino) give eager's image to 1/255; the
    refinement steps stay eager; tiles keep the whole image's content statistics in the runtime too."""
    import logging

    pytest.importorskip("openvino")
    import nst_lightning.export  # noqa: F401  (registers the runtimes)
    from nst_lightning.inference import stylize
    from nst_lightning.inference.stylize import prepare_model
    from nst_lightning.inference.zeroshot import load_zeroshot

    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path))
    caplog.set_level(logging.INFO, logger="nst_lightning.export.zeroshot_runtime")
    model = load_zeroshot(style_path)
    photo = torch.from_numpy(np.array(synthetic_photo(96, 72, seed=2), dtype=np.float32) / 255).permute(2, 0, 1)
    eager = stylize(photo, model, input_noise=0.0)
    for runtime in ("auto", "openvino"):
        runner = prepare_model(model, runtime=runtime)
        assert runner.module is runner.fn and runner.module.refine_steps == model.refine_steps
        got = stylize(photo, runner, input_noise=0.0)
        assert (got - eager).abs().mean() <= 1 / 255, runtime
    assert "runtime=auto: zero-shot" in caplog.text and "fastest that passed the gate" in caplog.text
    assert prepare_model(model, runtime="openvino").runtime == "openvino"
    tiled = stylize(photo, model, input_noise=0.0, tile_size=64, tile_overlap=16, runtime="openvino")
    assert (tiled - stylize(photo, model, input_noise=0.0, tile_size=64, tile_overlap=16)).abs().mean() <= 1 / 255
    with pytest.raises(NSTError, match="zero-shot model runs with runtime=eager, auto"):
        prepare_model(load_zeroshot(style_path), runtime="onnxruntime")
