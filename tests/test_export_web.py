"""``export.py format=web``: the bundle in a real headless Chromium, served by a plain static file server.

The page stylizes a 301×203 photo with ONNX Runtime Web (WebAssembly) and the result equals ``stylize()`` of the
same network within two 8-bit levels (input noise off on both sides); a multi-style blend likewise, driven by the
keyboard alone; a 4096×3072 photo completes in tiles. Set ``NST_DOCS_SCREENSHOT=docs/images/web_bundle.jpg`` to
also write the docs' screenshot.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.export.web import ORT_DIR_ENV, export_web, ort_web_dir
from nst_lightning.inference import EXPORT_FORMAT, LoadedModel, load_model, stylize
from nst_lightning.models import create_model
from nst_lightning.models.conditional import conditional_layers
from tests.conftest import REPO, SHARED_DATA, run_cli, synthetic_photo
from tests.test_serve_web import browser  # noqa: F401  (the headless Chromium fixture)

pytestmark = pytest.mark.slow
LEVELS = 2  # the bundle's result vs stylize(), in 8-bit levels


def _has_ort_web() -> bool:
    try:
        ort_web_dir()
    except NSTError:
        return False
    return True


needs_ort_web = pytest.mark.skipif(not _has_ort_web(), reason="needs the npm files: npm ci --prefix web")


class _Handler(SimpleHTTPRequestHandler):
    """A plain static file server (JavaScript modules and WebAssembly with their MIME types), quiet."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm"}  # fmt: skip

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def two_style_model(folder: Path) -> LoadedModel:
    """A johnson_tiny network with two styles (random scales and shifts), as an nst model file."""
    torch.manual_seed(0)
    net = create_model("johnson_tiny", num_styles=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in conditional_layers(net):
            for params, centre in ((layer.scale, 1.0), (layer.shift, 0.0)):
                for p in params:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + centre)
    path = folder / "two.pt"
    meta = {"styles": [{"name": "waves"}, {"name": "candy"}]}
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": {"num_styles": 2},
                "state_dict": net.state_dict(), "meta": meta}, path)  # fmt: skip
    return load_model(path)


def photo_301x203(path: Path) -> Image.Image:
    real = SHARED_DATA / "content" / "golden_gate.jpg"  # a content (not eval) photo, when the data is here
    image = Image.open(real).convert("RGB").resize((301, 203)) if real.exists() else synthetic_photo(301, 203, 0)
    image.save(path)  # PNG: the browser decodes exactly these pixels
    return image


