#!/usr/bin/env python
"""In-browser seconds of the ``format=web`` bundle in headless Chromium (Debian's chromium + chromium-driver).

Exports ``--ckpt`` (default the shipped ``starry_night``) as a bundle, serves it from a plain static file server
on the loopback, and for each size gives the page an S×S photo (a training photo resized, else a synthetic one),
presses Stylize and reads the seconds the page itself reports ("Done in X s": photo decode to result, tiles
included). ``--runs`` runs per size, one JSON line each; ``--screenshot PATH`` saves the page after the first run.

    OMP_NUM_THREADS=1 nice python benchmarks/browser.py --sizes 512 1024 --runs 2 > docs/results/browser_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nst_lightning.cpu_features import reported_flags  # noqa: E402
from nst_lightning.export.quantize import training_photos  # noqa: E402
from nst_lightning.export.web import export_web  # noqa: E402
from nst_lightning.image import resize_tensor, tensor_to_pil  # noqa: E402
from nst_lightning.inference import load_model  # noqa: E402
from tests.test_export_web import static_server, stylize_in_page  # noqa: E402
from tests.test_serve_web import CHROMEDRIVER, CHROMIUM  # noqa: E402


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="starry_night")
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--screenshot", default=None)
    args = parser.parse_args()
    loaded = load_model(args.ckpt)
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        export_web(loaded, folder)
        photo = training_photos(count=1)[0]
        driver = chromium()
        version = driver.capabilities.get("browserVersion")
        try:
            with static_server(folder) as url:
                for size in args.sizes:
                    path = Path(tmp) / f"photo_{size}.png"
                    tensor_to_pil(resize_tensor(photo, (size, size)).clamp(0, 1)).save(path)
                    for run in range(args.runs):
                        start = time.perf_counter()
                        stylize_in_page(driver, url, path, timeout=900)
                        wall = time.perf_counter() - start
                        status = driver.find_element(By.ID, "status").text
                        seconds = float(re.search(r"Done in ([0-9.]+) s", status).group(1))
                        row = {"ckpt": args.ckpt, "model": loaded.model_name, "size": size, "run": run,
                               "page_seconds": seconds, "wall_seconds_with_page_load": round(wall, 1),
                               "status": status, "chromium": version, "cpu_flags": reported_flags()}  # fmt: skip
                        print(json.dumps(row), flush=True)
                        if args.screenshot and run == 0 and size == args.sizes[0]:
                            driver.save_screenshot(str(Path(tmp) / "shot.png"))
                            Image.open(Path(tmp) / "shot.png").convert("RGB").save(args.screenshot, quality=85)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
