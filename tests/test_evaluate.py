"""evaluate.py: a trained network against L-BFGS on its own objective, with report, grid and TensorBoard."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from nst_lightning.evaluation.evaluate import iterations_to_match, summarize
from nst_lightning.inference import export_model, load_model, pretrained_models

from .conftest import run_cli


def test_iterations_to_match_finds_the_first_iteration_at_or_below() -> None:
    assert iterations_to_match([5.0, 4.0, 3.0, 2.0], 3.5) == 3
    assert iterations_to_match([5.0, 4.0], 1.0) is None
    assert iterations_to_match([5.0, 4.0], 9.0) == 1


def test_summary_compares_mean_objectives_per_k() -> None:
    def method(obj: float, style: float = 1.0, secs: float = 1.0) -> dict[str, float]:
        return {"content": obj - style, "style": style, "objective": obj, "ssim": 0.5, "seconds": secs}

    per_image = [
        {"network": method(3.0, secs=0.1), "lbfgs@10": method(4.0, 2.0, 1.0), "lbfgs@50": method(2.0, 0.5, 5.0),
         "lbfgs_iterations_matched": 20},
        {"network": method(3.0, secs=0.1), "lbfgs@10": method(3.5, 2.0, 1.0), "lbfgs@50": method(2.5, 0.5, 5.0),
         "lbfgs_iterations_matched": 30},
    ]  # fmt: skip
    s = summarize(per_image, [10, 50])
    assert s["network_beats_lbfgs_at"] == {"10": True, "50": False}
    assert s["smallest_k_beaten"] == 10 and s["largest_k_beaten"] == 10
    assert s["lbfgs_iterations_matched_median"] == 25
    assert s["style_ratio_network_over_lbfgs"]["50"] == pytest.approx(2.0)
    assert s["speedup_vs_lbfgs"]["50"] == pytest.approx(50.0)


@pytest.mark.slow
def test_evaluate_cli_writes_report_grid_and_tensorboard(tiny_ckpt, image_dir, tmp_path) -> None:
    exported = export_model(tiny_ckpt, tmp_path / "tiny.pt", half=True)
    out = tmp_path / "eval"
    result = run_cli(
        "evaluate.py", f"ckpt={exported}", f"eval_dir={image_dir}", "size=40", "lbfgs_iterations=[3,8]",
        "max_images=2", f"output_dir={out}", "device=cpu", "grid_cell=48", f"hydra.run.dir={tmp_path / 'h'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["columns"] == ["content", "network", "lbfgs@3", "lbfgs@8"]
    assert report["summary"]["images"] == 2 and len(report["per_image"]) == 2
    for img in report["per_image"]:
        for method in ("network", "lbfgs@3", "lbfgs@8"):
            terms = img[method]
            assert terms["objective"] == pytest.approx(terms["content"] + terms["style"] + terms["tv"], rel=1e-5)
            assert -1 <= terms["ssim"] <= 1 and terms["seconds"] > 0
            assert {"checkerboard_ratio", "border_mean_gap_excess", "border_contrast_log_ratio"} <= terms.keys()
        # L-BFGS starts at the content (SSIM 1, style loss high) and lowers the objective with iterations.
        assert img["lbfgs@8"]["objective"] < img["lbfgs@3"]["objective"]
        assert img["lbfgs@8"]["seconds"] > img["lbfgs@3"]["seconds"]
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 48 + 3 * 4, 2 * 48 + 4)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_evaluate_reports_a_missing_checkpoint_clearly(tmp_path) -> None:
    result = run_cli("evaluate.py", f"ckpt={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'h'}")
    assert result.returncode == 2
    assert "checkpoint not found" in result.stderr and "Traceback" not in result.stderr


def test_exported_model_keeps_the_loss_configuration(tiny_ckpt, tmp_path) -> None:
    exported = load_model(export_model(tiny_ckpt, tmp_path / "m.pt"))
    original = load_model(tiny_ckpt)
    assert exported.meta["loss"] == original.meta["loss"]
    assert exported.meta["loss"]["content_layers"] == ["relu2_2"]
    assert exported.meta["style_name"] == original.meta["style_name"]


def test_shipped_models_load_by_name() -> None:
    shipped = pretrained_models()
    assert "starry_night" in shipped, "the starry_night model must ship in nst_lightning/pretrained/"
    assert shipped["starry_night"].stat().st_size <= 8 * 2**20
    loaded = load_model("starry_night")
    assert loaded.meta["loss"] and loaded.meta["style_name"] == "starry_night"
    x = torch.rand(1, 3, 37, 53)
    with torch.inference_mode():
        y = loaded.net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.slow
def test_stylize_finds_the_shipped_model_by_name(tmp_path, image_dir) -> None:
    photo = next(image_dir.glob("*.png"))
    shutil.copy(photo, tmp_path / "in.png")
    result = run_cli("stylize.py", "ckpt=starry_night", f"input={tmp_path / 'in.png'}", f"output={tmp_path / 'o.png'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "o.png").exists()
    bad = run_cli("stylize.py", "ckpt=no_such_style", f"input={tmp_path / 'in.png'}")
    assert bad.returncode == 2 and "shipped: multistyle, starry_night" in bad.stderr


def test_stylize_picks_the_shipped_multistyle_network_for_a_style_by_name(tmp_path, image_dir) -> None:
    shutil.copy(next(image_dir.glob("*.png")), tmp_path / "in.png")
    for style in ("style=the_wave", "style_mix={starry_night: 0.5, candy: 0.5}"):
        out = tmp_path / f"{len(style)}.png"
        result = run_cli("stylize.py", style, f"input={tmp_path / 'in.png'}", f"output={out}")
        assert result.returncode == 0 and out.exists(), result.stderr[-2000:]
        assert "using the shipped multi-style network 'multistyle'" in result.stdout + result.stderr
    bad = run_cli("stylize.py", "style=udnie", f"input={tmp_path / 'in.png'}", f"output={tmp_path / 'u.png'}")
    assert bad.returncode == 2 and "the_wave" in bad.stderr, bad.stderr[-2000:]


def test_style_image_falls_back_to_the_named_preset(tmp_path, style_path) -> None:
    from nst_lightning.cli.presets import checkpoint_style_image as find_style_image
    from nst_lightning.errors import NSTError

    (tmp_path / "styles").mkdir()
    shutil.copy(style_path, tmp_path / "styles" / "starry_night.jpg")
    meta = {"style_image": str(tmp_path / "elsewhere.jpg"), "style_name": "starry_night"}
    assert find_style_image(meta, None, str(tmp_path)) == tmp_path / "styles" / "starry_night.jpg"
    assert find_style_image(meta, str(style_path), str(tmp_path)) == style_path
    with pytest.raises(NSTError, match="style_image=PATH"):
        find_style_image({"style_image": None, "style_name": "no_such_style"}, None, str(tmp_path))
