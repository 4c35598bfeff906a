"""Run the app with uvicorn: in the foreground (``serve.py``) or in a background thread (tests, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from nst_lightning.errors import NSTError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """A clear error now (instead of uvicorn exiting after the models loaded) when ``host:port`` is taken."""
    try:
        with socket.socket() as s:
            s.bind((host, port))
    except OSError as exc:
        raise NSTError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port=N") from exc


def serve_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM stop it cleanly)."""
    check_port(host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@contextmanager
def running_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Start ``app`` on a free loopback port in a daemon thread; yields its base URL; stops it on exit."""
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
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
        thread.join(timeout=10)
