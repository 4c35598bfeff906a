"""The service under hostile clients: raw sockets and httpx against uvicorn on 127.0.0.1.

Bodies bounded as they stream, timeouts, disconnects, a hung Redis, the Host check, the metrics of a scripted
mix, memory for a huge 16-bit PNG, the same pixels as ``stylize.py``, and settings equal to ``conf/serve.yaml``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.cache import DiskCache
from nst_lightning.serve.guard import FORM_OVERHEAD
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.server import running_in_thread
from tests.conftest import REPO, RedisServer, synthetic_photo

STYLE = "starry_night"
LIMIT_MB = 0.25
MAX_BODY = int(LIMIT_MB * 2**20) + FORM_OVERHEAD
CHUNK = 16 * 1024


class GatedRunner:
    """A stand-in network: the identity, which can be made to wait (``gate``) or to fail with a bug."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.explode = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.started.set()
        self.gate.wait(60)
        if self.explode:
            raise RuntimeError("a bug in the model layer")
        return images.clone()


@pytest.fixture(scope="module")
def styles() -> dict[str, StyleModel]:
    return load_styles([STYLE], None, "eager", "cpu", thumbnail_size=32)


def png(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def form(image: bytes, style: str = STYLE, **fields: str) -> tuple[bytes, str]:
    """A multipart body and its content type, as httpx would send them."""
    request = httpx.Request("POST", "http://x/stylize", files={"image": ("p.png", image, "image/png")},
                            data={"style": style, **fields})  # fmt: skip
    return request.read(), request.headers["content-type"]


def metric(client: httpx.Client, name: str, labels: str = "") -> float:
    """Sum of the samples of one metric whose labels contain ``labels``."""
    text = client.get("/metrics").text
    total = 0.0
    for found, value in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, flags=re.M):
        if labels in found:
            total += float(value)
    return total


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and everything the server sent until it closed the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def stream_until_answered(sock: socket.socket, head: bytes, chunked: bool, limit: int = 8 * 2**20) -> int:
    """Send ``head``, then body bytes in CHUNK pieces until the server answers (or ``limit`` bytes); bytes sent."""
    sock.sendall(head)
    sent = 0
    while sent < limit:
        readable, _, _ = select.select([sock], [], [], 0.005)
        if readable:
            break
        piece = b"\xff" * CHUNK
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    return sent


@pytest.fixture(scope="module")
def limited(styles: dict[str, StyleModel]) -> Iterator[str]:
    settings = ServeSettings(runtime="eager", max_upload_mb=LIMIT_MB, max_size=64, body_timeout_s=1.0,
                             header_timeout_s=1.0, cache=CacheSettings("none"))  # fmt: skip
    with running_in_thread(create_app(settings, styles)) as url:
        yield url


