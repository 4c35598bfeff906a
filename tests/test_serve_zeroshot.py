"""The service's zero-shot endpoint through a real HTTP client: any painting, bounded uploads, cached statistics."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from nst_lightning.serve import ServeSettings, create_app
from nst_lightning.serve.server import running_in_thread
from tests.conftest import synthetic_photo
from tests.test_serve_web import browser  # noqa: F401  (the headless Chromium fixture)

LIMITS = {"max_upload_mb": 0.5, "max_pixels": 2_000_000, "max_size": 96}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(runtime="eager", **LIMITS), styles={})
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        c.app_state = app.state
        yield c


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def post(client: httpx.Client, photo: bytes, painting: bytes | None, **fields: str) -> httpx.Response:
    files = {"image": ("photo.png", photo, "image/png")}
    if painting is not None:
        files["style_image"] = ("painting.png", painting, "image/png")
    return client.post("/stylize/zeroshot", files=files, data=fields)


def test_styles_say_arbitrary_paintings_are_available(client: httpx.Client) -> None:
    arbitrary = client.get("/styles").json()["arbitrary"]
    assert arbitrary["available"] and arbitrary["endpoint"] == "/stylize/zeroshot"


def test_any_painting_upload_stylizes_and_its_statistics_are_cached(client: httpx.Client) -> None:
    photo = png(synthetic_photo(64, 48, seed=1))
    painting_a, painting_b = png(synthetic_photo(60, 60, seed=8)), png(synthetic_photo(60, 60, seed=9).rotate(90))
    first = post(client, photo, painting_a)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    assert Image.open(io.BytesIO(first.content)).size == (64, 48)
    hits = client.app_state.zeroshot.hits
    again = post(client, photo, painting_a, strength="0.5")  # new result, same painting: statistics reused
    assert again.status_code == 200 and again.headers["x-cache"] == "miss"
    assert client.app_state.zeroshot.hits == hits + 1
    assert post(client, photo, painting_a).headers["x-cache"] == "hit"
    other = post(client, photo, painting_b)
    a = np.asarray(Image.open(io.BytesIO(first.content)), dtype=np.float32)
    b = np.asarray(Image.open(io.BytesIO(other.content)), dtype=np.float32)
    assert np.abs(a - b).mean() > 1.0


def test_bad_zeroshot_requests_get_4xx(client: httpx.Client) -> None:
    photo = png(synthetic_photo(64, 48, seed=1))
    assert post(client, photo, None).status_code == 422
    assert post(client, photo, b"not an image").status_code == 400
    noise = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    huge = png(Image.fromarray(noise))  # > 0.5 MB of incompressible pixels
    assert post(client, photo, huge).status_code == 413


@pytest.mark.slow
def test_web_page_stylizes_with_an_uploaded_painting(tmp_path, browser) -> None:  # noqa: F811  (fixture)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    photo, painting = tmp_path / "photo.png", tmp_path / "my_painting.png"
    synthetic_photo(160, 120, seed=1).save(photo)
    synthetic_photo(100, 100, seed=9).save(painting)
    app = create_app(ServeSettings(runtime="eager", max_size=128))
    with running_in_thread(app) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(EC.visibility_of_element_located((By.ID, "painting"))).send_keys(str(painting))
        browser.find_element(By.ID, "photo").send_keys(str(photo))
        wait.until(EC.element_to_be_clickable((By.ID, "go"))).click()
        wait.until(lambda d: d.find_element(By.ID, "result").get_property("naturalWidth") > 0)
        assert browser.find_element(By.ID, "download").get_attribute("download") == "photo_my_painting.png"
