#!/usr/bin/env python
"""Rebuild the embedded offline sample (``nst_lightning/data/sample/``) from a prepared data folder.

The sample is what ``experiment=quick`` (and ``experiment=finetune``) trains on when the data folder holds no
training photos: the five paintings of the shipped multi-style network (longest side 512 px) and the 16 Kodak photos of
``train/`` (320×320, re-encoded as JPEG quality 85). Kodak only, because it is the one photo set of ``train/``
released for unrestricted use (see the sample's PROVENANCE.md). Never reads ``eval/``.

    python scripts/build_sample.py --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "nst_lightning" / "data" / "sample"
STYLES = ("starry_night.jpg", "the_scream.jpg", "the_wave.jpg", "candy.jpg", "mosaic.jpg")
PHOTO_GLOB = "kodak24_*.jpg"


def save_resized(src: Path, dest: Path, longest: int | None = None, shortest: int | None = None) -> None:
    """Lanczos-downscale ``src`` (never upscale) and save it as JPEG quality 85 without metadata."""
    with Image.open(src) as img:
        rgb = img.convert("RGB")
    scale = min(longest / max(rgb.size) if longest else 1.0, shortest / min(rgb.size) if shortest else 1.0, 1.0)
    size = (round(rgb.width * scale), round(rgb.height * scale))
    dest.parent.mkdir(parents=True, exist_ok=True)
    rgb.resize(size, Image.Resampling.LANCZOS).save(dest, quality=85, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with styles/ and train/")
    args = parser.parse_args()
    for style in STYLES:
        save_resized(args.data_dir / "styles" / style, SAMPLE / "styles" / style, longest=512)
    photos = sorted((args.data_dir / "train").glob(PHOTO_GLOB))
    for photo in photos:
        save_resized(photo, SAMPLE / "train" / photo.name.removeprefix("kodak24_"), shortest=320)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*.jpg"))
    print(f"{len(photos)} photos + {', '.join(STYLES)} in {SAMPLE}: {total / 2**20:.2f} MB")


if __name__ == "__main__":
    main()
