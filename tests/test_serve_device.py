"""``GET /device/{network}/``: the service offers each network's in-browser page; a real headless Chromium against
uvicorn stylizes a photo there, on the device, within 2 levels of ``stylize()``."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from nst_lightning.inference import load_model, stylize
from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.models import load_styles
from nst_lightning.serve.server import running_in_thread
from tests.test_export_web import LEVELS, needs_ort_web, page_result, photo_301x203, stylize_in_page
from tests.test_serve_web import browser  # noqa: F401  (the headless Chromium fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service() -> object:
    styles = load_styles(["starry_night"], None, "eager", "cpu", thumbnail_size=32)
    settings = ServeSettings(runtime="eager", max_size=128, cache=CacheSettings("none"))
    with running_in_thread(create_app(settings, styles)) as url:
        yield url


@needs_ort_web
def test_the_page_of_a_network_runs_on_the_device(browser, service: str, tmp_path: Path) -> None:  # noqa: F811
    with httpx.Client(base_url=service, timeout=120) as client:
        page = client.get("/device/starry_night/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert client.get("/device/starry_night/model.json").json()["styles"] == ["starry_night"]
        assert client.get("/device/starry_night/ort/ort.webgpu.min.mjs").headers["content-type"].startswith(
            "text/javascript")  # fmt: skip
        assert client.get("/device/starry_night/../../pyproject.toml").status_code == 404
        assert client.get("/device/starry_night/etc/passwd").status_code == 404
        assert client.get("/device/no_such_network/").status_code == 404
        assert 'id="device-link"' in client.get("/").text
    image = photo_301x203(tmp_path / "photo.png")
    expected = np.asarray(stylize(image, load_model("starry_night"), input_noise=0.0, tile_size=None))
    stylize_in_page(browser, f"{service}/device/starry_night", tmp_path / "photo.png", timeout=120)
    got = page_result(browser)
    assert got.shape == expected.shape == (203, 301, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= LEVELS