def upload_head(content_type: str, length: int | None, chunked: bool) -> bytes:
    lines = ["POST /stylize HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("lie", ["chunked", "chunked + Content-Length: 10"])
def test_streamed_body_over_the_limit_stops_at_the_limit(limited: str, lie: str) -> None:
    client = httpx.Client(base_url=limited, timeout=30)
    before = metric(client, "nst_upload_bytes_total")
    with connect(limited) as sock:
        length = 10 if "Content-Length" in lie else None
        sent = stream_until_answered(sock, upload_head("multipart/form-data; boundary=x", length, True), True)
        status, data = read_response(sock)
    read = metric(client, "nst_upload_bytes_total") - before
    if length is None:
        assert status == 413 and b"larger than" in data
        assert MAX_BODY < read <= MAX_BODY + CHUNK  # stopped within one chunk of the limit
    else:
        assert status in (400, 413)  # h11 refuses Content-Length with Transfer-Encoding, or the limit stops it
        assert read <= MAX_BODY + CHUNK
    assert sent < 4 * 2**20  # the server answered and closed long before the 8 MB the client had


def test_lying_content_length_cannot_carry_more(limited: str) -> None:
    """A body longer than its Content-Length: the extra bytes are never body bytes (they end the connection)."""
    client = httpx.Client(base_url=limited, timeout=30)
    before = metric(client, "nst_upload_bytes_total")
    body, ctype = form(png(synthetic_photo(32, 32, 1)))
    with connect(limited) as sock:
        sock.sendall(upload_head(ctype, 10, False) + body + b"\xff" * 200_000)
        status, _ = read_response(sock)
    assert 400 <= status < 500  # a 10-byte "form", or the garbage after it: never a 200, never stored
    assert metric(client, "nst_upload_bytes_total") - before <= 10
    with connect(limited) as sock:  # announced over the limit: 413 before a byte of the body is read
        sock.sendall(upload_head(ctype, MAX_BODY + 1, False))
        status, data = read_response(sock)
    assert status == 413 and b"larger than" in data


def test_stalled_upload_gets_408_and_is_closed(limited: str) -> None:
    body, ctype = form(png(synthetic_photo(32, 32, 1)))
    client = httpx.Client(base_url=limited, timeout=30)
    with connect(limited) as sock:
        sock.sendall(upload_head(ctype, len(body), False) + body[:100])  # then nothing
        status, data = read_response(sock)  # returns only when the server closes
    assert status == 408 and b"did not arrive" in data
    assert metric(client, "nst_body_timeouts_total") >= 1


def test_slow_headers_are_cut_off(limited: str) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST /stylize HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        status, data = read_response(sock)  # returns when the server closes the connection
    assert data == b"" and status == 0
    with connect(limited) as sock:  # the server still serves
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_response(sock)[0] == 200


def test_disconnects_are_counted_not_500(styles: dict[str, StyleModel], caplog: pytest.LogCaptureFixture) -> None:
    runner = GatedRunner()
    gated = {"gated": StyleModel("gated", runner, "test")}
    settings = ServeSettings(runtime="eager", max_size=64, cache=CacheSettings("none"))
    body, ctype = form(png(synthetic_photo(32, 32, 2)), style="gated")
    with running_in_thread(create_app(settings, gated)) as url, httpx.Client(base_url=url, timeout=30) as client:
        with caplog.at_level(logging.INFO):
            with connect(url) as sock:  # leaves mid-upload
                sock.sendall(upload_head(ctype, len(body), False) + body[: len(body) // 2])
            runner.gate.clear()
            with connect(url) as sock:  # leaves while its result is computed
                sock.sendall(upload_head(ctype, len(body), False) + body)
                assert runner.started.wait(30)
            runner.gate.set()
            deadline = time.monotonic() + 30
            while metric(client, "nst_client_aborted_total") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert metric(client, "nst_client_aborted_total") == 2
            assert metric(client, "nst_errors_total") == 0  # no 500, no 4xx
            assert metric(client, "nst_requests_total", 'status="499"') == 2
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_hung_redis_opens_the_breaker(styles: dict[str, StyleModel], redis_server: RedisServer) -> None:
    cache = CacheSettings("redis", url=redis_server.url, timeout_s=0.2, breaker_failures=2, breaker_open_s=600)
    settings = ServeSettings(runtime="eager", max_size=32, cache=cache)
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            for seed in range(4):
                body, ctype = form(png(synthetic_photo(24, 24, seed)))
                response = client.post("/stylize", content=body, headers={"content-type": ctype})
                assert response.status_code == 200 and response.headers["x-cache"] == "miss"
            health = client.get("/health").json()
            assert health["status"] == "degraded" and health["cache_state"] == "skipped"
            assert metric(client, "nst_cache_errors_total") == 2  # get + put of the first request timed out ...
            assert metric(client, "nst_cache_skipped_total") == 6  # ... then Redis was not called again
            assert metric(client, "nst_cache_breaker_open") == 1
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)


def test_mpo_16_bit_and_heif_uploads_are_read(limited: str) -> None:
    client = httpx.Client(base_url=limited, timeout=30)
    mpo = png(synthetic_photo(80, 60, 3), "MPO", save_all=True, append_images=[synthetic_photo(80, 60, 4)])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    body, ctype = form(mpo)
    response = client.post("/stylize", content=body, headers={"content-type": ctype})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (64, 48)
    try:
        heif = png(synthetic_photo(80, 60, 3), "HEIF")
    except (KeyError, OSError):
        pytest.skip("pillow-heif is not installed")
    body, ctype = form(heif)
    assert client.post("/stylize", content=body, headers={"content-type": ctype}).status_code == 200


def test_host_header_must_be_allowed(styles: dict[str, StyleModel]) -> None:
    settings = ServeSettings(runtime="eager", cache=CacheSettings("none"))
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").status_code == 200  # 127.0.0.1:port, the bound address
        assert client.get("/health", headers={"host": f"localhost:{url.rsplit(':', 1)[1]}"}).status_code == 200
        rebound = client.get("/health", headers={"host": "attacker.example:8000"})
        assert rebound.status_code == 400 and "not served here" in rebound.json()["detail"]
    allowed = ServeSettings(runtime="eager", allowed_hosts=["nst.example.org"], cache=CacheSettings("none"))
    with running_in_thread(create_app(allowed, styles)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health", headers={"host": "nst.example.org"}).status_code == 200
        assert client.get("/health").status_code == 400


def test_metrics_count_every_outcome_of_a_scripted_mix(styles: dict[str, StyleModel]) -> None:
    runner = GatedRunner()
    gated = {"gated": StyleModel("gated", runner, "test")}
    settings = ServeSettings(runtime="eager", max_size=64, max_queue=0, max_upload_mb=LIMIT_MB)
    with running_in_thread(create_app(settings, gated)) as url, httpx.Client(base_url=url, timeout=30) as client:

        def post(seed: int, style: str = "gated", image: bytes | None = None) -> httpx.Response:
            body, ctype = form(image if image is not None else png(synthetic_photo(40, 30, seed)), style)
            return client.post("/stylize", content=body, headers={"content-type": ctype})

        assert post(1).headers["x-cache"] == "miss"  # miss 1
        assert post(1).headers["x-cache"] == "hit"  # hit 1
        runner.gate.clear()
        runner.started.clear()
        first: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: first.append(post(2)))
        thread.start()
        assert runner.started.wait(30)
        waiter: list[httpx.Response] = []
        joined = threading.Thread(target=lambda: waiter.append(post(2)))  # identical: waits for the first
        joined.start()
        deadline = time.monotonic() + 30
        while metric(client, "nst_uploads_held") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = post(3)  # distinct, and the one model slot is taken (max_queue=0): 503
        runner.gate.set()
        thread.join()
        joined.join()
        assert (first[0].headers["x-cache"], waiter[0].headers["x-cache"], busy.status_code) == ("miss", "shared", 503)
        assert post(4, image=b"not an image").status_code == 415
        assert post(4, style="nope").status_code == 422
        runner.explode = True
        assert post(5).status_code == 500  # a bug: JSON 500, counted, the service goes on
        runner.explode = False
        with connect(url) as sock:  # a client that leaves mid-upload
            sock.sendall(upload_head("multipart/form-data; boundary=x", 5000, False) + b"--x\r\n")
        deadline = time.monotonic() + 30
        while metric(client, "nst_client_aborted_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        counts = {name: metric(client, f"nst_{name}_total") for name in
                  ("cache_hits", "cache_misses", "shared", "rejected", "client_aborted")}  # fmt: skip
        assert counts == {"cache_hits": 1, "cache_misses": 2, "shared": 1, "rejected": 1, "client_aborted": 1}
        errors = {code: metric(client, "nst_errors_total", f'status="{code}"') for code in (415, 422, 500, 503)}
        assert errors == {415: 1, 422: 1, 500: 1, 503: 1}
        assert metric(client, "nst_errors_total") == 4
        stylize_requests = 9  # miss, hit, miss, shared, 503, 415, 422, 500, aborted
        assert metric(client, "nst_requests_total", 'route="/stylize"') == stylize_requests
        assert metric(client, "nst_request_latency_seconds_count", 'route="/stylize"') == stylize_requests
        assert metric(client, "nst_requests_total", 'status="500"') == 1


def test_bodies_held_at_once_are_capped(styles: dict[str, StyleModel]) -> None:
    runner = GatedRunner()
    gated = {"gated": StyleModel("gated", runner, "test")}
    settings = ServeSettings(runtime="eager", max_size=64, max_queue=8, max_uploads_held=2, max_upload_mb=LIMIT_MB,
                             body_timeout_s=1.0, cache=CacheSettings("none"))  # fmt: skip
    with running_in_thread(create_app(settings, gated)) as url, httpx.Client(base_url=url, timeout=30) as client:
        runner.gate.clear()
        body, ctype = form(png(synthetic_photo(40, 30, 7)), "gated")
        request = {"content": body, "headers": {"content-type": ctype}}
        threads = [threading.Thread(target=client.post, args=("/stylize",), kwargs=request) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while metric(client, "nst_uploads_held") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        third = client.post("/stylize", content=body, headers={"content-type": ctype})  # identical, would share
        with connect(url) as sock:  # busy, and stalled: the body it is refused with is still time-bounded
            sock.sendall(upload_head(ctype, len(body), False) + body[:100])
            stalled, _ = read_response(sock)
        with connect(url) as sock:  # busy, and over the limit: still stopped at the limit
            stream_until_answered(sock, upload_head("multipart/form-data; boundary=x", None, True), True)
            huge, _ = read_response(sock)
        runner.gate.set()
        for t in threads:
            t.join()
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert "uploads in progress" in third.json()["detail"]
        assert (stalled, huge) == (408, 413)
        assert metric(client, "nst_rejected_total") == 1 and metric(client, "nst_errors_total", 'status="500"') == 0


def test_disk_cache_leaves_no_temp_files(tmp_path: Path) -> None:
    stale = tmp_path / "dead-writer.tmp"
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / "live-writer.tmp"  # another process writing right now: left alone
    fresh.write_bytes(b"x")
    cache = DiskCache(tmp_path, max_bytes=10_000)
    assert not stale.exists() and fresh.exists()
    cache.put("a", b"1234")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "live-writer.tmp"]


def test_serve_yaml_reads_every_default_from_the_settings() -> None:
    """The dataclasses are the home of each default; ``conf/serve.yaml`` and the cache groups read them through
    ``${nst.serve_default:KEY}`` / ``${nst.cache_default:KEY}`` (and document them) instead of restating them.
    Only what differs per cache kind (its kind, disk's size, redis's address) is written in the group."""
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "serve.yaml"))
    assert isinstance(raw, dict)
    raw.pop("defaults"), raw.pop("hydra"), raw.pop("log_level")
    assert set(raw) == {f.name for f in fields(ServeSettings)} - {"cache"}
    assert raw == {key: f"${{nst.serve_default:{key}}}" for key in raw}
    resolved = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "serve.yaml"), resolve=True)
    assert {k: resolved[k] for k in raw} == {f.name: getattr(ServeSettings(), f.name) for f in fields(ServeSettings)
                                             if f.name != "cache"}  # fmt: skip
    own = {"disk": {"kind", "max_mb"}, "redis": {"kind", "url"}, "none": {"kind"}, "memory": {"kind"}}
    for kind, allowed in own.items():
        group = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "cache" / f"{kind}.yaml"))
        assert isinstance(group, dict) and set(group) <= {f.name for f in fields(CacheSettings)}, kind
        assert {k for k, v in group.items() if v != f"${{nst.cache_default:{k}}}"} == allowed, kind


