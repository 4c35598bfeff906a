"""The service through a real HTTP client against uvicorn on 127.0.0.1: endpoints, cache, limits, bad inputs."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.inference import pretrained_models, stylize_paths
from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.cache import DiskCache, MemoryLRU
from nst_lightning.serve.models import StyleModel, load_styles, stylize_image
from nst_lightning.serve.server import free_port, running_in_thread
from tests.conftest import REPO, synthetic_photo

STYLE = "starry_night"
LIMITS = {"max_upload_mb": 0.5, "max_pixels": 2_000_000, "max_size": 128}


@pytest.fixture(scope="module")
def styles() -> dict[str, StyleModel]:
    """The shipped models, loaded once for all servers in this module."""
    return load_styles(None, None, "eager", "cpu", thumbnail_size=64)


@pytest.fixture(scope="module")
def server(styles: dict[str, StyleModel]) -> Iterator[httpx.Client]:
    app = create_app(ServeSettings(runtime="eager", **LIMITS), styles=styles)
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def photo_bytes(width: int = 96, height: int = 72, seed: int = 0, fmt: str = "PNG") -> bytes:
    return encode(synthetic_photo(width, height, seed), fmt)


def post(client: httpx.Client, data: bytes, ctype: str = "image/png", **fields: str) -> httpx.Response:
    return client.post("/stylize", files={"image": ("photo", data, ctype)}, data={"style": STYLE, **fields})


def metric(client: httpx.Client, name: str) -> float:
    """Sum of all samples of one metric in the /metrics text."""
    text = client.get("/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M))


def test_health_styles_thumbnail_page(server: httpx.Client) -> None:
    health = server.get("/health").json()
    assert health["status"] == "ok" and STYLE in health["styles"]
    assert health["runtime"] == "eager" and health["runtimes"] == ["eager"]  # what the model layer runs
    listed = server.get("/styles").json()["styles"]
    assert [s["name"] for s in listed] == health["styles"]
    thumb = server.get(listed[0]["thumbnail"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
    assert server.get("/styles/nope/thumbnail.jpg").status_code == 404
    page = server.get("/")
    assert page.status_code == 200 and 'id="photo"' in page.text
    assert server.get("/static/app.js").status_code == 200
    form = server.get("/openapi.json").json()["paths"]["/stylize"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["schema"]["required"] == ["image", "style"]


def test_stylize_png_default_jpeg_on_request(server: httpx.Client) -> None:
    data = photo_bytes(200, 100, seed=1)
    png = post(server, data)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(png.content))
    assert out.format == "PNG" and out.size == (128, 64)  # longest side = the service's max_size
    jpeg = post(server, data, format="jpeg", max_size="64")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 32)
    original = np.asarray(synthetic_photo(200, 100, 1).resize((128, 64), Image.Resampling.LANCZOS), dtype=float)
    stylized = np.asarray(out.convert("RGB"), dtype=float)
    unchanged = np.asarray(Image.open(io.BytesIO(post(server, data, strength="0").content)), dtype=float)
    assert np.abs(unchanged - original).mean() < 1.0 < np.abs(stylized - original).mean()
    kept = np.asarray(Image.open(io.BytesIO(post(server, data, preserve_color="true").content)), dtype=float)
    assert np.abs(kept - stylized).mean() > 1.0


def test_second_identical_request_is_a_cache_hit(server: httpx.Client) -> None:
    data = photo_bytes(120, 90, seed=2)
    hits, misses, model_runs = (metric(server, n) for n in ("nst_cache_hits_total", "nst_cache_misses_total",
                                                              "nst_model_seconds_count"))  # fmt: skip
    first = post(server, data, strength="0.8")
    second = post(server, data, strength="0.8")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert first.content == second.content
    assert metric(server, "nst_cache_hits_total") == hits + 1
    assert metric(server, "nst_cache_misses_total") == misses + 1
    assert metric(server, "nst_model_seconds_count") == model_runs + 1  # the model ran once
    assert post(server, data, strength="0.7").headers["x-cache"] == "miss"  # other options, other key


def test_metrics_prometheus_text(server: httpx.Client) -> None:
    server.get("/health")
    response = server.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("nst_requests_total", "nst_request_latency_seconds_bucket", "nst_cache_hits_total",
                 "nst_cache_misses_total", "nst_errors_total"):  # fmt: skip
        assert f"# TYPE {name.rsplit('_total', 1)[0].rsplit('_bucket', 1)[0]}" in text
    assert 'nst_requests_total{route="/health",status="200"}' in text


def truncated_png() -> bytes:
    data = photo_bytes(96, 72, seed=3)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "not an image": (lambda: b"just some text, not pixels", "image/png", {}, 415, "not an image in a format we read"),
    "a format we do not read": (lambda: encode(Image.new("RGB", (20, 20)), "ICO"), "image/png", {}, 415, "format"),
    "truncated file": (truncated_png, "image/png", {}, 400, "truncated"),
    "wrong content type": (lambda: b"name,value\n", "text/csv", {}, 415, "must be an image"),
    "too large (by header)": (lambda: np.random.default_rng(0).bytes(600_000), "image/png", {}, 413, "larger than"),
    "too large (by body)": (lambda: np.random.default_rng(0).bytes(530_000), "image/png", {}, 413, "larger than"),
    "too many pixels": (lambda: encode(Image.new("L", (2000, 1001))), "image/png", {}, 413, "pixels"),
    "unknown style": (photo_bytes, "image/png", {"style": "van_gogh_ii"}, 422, "unknown style"),
    "strength above 1": (photo_bytes, "image/png", {"strength": "1.5"}, 422, "strength"),
    "strength not a number": (photo_bytes, "image/png", {"strength": "strong"}, 422, "strength"),
    "strength nan": (photo_bytes, "image/png", {"strength": "nan"}, 422, "strength"),
    "max_size too large": (photo_bytes, "image/png", {"max_size": "4096"}, 422, "max_size"),
    "max_size 4000 digits": (photo_bytes, "image/png", {"max_size": "9" * 4000}, 422, "chars)"),
    "style 4000 chars": (photo_bytes, "image/png", {"style": "x" * 4000}, 422, "chars)"),
    "max_size zero": (photo_bytes, "image/png", {"max_size": "0"}, 422, "max_size"),
    "bad preserve_color": (photo_bytes, "image/png", {"preserve_color": "maybe"}, 422, "preserve_color"),
    "bad format": (photo_bytes, "image/png", {"format": "gif"}, 422, "format"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_4xx(server: httpx.Client, case: str) -> None:
    make, ctype, fields, status, words = BAD_INPUTS[case]
    response = post(server, make(), ctype, **fields)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert len(response.text) < 400  # a long user value is cut, not echoed whole
    assert post(server, photo_bytes(64, 48, seed=4)).status_code == 200  # still serving


def test_missing_image_field_and_a_chunked_upload(server: httpx.Client) -> None:
    not_multipart = server.post("/stylize", data={"style": STYLE})
    assert not_multipart.status_code == 415 and "field named 'image'" in not_multipart.json()["detail"]
    no_file = server.post("/stylize", files={"other": ("p.png", b"x", "image/png")}, data={"style": STYLE})
    assert no_file.status_code == 422 and "field named 'image'" in no_file.json()["detail"]
    no_boundary = server.post("/stylize", content=iter([b"--x\r\n"]), headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    request = server.build_request("POST", "/stylize", files={"image": ("p.png", photo_bytes(), "image/png")},
                                   data={"style": STYLE})  # fmt: skip
    body = request.read()
    chunked = server.post("/stylize", content=iter([body[:100], body[100:]]),
                          headers={"content-type": request.headers["content-type"]})  # fmt: skip
    assert chunked.status_code == 200  # no Content-Length: the body is counted as it arrives instead
    assert metric(server, "nst_errors_total") >= 2


def test_tiny_image_is_padded_not_refused(server: httpx.Client) -> None:
    response = post(server, photo_bytes(10, 10, seed=12))
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (10, 10)


def _rgba_photo() -> Image.Image:
    rgba = synthetic_photo(64, 64, seed=5).convert("RGBA")
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _deep_ramp() -> Image.Image:
    """A 16-bit greyscale ramp over the whole 0..65535 range."""
    return Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16))


UPLOADS = {"rgba png": _rgba_photo, "16-bit png": _deep_ramp, "10x10": lambda: synthetic_photo(10, 10, seed=6)}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_an_upload_gives_the_pixels_of_stylize_py_on_the_same_file(server: httpx.Client, tmp_path, case) -> None:
    """The service decodes, pads and keeps alpha as the library does: byte for byte the image that the stylize
    command (stylize_paths) writes for the same PNG file."""
    src = tmp_path / "in.png"
    UPLOADS[case]().save(src)
    response = post(server, src.read_bytes())
    assert response.status_code == 200, response.text
    served = Image.open(io.BytesIO(response.content))
    report = stylize_paths(STYLE, src, tmp_path / "out.png", device="cpu")
    written = Image.open(report.written[0])
    assert served.mode == written.mode and served.size == written.size == Image.open(src).size
    assert np.array_equal(np.asarray(served), np.asarray(written))


def test_alpha_and_16_bit_inputs(server: httpx.Client) -> None:
    out = Image.open(io.BytesIO(post(server, encode(_rgba_photo())).content))
    assert out.mode == "RGBA"
    alpha = np.asarray(_rgba_photo().getchannel("A"))
    assert np.array_equal(np.asarray(out.getchannel("A"))[:, [0, 63]], alpha[:, [0, 63]])
    deep = post(server, encode(_deep_ramp()))
    assert deep.status_code == 200
    grey = np.asarray(Image.open(io.BytesIO(deep.content)).convert("L"), dtype=float)
    assert grey.std() > 10  # a scaled ramp, not a picture clipped to flat white


@pytest.mark.slow
def test_queue_full_gets_503_and_service_recovers(styles: dict[str, StyleModel]) -> None:
    app = create_app(
        ServeSettings(runtime="eager", max_size=512, max_concurrency=1, max_queue=0, cache=CacheSettings("none")),
        styles,
    )
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        slow = threading.Thread(target=post, args=(client, photo_bytes(512, 512, seed=6)))
        slow.start()
        deadline = time.monotonic() + 30
        while client.get("/health").json()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        busy = post(client, photo_bytes(32, 32, seed=7))
        slow.join()
        assert busy.status_code == 503 and "busy" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "1"
        assert metric(client, "nst_rejected_total") == 1
        assert post(client, photo_bytes(32, 32, seed=7)).status_code == 200


@pytest.mark.slow
def test_identical_concurrent_requests_share_one_model_run(styles: dict[str, StyleModel]) -> None:
    app = create_app(ServeSettings(runtime="eager", max_size=512, max_concurrency=1, max_queue=4), styles)
    data = photo_bytes(512, 512, seed=11)
    with running_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        responses: list[httpx.Response] = []
        first = threading.Thread(target=lambda: responses.append(post(client, data)))
        first.start()
        deadline = time.monotonic() + 30
        while client.get("/health").json()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        second = post(client, data)
        first.join()
        assert (responses[0].headers["x-cache"], second.headers["x-cache"]) == ("miss", "shared")
        assert second.content == responses[0].content
        assert metric(client, "nst_model_seconds_count") == 1 and metric(client, "nst_shared_total") == 1
        assert metric(client, "nst_cache_hits_total") == 0  # a shared result is not a cache hit


def test_models_dir_adds_styles(tmp_path: Path) -> None:
    shutil.copy(pretrained_models()[STYLE], tmp_path / "my_style.pt")
    (tmp_path / "notes.txt").write_text("not a model")
    styles = load_styles([STYLE], str(tmp_path), "eager", "cpu", thumbnail_size=32)
    assert sorted(styles) == ["my_style", STYLE]
    with running_in_thread(create_app(ServeSettings(runtime="eager", **LIMITS), styles)) as url:
        client = httpx.Client(base_url=url, timeout=60)
        assert [s["name"] for s in client.get("/styles").json()["styles"]] == ["my_style", STYLE]
        response = client.post("/stylize", files={"image": ("p.png", photo_bytes(), "image/png")},
                               data={"style": "my_style"})  # fmt: skip
        assert response.status_code == 200


def test_settings_errors_speak_to_the_user(tmp_path: Path) -> None:
    with pytest.raises(NSTError, match="unknown serve setting"):
        ServeSettings.from_mapping({"prot": 8000})
    with pytest.raises(NSTError, match="cache.url"):
        ServeSettings(runtime="eager", cache=CacheSettings("redis"))
    with pytest.raises(NSTError, match="not a folder"):
        load_styles(None, str(tmp_path / "missing"), "eager", "cpu", 32)
    with pytest.raises(NSTError, match="unknown runtime"):
        load_styles(None, None, "tensorrt", "cpu", 32)
    with pytest.raises(NSTError, match="no shipped model"):
        load_styles(["van_gogh_ii"], None, "eager", "cpu", 32)
    with pytest.raises(NSTError, match="unknown runtime 'tensorrt'"):
        ServeSettings(runtime="tensorrt")
    with pytest.raises(NSTError, match="tile_size"):
        ServeSettings(tile_size=8)
    assert ServeSettings(runtime="ort").runtime == "ort"  # the library's aliases


def test_tile_size_is_a_setting(styles: dict[str, StyleModel]) -> None:
    """A 96×72 photo in tiles of 64 px is another image than in one piece (and the cache key tells them apart)."""
    data = photo_bytes(96, 72, seed=7)
    results = []
    for tile_size in (None, 64):
        settings = ServeSettings(runtime="eager", **LIMITS, tile_size=tile_size, cache=CacheSettings("none"))
        with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=60) as c:
            response = post(c, data)
            assert response.status_code == 200, response.text
            results.append(np.asarray(Image.open(io.BytesIO(response.content)), dtype=float))
    assert results[0].shape == results[1].shape and np.abs(results[0] - results[1]).max() > 1


def test_memory_lru_is_bounded_in_bytes() -> None:
    lru = MemoryLRU(max_bytes=10)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.get("a") == b"1234"  # a is now the most recent
    lru.put("c", b"1234")  # 12 bytes > 10: b (least recent) goes
    assert (lru.get("b"), lru.size, len(lru)) == (None, 8, 2)
    lru.put("huge", b"x" * 11)  # larger than the whole cache: not stored, nothing evicted
    assert lru.get("huge") is None and len(lru) == 2


def test_disk_cache_survives_a_restart_and_is_bounded(styles: dict[str, StyleModel], tmp_path: Path) -> None:
    settings = ServeSettings(runtime="eager", **LIMITS, cache=CacheSettings("disk", max_mb=1, dir=str(tmp_path)))
    data = photo_bytes(80, 60, seed=8)
    for expected in ("miss", "hit"):  # two app instances = a restart
        with running_in_thread(create_app(settings, styles)) as url:
            assert post(httpx.Client(base_url=url, timeout=60), data).headers["x-cache"] == expected
    disk = DiskCache(tmp_path / "small", max_bytes=10)
    for key in "abc":
        disk.put(key, b"1234")
        time.sleep(0.01)
    assert disk.get("a") is None and disk.get("c") == b"1234"


@pytest.mark.slow
def test_redis_cache_is_shared_by_replicas(styles: dict[str, StyleModel], redis_url: str) -> None:
    settings = ServeSettings(runtime="eager", **LIMITS, cache=CacheSettings("redis", url=redis_url))
    data = photo_bytes(80, 60, seed=9)
    with (
        running_in_thread(create_app(settings, styles)) as url_a,
        running_in_thread(create_app(settings, styles)) as url_b,
    ):
        a, b = httpx.Client(base_url=url_a, timeout=60), httpx.Client(base_url=url_b, timeout=60)
        first, second = post(a, data), post(b, data)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert first.content == second.content
        assert metric(b, "nst_cache_hits_total") == 1 and metric(b, "nst_model_seconds_count") == 0


@pytest.mark.slow
def test_redis_outage_still_serves(styles: dict[str, StyleModel], redis_url: str) -> None:
    import redis

    settings = ServeSettings(runtime="eager", **LIMITS, cache=CacheSettings("redis", url=redis_url))
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=60) as client:
        redis.Redis.from_url(redis_url).shutdown(nosave=True)
        response = post(client, photo_bytes(64, 48, seed=10))
        assert response.status_code == 200 and response.headers["x-cache"] == "miss"
        assert metric(client, "nst_cache_errors_total") >= 1


@pytest.mark.slow
def test_serve_py_runs_and_reports_config_errors() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "serve.py", f"port={port}", "cache=none", "log_level=warning"], cwd=REPO)
    try:
        deadline = time.monotonic() + 600  # runtime=auto converts the model to ONNX at startup: minutes on a busy CPU
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve.py did not come up"
                time.sleep(0.2)
        assert health["cache"] == "none" and STYLE in health["styles"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run(
        [sys.executable, "serve.py", "cache=redis", f"cache.url=redis://127.0.0.1:{free_port()}/0"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot reach the Redis cache" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["auto", "torchscript", "torch_export"])
def test_exported_runtimes_serve_the_eager_networks_image(styles: dict[str, StyleModel], runtime: str) -> None:
    """Every runtime gives the eager network's image, also at an odd size that the exported graphs only accept
    after the runtime's own padding; ``auto`` is the measured, gated choice of this machine (its gate, a mean of
    one 8-bit level, is on photos: on this synthetic one bf16 gives 1.1), the others at most one level anywhere."""
    from nst_lightning.export.auto import candidate_names

    other = load_styles([STYLE], None, runtime, "cpu", thumbnail_size=64)
    name = other[STYLE].runner.name
    assert name in [*candidate_names(), "eager"] if runtime == "auto" else name == runtime
    photo = synthetic_photo(75, 61, seed=3)
    eager_out = np.asarray(stylize_image(styles[STYLE].runner, photo), dtype=np.float32)
    other_out = np.asarray(stylize_image(other[STYLE].runner, photo), dtype=np.float32)
    diff = np.abs(eager_out - other_out)
    assert (diff.mean() <= 2.0) if runtime == "auto" else (diff.max() <= 1.0), (name, diff.mean(), diff.max())