def stylize_in_page(driver, url: str, photo: Path, timeout: float, keys: list | None = None) -> None:
    """Open the bundle, give it ``photo``; either click Stylize or send ``keys`` (keyboard only); wait until done."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/index.html")
    WebDriverWait(driver, 120).until(EC.element_to_be_clickable((By.ID, "go")))
    assert driver.find_element(By.ID, "status").text.startswith("Ready")
    driver.find_element(By.ID, "photo").send_keys(str(photo))
    if keys is None:
        driver.find_element(By.ID, "go").click()
    else:
        from selenium.webdriver.common.action_chains import ActionChains

        driver.execute_script("document.getElementById('photo').focus();")
        for key in keys:  # one key per chain: one long chain loses keys in headless Chromium
            ActionChains(driver).send_keys(key).perform()
    finished = lambda d: d.find_element(By.ID, "status").text.startswith(("Done", "Could"))  # noqa: E731
    try:
        WebDriverWait(driver, timeout).until(finished)
    except TimeoutException:
        focused = driver.execute_script("return document.activeElement.id")
        pytest.fail(f"not done in {timeout} s: {driver.find_element(By.ID, 'status').text!r}, focus on #{focused}")
    status = driver.find_element(By.ID, "status").text
    assert status.startswith("Done"), status


def page_result(driver) -> np.ndarray:
    """The page's stylized canvas as H×W×3 uint8."""
    data = driver.execute_script("return document.getElementById('result').toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def starry_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path]:
    if not _has_ort_web():
        pytest.skip("needs the npm files: npm ci --prefix web")
    loaded = load_model("starry_night")
    folder = tmp_path_factory.mktemp("web") / "starry_night_web"
    export_web(loaded, folder)
    return loaded, folder


@needs_ort_web
def test_bundle_matches_stylize_in_chromium(browser, starry_bundle, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    loaded, folder = starry_bundle
    assert {p.name for p in folder.iterdir()} >= {"index.html", "nst.js", "model.onnx", "model.json", "ort"}
    image = photo_301x203(tmp_path / "photo.png")
    expected = np.asarray(stylize(image, loaded, input_noise=0.0, tile_size=None))
    with static_server(folder) as url:
        stylize_in_page(browser, url, tmp_path / "photo.png", timeout=120)
        got = page_result(browser)
        download = browser.find_element(By.ID, "download")
        assert download.get_attribute("download") == "photo_stylized.png"
        assert download.get_attribute("href").startswith("blob:")
        shot = os.environ.get("NST_DOCS_SCREENSHOT")
        if shot:
            browser.save_screenshot(str(tmp_path / "shot.png"))
            Image.open(tmp_path / "shot.png").convert("RGB").save(shot, quality=80)
    assert got.shape == expected.shape == (203, 301, 3)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= LEVELS, f"max {diff.max()} levels, mean {diff.mean():.3f}"


@needs_ort_web
def test_style_blend_and_strength_by_keyboard_alone(browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    loaded = two_style_model(tmp_path)
    folder = tmp_path / "bundle"
    export_web(loaded, folder)
    image = photo_301x203(tmp_path / "photo.png")
    expected = np.asarray(
        stylize(image, loaded, input_noise=0.0, tile_size=None, strength=0.95, style_mix={"waves": 1, "candy": 3})
    )
    # From the file input: Tab to the first style's weight (one digit: Backspace clears it), type 1; the
    # second's, type 3; Tab to the strength slider, one step left (0.95); Tab to Stylize, Enter.
    keys = [Keys.TAB, Keys.BACKSPACE, "1", Keys.TAB, Keys.BACKSPACE, "3", Keys.TAB, Keys.ARROW_LEFT, Keys.TAB,
            Keys.ENTER]  # fmt: skip
    with static_server(folder) as url:
        stylize_in_page(browser, url, tmp_path / "photo.png", timeout=120, keys=keys)
        got = page_result(browser)
        assert browser.execute_script("return document.getElementById('strength-value').value") == "0.95"
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= LEVELS, f"max {diff.max()} levels, mean {diff.mean():.3f}"


@needs_ort_web
def test_a_4096x3072_photo_completes_in_tiles(browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    torch.manual_seed(0)
    net = create_model("johnson_tiny")
    path = tmp_path / "tiny.pt"
    torch.save({"format": EXPORT_FORMAT, "model_name": "johnson_tiny", "model_kwargs": {},
                "state_dict": net.state_dict(), "meta": {"style_name": "noise"}}, path)  # fmt: skip
    folder = tmp_path / "bundle"
    export_web(load_model(path), folder)
    synthetic_photo(4096, 3072, seed=1).save(tmp_path / "big.png")
    with static_server(folder) as url:
        stylize_in_page(browser, url, tmp_path / "big.png", timeout=900)
        size = browser.execute_script("const c = document.getElementById('result'); return [c.width, c.height];")
        progress = browser.find_element(By.ID, "progress").get_property("value")
    assert size == [4096, 3072] and progress == 1


def test_missing_npm_files_are_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, ORT_DIR_ENV: str(tmp_path)}
    result = run_cli(str(REPO / "export.py"), "ckpt=starry_night", "format=web", cwd=tmp_path, env=env)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("error: the ONNX Runtime Web files are missing") and f"point {ORT_DIR_ENV}" in message
    assert not (tmp_path / "starry_night_web").exists()  # refused before anything is written
    with pytest.raises(NSTError, match=r"missing \(ort\.webgpu\.min\.mjs"):
        ort_web_dir(tmp_path)