RSS_SCRIPT = r"""
import io, json, sys, httpx
from PIL import Image
from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.models import load_styles
from nst_lightning.serve.server import running_in_thread

def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) // 1024

styles = load_styles(["starry_night"], None, "eager", "cpu", thumbnail_size=32)
settings = ServeSettings(runtime="eager", max_size=256, cache=CacheSettings("none"))
data = open(sys.argv[1], "rb").read()
small = open(sys.argv[2], "rb").read()
with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=300) as client:
    def send(img):
        files = {"image": ("p.png", img, "image/png")}
        return client.post("/stylize", files=files, data={"style": "starry_night"})

    for _ in range(2):
        assert send(small).status_code == 200  # warm: model, threads, allocator
    idle = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    response = send(data)
    size = list(Image.open(io.BytesIO(response.content)).size)
    figures = {"status": response.status_code, "size": size, "idle_mb": idle}
    print(json.dumps({**figures, "peak_mb": status("VmHWM"), "after_mb": status("VmRSS")}))
"""


def test_huge_16_bit_png_costs_bounded_memory(tmp_path: Path) -> None:
    """A ~100 KB 16-bit 6300×6300 PNG (40 MP): decoded in its own 16-bit mode and reduced strip by strip, no
    float copy; the memory is given back after the request."""
    ramp = np.zeros((6300, 6300), np.uint16)
    ramp[::9] = 50_000
    huge, small = tmp_path / "huge.png", tmp_path / "small.png"
    Image.fromarray(ramp).save(huge)
    del ramp
    synthetic_photo(64, 48, 1).save(small)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(huge), str(small)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["status"] == 200 and figures["size"] == [256, 256]
    # The 16-bit pixels alone are 79 MB; the old float64 path added ~1 GB. Generous bounds, not timings.
    assert figures["peak_mb"] - figures["idle_mb"] < 400
    assert figures["after_mb"] - figures["idle_mb"] < 150


