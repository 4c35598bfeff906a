"""``POST /adapt``: a painting learned as a new style in a background job, through a real HTTP client against
uvicorn on 127.0.0.1: 202 with a job, progress by ``GET /adapt/{job}``, the style then served by name, the
queue and the budget bounded, the same painting again from the cache, bad values as 4xx."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.models import load_styles
from nst_lightning.serve.server import running_in_thread
from tests.conftest import synthetic_photo


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


PAINTING = png(synthetic_photo(64, 56, seed=12))
PHOTO = png(synthetic_photo(48, 40, seed=13))


def submit(client: httpx.Client, name: str, minutes: str = "0.03", painting: bytes = PAINTING) -> httpx.Response:
    files = {"style_image": ("painting.png", painting, "image/png")}
    return client.post("/adapt", files=files, data={"minutes": minutes, "name": name})


def wait(client: httpx.Client, job: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        state = client.get(f"/adapt/{job}").json()
        seen.append(state["fraction"])
        if state["status"] in ("done", "failed"):
            return {**state, "seen": seen}
        time.sleep(0.2)
    raise AssertionError(f"job {job} not done in {timeout} s")


def test_a_painting_is_learned_in_the_background_then_served_by_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NST_CACHE_DIR", str(tmp_path / "cache"))
    styles = load_styles(["starry_night"], None, "eager", "cpu", thumbnail_size=32)
    settings = ServeSettings(runtime="eager", max_size=128, cache=CacheSettings("none"), max_adapt_minutes=0.1,
                             max_adapt_jobs=1, max_adapted_styles=2)  # fmt: skip
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=120) as client:
        first = submit(client, "mine")
        assert first.status_code == 202, first.text
        assert first.json()["status"] in ("queued", "running") and first.json()["style"] == "mine"
        busy = submit(client, "other")  # one job waits or runs at a time here
        assert busy.status_code == 503 and "already waiting or running" in busy.json()["detail"]
        done = wait(client, first.json()["job"])
        assert done["status"] == "done" and done["fraction"] == 1.0 and done["step"] >= 1, done
        assert not done["cached"] and done["objective"] is not None

        listed = {s["name"] for s in client.get("/styles").json()["styles"]}
        assert "mine" in listed
        files = {"image": ("photo.png", PHOTO, "image/png")}
        styled = client.post("/stylize", files=files, data={"style": "mine"})
        assert styled.status_code == 200, styled.text
        assert np.asarray(Image.open(io.BytesIO(styled.content))).shape == (40, 48, 3)
        starry = client.post("/stylize", files=files, data={"style": "starry_night"})
        assert np.abs(np.asarray(Image.open(io.BytesIO(starry.content)), dtype=float)
                      - np.asarray(Image.open(io.BytesIO(styled.content)), dtype=float)).mean() > 1  # fmt: skip

        again = submit(client, "mine_again")  # the same painting and budget: from the cache
        assert again.status_code == 202
        assert wait(client, again.json()["job"])["cached"]
        full = submit(client, "third")
        assert full.status_code == 503 and "at most 2 learned styles" in full.json()["detail"]


@pytest.fixture(scope="module")
def client():
    styles = load_styles(["starry_night"], None, "eager", "cpu", thumbnail_size=32)
    settings = ServeSettings(runtime="eager", max_size=128, cache=CacheSettings("none"), max_adapt_minutes=5)
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.mark.parametrize(
    "fields,status,words",
    [
        ({"minutes": "0"}, 422, "minutes must be more than 0 and at most 5"),
        ({"minutes": "6"}, 422, "at most 5"),
        ({"minutes": "nan"}, 422, "minutes must be"),
        ({"minutes": "soon"}, 422, "minutes must be a number"),
        ({"name": "bad name!"}, 422, "name must be letters"),
        ({"name": ""}, 422, "name must be letters"),
        ({"name": "starry_night"}, 422, "already exists"),
        ({"painting": b"not an image"}, 415, "not an image"),
        ({"painting": None}, 422, "send the painting as style_image"),
    ],
)
def test_bad_adapt_requests_get_4xx_and_queue_nothing(client: httpx.Client, fields: dict, status: int,
                                                      words: str) -> None:  # fmt: skip
    minutes, name = fields.get("minutes", "0.03"), fields.get("name", "fine")
    painting = fields.get("painting", PAINTING)
    if painting is None:
        files = {"image": ("photo.png", PHOTO, "image/png")}  # a form, but no painting in it
        response = client.post("/adapt", files=files, data={"minutes": minutes, "name": name})
    else:
        response = submit(client, name, minutes, painting)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert client.get("/adapt/nosuchjob").status_code == 404
