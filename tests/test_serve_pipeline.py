"""The one request pipeline of both stylize routes, through a real HTTP client against uvicorn on 127.0.0.1: the
same cache and metrics behaviour on ``POST /stylize`` and ``POST /stylize/zeroshot``, every option in the key,
``stroke_scale`` and ``input_noise`` reaching the pixels, bad values as 4xx, and statuses chosen by error type."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from nst_lightning.errors import BadValue, NotFound, NSTError, TooLarge, Unreadable, UnsupportedFormat
from nst_lightning.inference import StylizeOptions, stylize_paths
from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.errors import STATUS, status_of
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.server import running_in_thread
from tests.conftest import synthetic_photo

STYLE = "starry_night"
LIMITS = {"max_upload_mb": 0.5, "max_pixels": 2_000_000, "max_size": 128}
PAINTING = synthetic_photo(60, 60, seed=9)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def photo(seed: int, width: int = 80, height: int = 60) -> bytes:
    return png(synthetic_photo(width, height, seed))


def post_named(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/stylize", files={"image": ("p.png", data, "image/png")}, data={"style": STYLE, **fields})


def post_zeroshot(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    files = {"image": ("p.png", data, "image/png"), "style_image": ("art.png", png(PAINTING), "image/png")}
    return client.post("/stylize/zeroshot", files=files, data=fields)


ROUTES: dict[str, tuple[Callable[..., httpx.Response], str]] = {  # route → (post, its model label in metrics)
    "named": (post_named, STYLE),
    "zeroshot": (post_zeroshot, "zeroshot"),
}


def metric(client: httpx.Client, name: str, labels: str = "") -> float:
    """Sum of the samples of one metric (those whose labels contain ``labels``) in the /metrics text."""
    text = client.get("/metrics").text
    found = re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, flags=re.M)
    return sum(float(v) for lab, v in found if labels in lab)


def counters(client: httpx.Client, label: str) -> tuple[float, ...]:
    names = ("nst_cache_hits_total", "nst_cache_misses_total", "nst_shared_total")
    return (*(metric(client, n) for n in names), metric(client, "nst_model_seconds_count", f'style="{label}"'))


def pixels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def styles() -> dict[str, StyleModel]:
    return load_styles([STYLE], None, "eager", "cpu", thumbnail_size=32)


@pytest.fixture(scope="module")
def client(styles: dict[str, StyleModel]) -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(runtime="eager", **LIMITS), styles=styles)
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


@pytest.mark.parametrize("route", list(ROUTES))
def test_both_routes_cache_and_count_alike(client: httpx.Client, route: str) -> None:
    """A repeated request is a hit; a miss runs the model once; hit, miss and model-seconds move the same way on
    both routes; another value of any option is another key."""
    post, label = ROUTES[route]
    data = photo(seed=1)
    hits, misses, shared, runs = counters(client, label)
    first, second = post(client, data, strength="0.8"), post(client, data, strength="0.8")
    assert first.status_code == second.status_code == 200, first.text
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert first.headers["x-variant"] == second.headers["x-variant"] == "full"
    assert first.content == second.content
    assert counters(client, label) == (hits + 1, misses + 1, shared, runs + 1)
    for field, value in (("strength", "0.7"), ("stroke_scale", "2"), ("input_noise", "0"), ("format", "jpeg")):
        other = post(client, data, **{"strength": "0.8", field: value})
        assert other.headers["x-cache"] == "miss", field  # every option is in the key
    assert counters(client, label) == (hits + 1, misses + 5, shared, runs + 5)


@pytest.mark.parametrize("route", list(ROUTES))
def test_tile_size_is_in_the_key_of_both_routes(styles: dict[str, StyleModel], tmp_path: Path, route: str) -> None:
    """Two services sharing one disk cache, one tiling at 64 px: the same request is a miss on each (other
    pixels), then a hit on each."""
    post, _ = ROUTES[route]
    data = photo(seed=2, width=96, height=72)
    cache = CacheSettings("disk", max_mb=8, dir=str(tmp_path))
    results = {}
    for _ in range(2):
        for tile_size in (None, 64):
            settings = ServeSettings(runtime="eager", **LIMITS, tile_size=tile_size, cache=cache)
            with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=120) as c:
                response = post(c, data)
                assert response.status_code == 200, response.text
                expected = "miss" if tile_size not in results else "hit"
                assert response.headers["x-cache"] == expected, tile_size
                results.setdefault(tile_size, pixels(response))
    assert np.abs(results[None] - results[64]).max() > 1


@pytest.mark.parametrize("route", list(ROUTES))
def test_identical_requests_in_flight_share_one_model_run_on_both_routes(
    styles: dict[str, StyleModel], route: str
) -> None:
    post, label = ROUTES[route]
    settings = ServeSettings(runtime="eager", max_size=384, max_concurrency=1, max_queue=4)
    data = photo(seed=3, width=384, height=384)
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=120) as c:
        responses: list[httpx.Response] = []
        first = threading.Thread(target=lambda: responses.append(post(c, data)))
        first.start()
        deadline = time.monotonic() + 60
        while c.get("/health").json()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        second = post(c, data)
        first.join()
        assert (responses[0].headers["x-cache"], second.headers["x-cache"]) == ("miss", "shared")
        assert second.content == responses[0].content
        assert counters(c, label) == (0, 1, 1, 1)  # a shared result is neither a hit nor another model run


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(
    "field,values",
    [
        ("stroke_scale", ("1", "2", "0.5")),
        ("input_noise", ("0", "0.3")),
        ("noise_seed", ("0", "1")),
        ("input_noise_smooth_only", ("false", "true")),
    ],
)
def test_stroke_scale_and_input_noise_reach_the_pixels(
    client: httpx.Client, route: str, field: str, values: tuple[str, ...]
) -> None:
    post, _ = ROUTES[route]
    data = photo(seed=4, width=60, height=44)
    noise = {} if field == "input_noise" else {"input_noise": "0.3"}  # strong enough that seed and mask show
    images = [pixels(post(client, data, **noise, **{field: v})) for v in values]
    assert all(img.shape == (44, 60, 3) for img in images)  # the photo's size, whatever the value
    for a, b in zip(images[:-1], images[1:], strict=True):
        assert np.abs(a - b).mean() > 0.5, (field, values)


def test_the_service_gives_the_pixels_of_stylize_py_with_the_same_options(client: httpx.Client, tmp_path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(photo(seed=5, width=90, height=64))
    served = pixels(post_named(client, src.read_bytes(), stroke_scale="1.5", input_noise="0.1", strength="0.9"))
    options = StylizeOptions(stroke_scale=1.5, input_noise=0.1, strength=0.9, max_size=128, tile_size=1024)
    written = stylize_paths(STYLE, src, tmp_path / "out.png", options, device="cpu").written[0]
    assert np.array_equal(served, np.asarray(Image.open(written).convert("RGB"), dtype=np.float32))


def _options_message(**values: object) -> str:
    with pytest.raises(BadValue) as refused:
        StylizeOptions(**values)
    return str(refused.value)


BAD_VALUES = {  # field, text, what the detail says (None: StylizeOptions' own message for the parsed value)
    "stroke_scale too small": ("stroke_scale", "0.1", None),
    "stroke_scale too large": ("stroke_scale", "9", None),
    "stroke_scale nan": ("stroke_scale", "nan", None),
    "stroke_scale inf": ("stroke_scale", "1e400", None),
    "stroke_scale negative": ("stroke_scale", "-1", None),
    "stroke_scale text": ("stroke_scale", "big", "stroke_scale must be a number, got 'big'"),
    "stroke_scale 4000 chars": ("stroke_scale", "9" * 4000, "stroke_scale must be"),
    "input_noise negative": ("input_noise", "-0.1", None),
    "input_noise above 1": ("input_noise", "2", None),
    "input_noise nan": ("input_noise", "nan", None),
    "input_noise text": ("input_noise", "loud", "input_noise must be a number, got 'loud'"),
    "strength above 1": ("strength", "1.5", None),
    "network larger than max_size": ("stroke_scale", "0.25", "would run the network on 320 pixels"),
    "max_size a superscript digit": ("max_size", "²", "max_size must be a whole number of pixels, got '²'"),
    "noise_seed negative": ("noise_seed", "-1", "noise_seed must be a whole number from 0 to 999999999"),
    "noise_seed huge": ("noise_seed", "9" * 12, "noise_seed must be a whole number"),
    "input_noise_smooth_only text": (
        "input_noise_smooth_only",
        "maybe",
        "input_noise_smooth_only must be true or false",
    ),
    "tile_overlap above a quarter tile": ("tile_overlap", "600", "tile_overlap"),
    "tile_stats_size above the tile size": ("tile_stats_size", "4096", "tile_stats_size must be at most 1024 pixels"),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_get_a_422_with_the_options_message(client: httpx.Client, route: str, case: str) -> None:
    post, _ = ROUTES[route]
    field, raw, words = BAD_VALUES[case]
    response = post(client, photo(seed=6), **{field: raw})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail == _options_message(**{field: float(raw)}) if words is None else words in detail
    assert len(response.text) < 400  # a long user value is cut, not echoed whole
    assert post(client, photo(seed=6, width=40, height=30)).status_code == 200  # still serving


NASTY = ("", " ", "nan", "inf", "-inf", "1e400", "-0", "²", "0x10", "1_0", "真", "9" * 4000, "true", "[1]", "0.5")
FIELDS = ("strength", "preserve_color", "max_size", "stroke_scale", "input_noise", "format", "quality", "style_mix")


@pytest.mark.parametrize("route", list(ROUTES))
def test_no_field_value_is_a_500(client: httpx.Client, route: str) -> None:
    """Every form field the routes read, given odd text: a 200 or a 4xx with a JSON message, never a 500."""
    post, _ = ROUTES[route]
    data = photo(seed=8, width=32, height=24)
    for field in FIELDS:
        for raw in NASTY:
            response = post(client, data, **{field: raw})
            assert response.status_code == 200 or 400 <= response.status_code < 500, (field, raw, response.text)
            if response.status_code != 200:
                assert response.json()["detail"], (field, raw)


def test_status_comes_from_the_error_type_never_its_message() -> None:
    assert {TooLarge: 413, UnsupportedFormat: 415, Unreadable: 400, BadValue: 422, NotFound: 404} == STATUS

    class Reworded(TooLarge):
        """A subclass keeps its parent's status."""

    assert status_of(Reworded("anything at all")) == 413
    assert status_of(TooLarge("")) == 413
    assert status_of(BadValue("too many pixels, megapixels")) == 422  # words that once chose 413 choose nothing
    assert status_of(UnsupportedFormat("formats read here")) == 415
    assert status_of(NSTError("megapixels")) == 422  # a plain error: the default