def test_quality_picks_the_fast_variant_per_request(styles: dict[str, StyleModel]) -> None:
    both = {"two": StyleModel("two", lambda x: x.clone(), "test", fast=lambda x: 1 - x),
            "one": StyleModel("one", lambda x: x.clone(), "test")}  # fmt: skip
    settings = ServeSettings(runtime="eager", max_size=64, quality="fast")
    photo = png(synthetic_photo(40, 30, 8))
    with running_in_thread(create_app(settings, both)) as url, httpx.Client(base_url=url, timeout=30) as client:

        def post(style: str, **fields: str) -> httpx.Response:
            body, ctype = form(photo, style, **fields)
            return client.post("/stylize", content=body, headers={"content-type": ctype})

        fast, full = post("two"), post("two", quality="full")  # the service's default here is fast
        assert (fast.headers["x-variant"], full.headers["x-variant"]) == ("fast", "full")
        assert full.headers["x-cache"] == "miss"  # another variant, another cache entry
        inverted = np.asarray(Image.open(io.BytesIO(fast.content)), dtype=int)
        identity = np.asarray(Image.open(io.BytesIO(full.content)), dtype=int)
        assert np.abs(inverted + identity - 255).max() <= 1
        assert post("one").headers["x-variant"] == "full"  # no fast variant: the full network answers
        assert post("two", quality="fastest").status_code == 422
        assert client.get("/health").json()["fast"] == ["two"]


