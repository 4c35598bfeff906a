"""Run the app with uvicorn: in the foreground (``serve.py``) or in a background thread (tests, notebooks).

The uvicorn settings that bound a connection come from :class:`ServeSettings`: the request headers must arrive
within ``header_timeout_s`` (uvicorn has no such timeout itself: :class:`HeaderTimeoutProtocol` adds it) and be
at most ``max_header_kb``; on shutdown, requests still running after ``shutdown_timeout_s`` are dropped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from nst_lightning.errors import NSTError
from nst_lightning.serve.settings import ServeSettings


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request line and headers do not all arrive within
    ``header_timeout`` seconds of the connection (or of the previous response): a client trickling header
    bytes cannot hold a connection open."""

    header_timeout = 10.0  # set per server by :func:`make_config`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _header_timeout_expired(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # the request's headers never came complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this kept-alive connection gets the same time for its headers


def make_config(app: FastAPI, settings: ServeSettings, log_level: str = "info", **overrides: Any) -> uvicorn.Config:
    """The uvicorn config for ``app`` with the connection limits of ``settings``."""
    protocol = type("ServeProtocol", (HeaderTimeoutProtocol,), {"header_timeout": settings.header_timeout_s})
    values: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=protocol,
        h11_max_incomplete_event_size=settings.max_header_kb * 1024,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=5,
    )
    values.update(overrides)
    return uvicorn.Config(app, **values)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """A clear error now (instead of uvicorn exiting after the models loaded) when ``host:port`` is taken.

    The test bind is the one uvicorn (asyncio) makes: with ``SO_REUSEADDR``, so connections of a server that just
    stopped, left in TIME_WAIT, do not block a restart, while a port somebody listens on still fails here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen()
    except OSError as exc:
        raise NSTError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port=N") from exc


@contextmanager
def private_tempdir(prefix: str = "nst-serve-") -> Iterator[Path]:
    """A temporary folder of this process's own, made the temporary folder of everything in it (``TMPDIR`` for
    native libraries, :data:`tempfile.tempdir` for Python), and removed with whatever it holds on exit.

    Libraries on the runtime path write there on their own, e.g. ONNX Runtime's telemetry session file
    (``.ses``) when it is imported and torch's ``torchinductor_<user>`` cache folder: a service must leave no
    files behind. Enter it before those libraries are imported.
    """
    parent = tempfile.gettempdir()
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def serve_forever(app: FastAPI, settings: ServeSettings, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM stop it, dropping requests after ``shutdown_timeout_s``)."""
    check_port(settings.host, settings.port)
    uvicorn.Server(make_config(app, settings, log_level)).run()


@contextmanager
def running_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Start ``app`` on a free loopback port in a daemon thread; yields its base URL; stops it on exit.

    The connection limits are those of the app's settings (``app.state.settings``)."""
    port = port or free_port(host)
    settings: ServeSettings = app.state.settings
    config = make_config(app, settings, "warning", host=host, port=port, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=settings.shutdown_timeout_s + 10)