def truncated() -> bytes:
    data = photo(seed=7)
    return data[: len(data) // 2]


TYPED = {  # what the client sends → the error type the service meets, and its status
    "too many pixels (TooLarge)": (lambda: png(Image.new("L", (2000, 1001))), {}, 413),
    "a text field over 4 KB (TooLarge)": (lambda: photo(seed=7), {"strength": "1" * 5000}, 413),
    "not an image (UnsupportedFormat)": (lambda: b"plain text", {}, 415),
    "truncated (Unreadable)": (truncated, {}, 400),
    "empty (Unreadable)": (lambda: b"", {}, 400),
    "bad value (BadValue)": (lambda: photo(seed=7), {"preserve_color": "maybe"}, 422),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(TYPED))
def test_each_error_type_gets_its_status_on_both_routes(client: httpx.Client, route: str, case: str) -> None:
    post, _ = ROUTES[route]
    make, fields, status = TYPED[case]
    response = post(client, make(), **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json" and response.json()["detail"]


def test_not_found_is_a_404_and_the_page_has_the_new_fields(client: httpx.Client) -> None:
    missing = client.get("/styles/no_such_style/thumbnail.jpg")
    assert missing.status_code == 404 and "unknown style" in missing.json()["detail"]
    page = client.get("/").text
    assert all(f'id="{i}"' in page for i in ("stroke-scale", "input-noise", "noise-smooth-only", "noise-seed"))
    script = client.get("/static/app.js").text
    assert all(f'form.append("{f}"' in script for f in ("stroke_scale", "input_noise", "input_noise_smooth_only",
                                                         "noise_seed"))  # fmt: skip
    defaults = client.get("/styles").json()["options"]
    base = StylizeOptions()
    assert defaults == {"strength": 1.0, "preserve_color": False, "max_size": 128, "stroke_scale": 1.0,
                        "input_noise": base.input_noise, "input_noise_smooth_only": base.input_noise_smooth_only,
                        "noise_seed": base.noise_seed, "tile_overlap": None, "tile_stats_size": None}  # fmt: skip
    schema = client.get("/openapi.json").json()["paths"]
    for path in ("/stylize", "/stylize/zeroshot"):
        fields = schema[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert {"stroke_scale", "input_noise"} <= set(fields), path
        assert {n: fields[n].get("default") for n in defaults} == defaults, path  # /docs: the same defaults


def test_the_shipped_multistyle_network_serves_a_style_by_its_name_and_a_blend(tmp_path: Path) -> None:
    """``style=the_wave`` finds the one served network holding it (as ``multistyle.the_wave`` does), and a
    ``style_mix`` blend gives the library's pixels for the same options."""
    styles = load_styles(["multistyle"], None, "eager", "cpu", thumbnail_size=32)
    settings = ServeSettings(runtime="eager", **LIMITS)
    src = tmp_path / "in.png"
    src.write_bytes(photo(seed=3, width=84, height=60))
    mix = {"starry_night": 0.5, "candy": 0.5}

    def library(**options: object) -> np.ndarray:
        out = tmp_path / f"{len(options)}_{sorted(options)[0]}.png"
        opts = StylizeOptions(max_size=128, tile_size=settings.tile_size, **options)  # type: ignore[arg-type]
        written = stylize_paths("multistyle", src, out, opts, device="cpu").written[0]
        return np.asarray(Image.open(written).convert("RGB"), dtype=np.float32)

    with running_in_thread(create_app(settings, styles=styles)) as url, httpx.Client(base_url=url, timeout=120) as c:

        def post(**fields: str) -> httpx.Response:
            return c.post("/stylize", files={"image": ("p.png", src.read_bytes(), "image/png")}, data=fields)

        wave = pixels(post(style="the_wave"))
        assert np.array_equal(wave, pixels(post(style="multistyle.the_wave")))
        assert np.array_equal(wave, library(style="the_wave"))
        blend = pixels(post(style="multistyle", style_mix=json.dumps(mix)))
        assert np.array_equal(blend, library(style_mix=mix))
        assert not np.array_equal(blend, wave)
        unknown = post(style="udnie")
        assert unknown.status_code == 422 and "multistyle.the_wave" in unknown.json()["detail"]