def test_a_shipped_student_is_the_fast_variant_of_its_own_teacher_only(tiny_ckpt, tmp_path, monkeypatch) -> None:
    """A student in ``pretrained/fast/`` named like a shipped model serves that model's quality=fast; a user's
    network of the same name (``models_dir``) never gets it; ``fast_models_dir`` overrides the shipped one."""
    from nst_lightning.inference import checkpoint, export_model

    shipped = tmp_path / "fast"
    export_model(tiny_ckpt, shipped / f"{STYLE}.pt")
    monkeypatch.setattr(checkpoint, "PRETRAINED_FAST_DIR", shipped)
    x = torch.rand(1, 3, 24, 20)
    student = load_styles([STYLE], None, "eager", "cpu", thumbnail_size=16)[STYLE]
    assert student.fast is not None and student.variant("fast")[0] == "fast"
    torch.testing.assert_close(student.fast(x), checkpoint.load_model(tiny_ckpt).net.eval()(x))
    own = tmp_path / "own"
    export_model(tiny_ckpt, own / f"{STYLE}.pt")
    assert load_styles([], str(own), "eager", "cpu", thumbnail_size=16)[STYLE].fast is None
    other = tmp_path / "other"
    export_model(STYLE, other / f"{STYLE}.pt")  # the full network as the "student": a different output
    chosen = load_styles([STYLE], None, "eager", "cpu", thumbnail_size=16, fast_models_dir=str(other))[STYLE]
    assert not torch.allclose(chosen.fast(x), student.fast(x))


def test_an_upload_gives_the_pixels_stylize_py_writes(styles: dict[str, StyleModel], tmp_path: Path) -> None:
    """The service decodes, resizes and stylizes with the library's own code: byte-for-byte the pixels of
    ``stylize_file`` (what ``stylize.py`` runs) for a 16-bit PNG (reduced-size decoding), an RGBA PNG, a 10×10."""
    from nst_lightning.inference import stylize_file

    deep = (np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype(np.uint16)
    rgba = synthetic_photo(90, 70, seed=9).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 90, dtype=np.uint8), (70, 1))))
    cases = {"deep.png": Image.fromarray(deep), "rgba.png": rgba, "tiny.png": synthetic_photo(10, 10, seed=10)}
    settings = ServeSettings(runtime="eager", max_size=64, cache=CacheSettings("none"))
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for name, img in cases.items():
            img.save(tmp_path / name)
            body, ctype = form((tmp_path / name).read_bytes(), strength="0.9")
            served = Image.open(
                io.BytesIO(client.post("/stylize", content=body, headers={"content-type": ctype}).content)
            )
            written = Image.open(stylize_file(STYLE, tmp_path / name, tmp_path / f"out_{name}", max_size=64,
                                              strength=0.9))  # fmt: skip
            assert served.mode == written.mode and served.size == written.size, name
            assert np.array_equal(np.asarray(served), np.asarray(written)), name


@pytest.mark.slow
def test_sigterm_is_not_blocked_by_a_stalled_upload() -> None:
    from nst_lightning.serve.server import free_port

    port = free_port()
    args = [f"port={port}", "runtime=eager", "cache=none", "body_timeout_s=600", "shutdown_timeout_s=1"]
    proc = subprocess.Popen([sys.executable, "serve.py", *args], cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve.py did not come up"
                time.sleep(0.2)
        body, ctype = form(png(synthetic_photo(32, 32, 1)))
        with connect(f"http://127.0.0.1:{port}") as sock:
            sock.sendall(upload_head(ctype, len(body), False) + body[:50])  # stalls for up to 600 s
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            # It exits (uvicorn re-raises SIGTERM once shut down): the stalled request was dropped after 1 s.
            assert proc.wait(timeout=120) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
