#!/usr/bin/env python
"""Input noise against striped skies, measured: strength, uniform vs smooth-only, on real photos with skies.

Photos are taken from ``$NST_DATA_DIR/content`` and ``$NST_DATA_DIR/train`` (never eval/), resized to a longest
side of ``--size``; a photo counts as having a sky when a ``--window``-px square in its upper third has almost no
fine texture (``oriented_texture(...)["texture_rms"]`` of the photo below ``--sky-max``). For each setting every
photo is stylized with the model and scored:

- ``sky_stripe_rms`` / ``sky_stripe_share``: the stripe figures of the stylized sky window
  (:func:`nst_lightning.evaluation.metrics.oriented_texture`; the stripe test allows 0.015);
- ``objective``, ``content``, ``style``: the model's own loss (its recorded loss config and style) of the
  whole stylized photo against the clean photo: the noise must not make the network's answer worse;
- ``ssim``: SSIM of the output to the photo;
- ``synthetic_sky`` / ``synthetic_diagonal``: the stripe test's figures on its 128-px smooth images;
- ``painting_stripe_share``: the style's own painting at ``--size``, the mean stripe_share of its ``--window``-px
  squares (half-window steps): how much one direction leads in the painting's own strokes, to read the stylized
  skies' figure against (a sky painted like the_scream's sky runs one way because the painting's does).

Prints one JSON line per setting (means over photos) and, with ``--pictures DIR``, writes each photo's output as a
small JPEG per setting.

    NST_DATA_DIR=/work/shared/data python benchmarks/input_noise.py --photos 12 --pictures /tmp/noise_pics
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nst_lightning.evaluation.evaluate import loss_from_meta  # noqa: E402
from nst_lightning.evaluation.metrics import oriented_texture, smooth_test_images, ssim  # noqa: E402
from nst_lightning.evaluation.styles import style_view  # noqa: E402
from nst_lightning.image import list_images, load_image, save_image  # noqa: E402
from nst_lightning.inference import LoadedModel, load_model  # noqa: E402
from nst_lightning.inference.noise import InputNoise  # noqa: E402
from nst_lightning.losses.styles import resolve_style_image, style_grams  # noqa: E402
from nst_lightning.training.smooth import smoothest_windows  # noqa: E402

SETTINGS = [("none", InputNoise(0.0))] + [
    (f"{'smooth' if smooth else 'uniform'}_{s}", InputNoise(s, smooth_only=smooth))
    for smooth in (False, True)
    for s in (0.01, 0.02, 0.04, 0.08)
]


def find_sky(photo: torch.Tensor, window: int) -> tuple[float, int, int]:
    """(fine-texture RMS, y, x) of the smoothest ``window``-px square in the upper third of a 1×3×H×W photo
    (smoothest by mean |∇luma|, all windows at once; then scored by ``oriented_texture``)."""
    h = photo.shape[-2]
    [(y, x)], _ = smoothest_windows(photo[..., : max(window, h // 3 + window // 2), :], window)
    return float(oriented_texture(photo[..., y : y + window, x : x + window])["texture_rms"][0]), y, x


def sky_photos(folders: list[Path], size: int, window: int, sky_max: float, count: int, every: int) -> list[dict]:
    found = []
    for folder in folders:
        for path in list_images(folder, recursive=False)[:: every if folder.name == "train" else 1]:
            photo = load_image(path, size)
            if min(photo.shape[-2:]) < window:
                continue
            t, y, x = find_sky(photo, window)
            if t <= sky_max:
                found.append({"path": path, "photo": photo, "sky": (y, x), "sky_texture": t})
    found.sort(key=lambda r: r["sky_texture"])
    return found[:count]


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry_night")
    p.add_argument("--style", help="a multi-style network's style (default: each of them in turn)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--window", type=int, default=96)
    p.add_argument("--sky-max", type=float, default=0.01, help="fine-texture RMS below which a window is sky")
    p.add_argument("--every", type=int, default=3, help="scan every N-th photo of each folder")
    p.add_argument("--photos", type=int, default=12)
    p.add_argument("--only", nargs="*", help="settings to run (names as printed)")
    p.add_argument("--files", nargs="*", help="these photos (paths under $NST_DATA_DIR) instead of a scan")
    p.add_argument("--pictures", type=Path, default=None)
    args = p.parse_args()
    data = Path(os.environ.get("NST_DATA_DIR", REPO / "data"))
    torch.manual_seed(0)

    loaded = load_model(args.model)
    styles = [args.style] if args.style else list(loaded.net.style_names) if loaded.meta.get("styles") else [None]
    t0 = time.time()
    if args.files:
        photos = []
        for name in args.files:
            photo = load_image(data / name, args.size)
            t, y, x = find_sky(photo, args.window)
            photos.append({"path": data / name, "photo": photo, "sky": (y, x), "sky_texture": t})
    else:
        folders = [data / "content", data / "train"]
        photos = sky_photos(folders, args.size, args.window, args.sky_max, args.photos, args.every)
    names = [f"{r['path'].parent.name}/{r['path'].name}" for r in photos]
    print(json.dumps({"photos": names, "seconds": round(time.time() - t0)}), flush=True)
    for style in styles:
        view = style_view(loaded, style) if style is not None else loaded
        score(view, data, photos, args, t0)


def painting_share(path: Path, size: int, window: int) -> float:
    """Mean ``stripe_share`` of the ``window``-px squares (half-window steps) of a painting at a longest side of
    ``size``."""
    img = load_image(path, size)
    h, w = img.shape[-2:]
    step = max(1, window // 2)
    squares = [img[..., y : y + window, x : x + window] for y in range(0, h - window + 1, step)
               for x in range(0, w - window + 1, step)]  # fmt: skip
    return statistics.fmean(float(oriented_texture(sq)["stripe_share"][0]) for sq in squares)


def score(loaded: LoadedModel, data: Path, photos: list[dict], args: argparse.Namespace, t0: float) -> None:
    """Print one JSON line per noise setting: ``loaded``'s sky stripe figures and objective over ``photos``."""
    net, meta = loaded.net, loaded.meta
    loss = loss_from_meta(meta)
    style = data / "styles" / Path(meta["style_image"]).name  # the path recorded at training time may not exist here
    loss.set_style_grams(style_grams(resolve_style_image(str(style)), meta.get("style_size"), loss))
    loss.eval().requires_grad_(False)
    synthetic = smooth_test_images(128)
    for name, noise in SETTINGS:
        if args.only and name not in args.only:
            continue
        rows = []
        for r in photos:
            photo, (y, x), k = r["photo"], r["sky"], args.window
            out = net(noise.add(photo)).float().clamp(0, 1)
            sky = oriented_texture(out[..., y : y + k, x : x + k])
            terms = loss(out, photo)
            rows.append({
                "sky_stripe_rms": float(sky["stripe_rms"][0]), "sky_stripe_share": float(sky["stripe_share"][0]),
                "sky_texture_rms": float(sky["texture_rms"][0]), "objective": float(terms["objective"]),
                "content": float(terms["content"]), "style": float(terms["style"]),
                "ssim": float(ssim(out, photo)[0]),
            })  # fmt: skip
            if args.pictures:
                save_image(out, args.pictures / name / f"{r['path'].stem}.jpg")
        row = {
            "setting": name,
            "model_style": meta.get("style_name"),
            "sigma": noise.sigma,
            "smooth_only": noise.smooth_only,
        }
        row.update({key: round(statistics.fmean(x[key] for x in rows), 5) for key in rows[0]})
        row["sky_stripe_rms_max"] = round(max(x["sky_stripe_rms"] for x in rows), 5)
        row["painting_stripe_share"] = round(painting_share(style, args.size, args.window), 5)
        for key, img in synthetic.items():
            row[f"synthetic_{key}"] = round(
                float(oriented_texture(net(noise.add(img)).clamp(0, 1))["stripe_rms"][0]), 5
            )
        row["seconds"] = round(time.time() - t0)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
