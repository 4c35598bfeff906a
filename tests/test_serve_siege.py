"""The service under attack through real HTTP clients and raw sockets against uvicorn on loopback: inputs that
once reached a 500, restarts on a port with connections in TIME_WAIT, slow clients that must not starve others,
header blocks over the limit, the breaker's half-open state."""

from __future__ import annotations

import io
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.serve import CacheSettings, ServeSettings, create_app
from nst_lightning.serve.errors import BadRequest
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.server import check_port, free_port, running_in_thread
from nst_lightning.serve.uploads import parse_style_mix
from tests.conftest import REPO, synthetic_photo

STYLE = "starry_night"


@pytest.fixture(scope="module")
def styles() -> dict[str, StyleModel]:
    return load_styles([STYLE], None, "eager", "cpu", thumbnail_size=32)


@pytest.fixture(scope="module")
def client(styles: dict[str, StyleModel]) -> Iterator[httpx.Client]:
    settings = ServeSettings(runtime="eager", max_size=64, max_upload_mb=0.5, cache=CacheSettings("none"))
    with running_in_thread(create_app(settings, styles)) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/stylize", "/stylize/zeroshot"])
def test_a_boundary_longer_than_the_parser_takes_is_a_400(client: httpx.Client, route: str) -> None:
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="style"\r\n\r\n{STYLE}\r\n--{boundary}--\r\n'
    response = client.post(
        route, content=body.encode(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 400, response.text
    assert "malformed" in response.json()["detail"] and "256" in response.json()["detail"]


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 100), (3, 7)])
def test_a_tiny_painting_is_enlarged_to_a_flat_field_not_a_500(client: httpx.Client, size: tuple[int, int]) -> None:
    photo = png(synthetic_photo(48, 40, seed=1))
    painting = png(Image.new("RGB", size, (200, 40, 30)))
    files = {"image": ("photo.png", photo, "image/png"), "style_image": ("tiny.png", painting, "image/png")}
    response = client.post("/stylize/zeroshot", files=files)
    assert response.status_code == 200, response.text
    out = Image.open(io.BytesIO(response.content))
    assert out.size == (48, 40)


@pytest.mark.parametrize("mix", ['{"a": 1' + "0" * 400 + "}", '{"a": 1e308, "b": 1e308}', '{"a": 1e999}'])
def test_a_style_mix_weight_too_large_for_a_float_is_a_422(mix: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_style_mix(mix, ["a", "b"])
    assert refused.value.status == 422 and "weights" in refused.value.message


def _time_wait_port() -> int:
    """A port whose server closed its accepted connections first, so they sit in TIME_WAIT; nobody listens."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's create_server binds
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    for _ in clients:
        conn, _ = listener.accept()
        conn.close()  # the server's side closes first: its end goes to TIME_WAIT
    for c in clients:
        c.recv(1)
        c.close()
    listener.close()
    return port


def test_port_check_passes_with_time_wait_and_fails_with_a_listener() -> None:
    port = _time_wait_port()
    check_port("127.0.0.1", port)  # uvicorn would bind here, so must the check
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(NSTError, match="cannot listen on 127.0.0.1"):
            check_port("127.0.0.1", port)


def _start(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "serve.py", f"port={port}", "runtime=eager", "cache=none",
                             f"styles=[{STYLE}]", *args], cwd=REPO, stderr=subprocess.PIPE)  # fmt: skip


def _wait_up(proc: subprocess.Popen, port: int, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"serve.py exited {proc.returncode}: {proc.stderr.read().decode()[-400:]}"
        assert time.monotonic() < deadline, "serve.py did not come up"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_with_clients_connected_then_restart_at_once() -> None:
    port = free_port()
    first = _start(port, "shutdown_timeout_s=1")
    second = None
    try:
        _wait_up(first, port)
        kept = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) for _ in range(4)]
        for c in kept:  # kept-alive connections, open when the server stops
            assert c.get("/health").status_code == 200
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) in (0, -signal.SIGTERM)
        states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True).stdout
        second = _start(port)  # at once, with the old connections in TIME_WAIT
        _wait_up(second, port)
        assert "WAIT" in states or shutil.which("ss") is None  # old connections FIN-WAIT or TIME-WAIT: the case here
        for c in kept:
            c.close()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
