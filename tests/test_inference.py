"""The inference core: options, tiling, and inputs a user will send (tiny, small, 16-bit, alpha, EXIF, huge)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.image import file_digest, fit_size, open_image, pil_to_tensor, resize_to_long_side, to_float
from nst_lightning.inference import (
    DEFAULT_TILE_SIZE,
    EXPORT_FORMAT,
    StylizeOptions,
    load_model,
    plan_outputs,
    prepare_model,
    stylize,
    stylize_file,
    stylize_paths,
)
from nst_lightning.inference.tiling import (
    GlobalNormStats,
    TileLayout,
    axis_spans,
    axis_weights,
    seam_metric,
    stylize_tiled,
)
from nst_lightning.models import create_model

from .conftest import run_cli, synthetic_photo


@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("johnson_tiny").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def shipped():
    return load_model("starry_night", "cpu")


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width×height but holds no pixel data (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


# --- the library call ------------------------------------------------------------------------------------------


def test_stylize_keeps_shapes_for_tensors_pil_and_callables(tiny_net):
    x = torch.rand(2, 3, 37, 29)
    assert stylize(x, tiny_net).shape == x.shape
    assert stylize(x[0], tiny_net).shape == x[0].shape
    invert = lambda images: 1 - images  # an exported runtime is any such callable
    assert torch.allclose(stylize(x, invert), 1 - x, atol=1e-6)
    out = stylize(synthetic_photo(50, 30, seed=1), tiny_net, max_size=25)
    assert out.mode == "RGB" and out.size == (25, 15)


def test_stylize_by_shipped_model_name_equals_the_loaded_model(shipped):
    x = torch.rand(1, 3, 40, 48)
    assert torch.allclose(stylize(x, "starry_night", device="cpu"), stylize(x, shipped), atol=1e-6)


def test_strength_blends_stylized_and_content():
    x = torch.rand(1, 3, 40, 40)
    invert = lambda images: 1 - images
    assert torch.allclose(stylize(x, invert, strength=0.0), x, atol=1e-6)
    assert torch.allclose(stylize(x, invert, strength=0.25), 0.75 * x + 0.25 * (1 - x), atol=1e-6)
    photo = synthetic_photo(40, 30, seed=2)
    assert np.array_equal(np.asarray(stylize(photo, invert, strength=0.0)), np.asarray(photo))


def test_preserve_color_keeps_the_content_chroma(tiny_net):
    x = synthetic_photo(48, 40, seed=3)
    content = pil_to_tensor(x).unsqueeze(0)
    out = pil_to_tensor(stylize(x, lambda images: images.mean(1, keepdim=True).expand_as(images), preserve_color=True))
    from nst_lightning.image import rgb_to_yiq

    chroma_error = (rgb_to_yiq(out.unsqueeze(0))[:, 1:] - rgb_to_yiq(content)[:, 1:]).abs().mean()
    assert chroma_error < 0.02


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("strength", 1.5, "strength must be"),
        ("strength", float("nan"), "strength must be"),
        ("max_size", 0, "max_size must be a positive"),
        ("max_size", -3, "max_size must be a positive"),
        ("tile_size", 16, "tile_size must be at least"),
        ("tile_overlap", -1, "tile_overlap must be"),
    ],
)
def test_option_ranges_are_refused_with_a_clear_message(tiny_net, option, value, message):
    with pytest.raises(NSTError, match=message):
        stylize(torch.rand(3, 32, 32), tiny_net, **{option: value})


def test_unusable_model_and_image_are_refused(tiny_net):
    with pytest.raises(NSTError, match="cannot use a int as a model"):
        stylize(torch.rand(3, 8, 8), 3)
    with pytest.raises(NSTError, match="no shipped model"):
        stylize(torch.rand(3, 8, 8), "no_such_style")
    with pytest.raises(NSTError, match="B×3×H×W"):
        stylize(torch.rand(4, 8, 8), tiny_net)
    with pytest.raises(NSTError, match="must map B×3×H×W"):
        stylize(torch.rand(3, 8, 8), lambda images: images[:, :1])


# --- tiling ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(1000, 256, 64), (257, 256, 64), (640, 128, 32), (900, 200, 0)]
)
def test_tile_weights_sum_to_one_and_cover_the_axis(length, tile, overlap):
    spans = axis_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    total = torch.zeros(length)
    for (start, stop), w in zip(spans, axis_weights(spans, overlap), strict=True):
        total[start:stop] += w
        assert stop - start <= tile
    assert torch.allclose(total, torch.ones(length), atol=1e-6)
    for (_, stop), (start, _) in zip(spans[:-1], spans[1:], strict=True):
        assert stop - start >= overlap


@pytest.mark.slow
def test_tiled_equals_untiled_and_fails_without_the_instance_norm_handling(shipped):
    """Whole-image statistics make the tiles agree with the untiled result; per-tile statistics do not."""
    photo = pil_to_tensor(synthetic_photo(256, 192, seed=5)).unsqueeze(0)
    untiled = stylize(photo, shipped)
    tiled = stylize(photo, shipped, tile_size=128, tile_overlap=32, tile_stats_size=256)  # statistics at full res
    assert TileLayout.create(192, 256, 128, 32).num_tiles == 6
    diff = (tiled - untiled).abs()
    assert diff.mean() < 5e-3 and diff.flatten().quantile(0.99) < 0.05, (diff.mean(), diff.flatten().quantile(0.99))

    with torch.inference_mode():
        per_tile = stylize_tiled(prepare_model(shipped), photo, 128, 32, norm_stats=None)
    assert (per_tile - untiled).abs().mean() > 10 * diff.mean()


@pytest.mark.slow
def test_seam_metric_stays_low_for_blended_tiles_and_flags_a_hard_seam(shipped):
    photo = pil_to_tensor(synthetic_photo(256, 192, seed=6)).unsqueeze(0)
    tiled = stylize(photo, shipped, tile_size=128, tile_overlap=32)  # statistics from the downscaled pass
    assert seam_metric(tiled, 128, 32) < 1.1
    with torch.inference_mode():
        naive = stylize_tiled(prepare_model(shipped), photo, 128, 0, norm_stats=None)
    assert seam_metric(naive, 128, 0) > 1.3


def test_global_norm_stats_hooks_reproduce_the_network_and_are_removed(shipped):
    x = torch.rand(1, 3, 64, 80)
    stats = GlobalNormStats(shipped.net)
    assert len(stats.layers) == 15  # Johnson: 3 encoder + 10 residual + 2 decoder instance norms
    with torch.inference_mode():
        reference = shipped.net(x)
        with stats.record():
            shipped.net(x)
        with stats.apply():
            hooked = shipped.net(x)
    assert torch.allclose(hooked, reference, atol=1e-5)
    assert all(not layer._forward_hooks and not layer._forward_pre_hooks for layer in stats.layers)


def test_library_and_stylize_yaml_tile_by_the_same_default():
    """stylize(), stylize_file(), stylize_paths() and conf/stylize.yaml share one default per option."""
    import inspect

    from hydra import compose, initialize_config_dir

    from nst_lightning.cli.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("stylize")
    paths_defaults = {k: p.default for k, p in inspect.signature(stylize_paths).parameters.items()}
    for key in ("max_pixels", "suffix"):
        assert cfg[key] == paths_defaults[key], key
    options = StylizeOptions()
    for key in ("strength", "preserve_color", "max_size", "tile_size", "tile_overlap", "input_noise",
                "input_noise_smooth_only", "consistency", "temporal_weight"):  # fmt: skip
        assert cfg[key] == getattr(options, key), key
    assert options.tile_size == DEFAULT_TILE_SIZE


def test_stylize_tiles_large_images_by_default():
    seen: list[tuple[int, ...]] = []

    def identity(images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape))
        return images

    x = torch.rand(1, 3, 40, DEFAULT_TILE_SIZE + 100)
    assert torch.allclose(stylize(x, identity), x, atol=1e-6)
    assert len(seen) > 1 and max(shape[-1] for shape in seen) <= DEFAULT_TILE_SIZE
    seen.clear()
    stylize(x, identity, tile_size=None)
    assert seen == [tuple(x.shape)]


def test_tiling_keeps_options_and_batches(tiny_net):
    x = torch.rand(2, 3, 100, 90)
    out = stylize(x, tiny_net, tile_size=64, strength=0.0)
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-6)


def test_checkpoints_recording_a_removed_builder_option_still_load(tiny_net, tmp_path):
    path = tmp_path / "old.pt"
    kwargs = {"freeze_encoder": False, "pretrained": True}  # recorded by older versions; not rebuilt
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": kwargs,
                "state_dict": tiny_net.state_dict()}, path)  # fmt: skip
    loaded = load_model(path)
    assert loaded.model_kwargs == {}
    x = torch.rand(1, 3, 24, 24)
    assert torch.allclose(loaded.net(x), tiny_net(x))


# --- the ground floor: sizes, pixels, digests -------------------------------------------------------------


def test_fit_size_shrinks_and_enlarges_only_when_asked():
    assert fit_size(400, 300, 200) == (200, 150)
    assert fit_size(40, 30, 200) == (40, 30)
    assert fit_size(40, 30, 200, enlarge=True) == (200, 150)
    assert fit_size(40, 30, None) == (40, 30)
    assert fit_size(1000, 1, 10) == (10, 1)  # never 0 px
    assert resize_to_long_side(Image.new("RGB", (40, 30)), 80).size == (80, 60)


def test_to_float_scales_uint8_only():
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.allclose(to_float(pixels), torch.tensor([0.0, 0.2, 1.0]))
    half = torch.tensor([0.5], dtype=torch.float16)
    assert to_float(half).dtype == torch.float32 and to_float(half).item() == 0.5


def test_file_digest_is_sha256_of_the_bytes(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000  # > one read chunk
    (tmp_path / "f.bin").write_bytes(data)
    assert file_digest(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


# --- inputs a user will send -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (3, 2), (2, 40)])
def test_images_smaller_than_the_network_minimum_are_padded(shipped, tmp_path, size):
    src = tmp_path / "tiny.png"
    Image.new("RGB", size, (200, 30, 40)).save(src)
    out = stylize_file(shipped, src, tmp_path / "out.png")
    assert Image.open(out).size == size


def test_max_size_zero_is_refused(tiny_net, tmp_path):
    src = tmp_path / "a.png"
    synthetic_photo(20, 20, seed=0).save(src)
    with pytest.raises(NSTError, match="max_size"):
        stylize_file(tiny_net, src, tmp_path / "b.png", max_size=0)


def test_16bit_png_is_scaled_not_clipped(tiny_net, tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    src = tmp_path / "deep.png"
    Image.fromarray(ramp).save(src)
    assert Image.open(src).mode.startswith("I")
    img = np.asarray(open_image(src)).astype(float)
    assert abs(img.mean() - 127.5) < 2 and (img == 255).mean() < 0.05  # clipping made 98% of it white
    assert np.allclose(img[:, :, 0], ramp / 257, atol=1)
    assert Image.open(stylize_file(tiny_net, src, tmp_path / "out.png")).size == (64, 32)


def test_alpha_is_put_back_in_png_and_dropped_with_a_warning_in_jpeg(tiny_net, tmp_path, caplog):
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:, 20:, 3] = 255  # left half transparent
    src = tmp_path / "logo.png"
    Image.fromarray(rgba, "RGBA").save(src)
    out = Image.open(stylize_file(tiny_net, src, tmp_path / "out.png"))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    half = stylize(Image.open(src), tiny_net, max_size=20)
    assert half.mode == "RGBA" and half.size == (20, 15)
    jpeg = Image.open(stylize_file(tiny_net, src, tmp_path / "out.jpg"))
    assert jpeg.mode == "RGB" and "cannot store transparency" in caplog.text


def test_exif_orientation_is_applied(tiny_net, tmp_path):
    img = synthetic_photo(40, 20, seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    src = tmp_path / "phone.jpg"
    img.save(src, exif=exif)
    assert Image.open(src).size == (40, 20)
    assert open_image(src).size == (20, 40)
    assert Image.open(stylize_file(tiny_net, src, tmp_path / "out.png")).size == (20, 40)
    assert stylize(Image.open(src), lambda x: x).size == (20, 40)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    # The files hold no pixel data: decoding them would fail with "truncated", so these messages prove that the
    # size was refused from the header alone.
    over_ours = png_with_declared_size(tmp_path / "big.png", 9000, 9000)  # 81 MP: above our 67 MP default
    with pytest.raises(NSTError, match="9000×9000 = 81.0 megapixels, above the limit"):
        open_image(over_ours)
    small = png_with_declared_size(tmp_path / "small.png", 80, 60)  # a tiny limit is not "0.0 megapixels"
    with pytest.raises(NSTError, match="80×60 = 0.0048 megapixels, above the limit of 0.0001 megapixels"):
        open_image(small, max_pixels=100)
    bomb = png_with_declared_size(tmp_path / "bomb.png", 20000, 20000)  # above Pillow's own hard limit
    with pytest.raises(NSTError, match="too many pixels|above the limit"):
        open_image(bomb, max_pixels=None)
    with pytest.raises(NSTError, match="too many pixels to be decoded safely"):
        open_image(bomb)  # Pillow's DecompressionBombError, turned into a message
    small = tmp_path / "small.png"
    synthetic_photo(20, 20, seed=0).save(small)
    with pytest.raises(NSTError, match="max_pixels=100"):
        open_image(small, max_pixels=100)
    with pytest.raises(NSTError, match="above the limit"):
        open_image(small.read_bytes(), max_pixels=100)  # bytes, as the service receives them


def test_folder_mode_skips_bad_and_huge_files_and_reports_them(tiny_net, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        synthetic_photo(30 + i, 20, seed=i).save(src / ("sub" if i else ".") / f"ok{i}.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg at all")
    png_with_declared_size(src / "huge.png", 12000, 12000)
    report = stylize_paths(tiny_net, src, tmp_path / "out")
    assert sorted(p.name for p in report.written) == ["ok0.png", "ok1.png", "ok2.png"]
    assert {p.name for p, _ in report.failed} == {"broken.jpg", "huge.png"}
    assert not report.ok and "stylized 3 of 5" in report.summary() and "144.0 megapixels" in report.summary()
    assert (tmp_path / "out" / "sub" / "ok1.png").exists()


def test_single_file_errors_are_raised(tiny_net, tmp_path):
    png_with_declared_size(tmp_path / "huge.png", 12000, 12000)
    with pytest.raises(NSTError, match="above the limit"):
        stylize_paths(tiny_net, tmp_path / "huge.png", tmp_path / "out.png")


def test_output_with_a_non_image_suffix_is_an_error_not_a_folder(tmp_path):
    src = tmp_path / "a.png"
    synthetic_photo(20, 20, seed=0).save(src)
    with pytest.raises(NSTError, match="unsupported output suffix '.txt'"):
        plan_outputs(src, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()
    assert plan_outputs(src, tmp_path / "styled") == [(src, tmp_path / "styled" / "a.png")]
    assert plan_outputs(src, tmp_path / "b.webp") == [(src, tmp_path / "b.webp")]
    assert plan_outputs(src, tmp_path / "b.jpg", suffix="png") == [(src, tmp_path / "b.png")]
    with pytest.raises(NSTError, match="unsupported suffix"):
        plan_outputs(src, tmp_path / "b.jpg", suffix=".txt")


@pytest.mark.slow
def test_cli_reports_skipped_files_and_refuses_a_non_image_output(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    synthetic_photo(40, 30, seed=0).save(src / "good.png")
    png_with_declared_size(src / "huge.png", 12000, 12000)
    folder = run_cli("stylize.py", "ckpt=starry_night", f"input={src}", f"output={tmp_path / 'out'}", "device=cpu")
    assert folder.returncode == 2 and "Traceback" not in folder.stderr
    assert "stylized 1 of 2" in folder.stderr and "huge.png" in folder.stderr
    assert (tmp_path / "out" / "good.png").exists()

    single = run_cli("stylize.py", "ckpt=starry_night", f"input={src / 'good.png'}", f"output={tmp_path / 'x.txt'}")
    assert single.returncode == 2 and "unsupported output suffix '.txt'" in single.stderr
    assert not (tmp_path / "x.txt").exists()
