"""The ASGI layer in front of the app: Host check, request bodies bounded in bytes, time and number, and every
outcome counted once.

Every request body is read here, before any route sees it: bytes are counted as they arrive (a chunked body
and a lying ``Content-Length`` alike), so the limit holds before the bytes are stored; the whole body must
arrive within ``body_timeout_s``; and at most ``max_uploads_held`` bodies are held in memory at once (reading,
decoding, queued, running or waiting on a shared result: a body's slot is released when its response is sent).
Routes get the body replayed from memory, so an endpoint that takes uploads needs no limits of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any

from nst_lightning.serve.metrics import ABORTED, Metrics
from nst_lightning.serve.settings import ServeSettings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small text fields, on top of the image itself

IMAGES_PER_UPLOAD = {"/stylize/zeroshot": 2}  # routes whose form carries more than one image (photo + painting)
RATE_GRACE_S = 2.0  # seconds after the headers before a body's average rate must reach min_upload_kbps
MAX_ECHO = 80  # characters of a user-supplied value quoted back in an error message


def shorten(value: object, limit: int = MAX_ECHO) -> str:
    """``repr`` of a user value, cut to ``limit`` characters (an error message never echoes a huge input)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}…({len(text)} chars)"


class ClientGone(Exception):
    """The client closed the connection before its request was complete."""


class BodyRefused(Exception):
    """The body broke a limit: answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(host: str) -> str:
    """``example.org:8000`` → ``example.org``; ``[::1]:8000`` → ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def json_response(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: Host allow-list, bounded bodies, outcome metrics and a JSON 500 for bugs."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.hosts = settings.hosts()
        self.held = 0  # requests whose whole body has arrived and is being worked on (at most max_uploads_held)
        self.body_bytes = 0  # bytes of request bodies in memory: arriving or held (at most max_body_bytes)
        self.receiving: dict[str, int] = {}  # bodies being sent now, by client address
        self.max_body_bytes = settings.max_uploads_held * (settings.max_upload_bytes + FORM_OVERHEAD)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: list[int] = []  # the status sent, once the response has started
        scope["nst.status"] = status

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self._handle(scope, receive, send_tracked)
        except ClientGone:
            pass
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if not status:
                await json_response(send_tracked, 500, "internal error; the service keeps running")
        route = getattr(scope.get("route"), "path", None) or ("/stylize" if scope["path"] == "/stylize" else "other")
        code = ABORTED if scope.get("nst.gone") or not status else status[0]
        if code == ABORTED:
            self.metrics.client_aborted.inc()
        self.metrics.observe(route, code, time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _head_size(scope) > self.settings.max_header_kb * 1024:  # h11 checks only a head still incomplete
            await json_response(send, 431, f"the request headers are larger than {self.settings.max_header_kb} KB",
                                {"connection": "close"})  # fmt: skip
            return
        host = _header(scope, b"host")
        if self.hosts is not None and (host is None or _host_name(host) not in self.hosts):
            await json_response(send, 400, f"host {shorten(host)} is not served here (allowed_hosts)",
                                {"connection": "close"})  # fmt: skip
            return
        if not _has_body(scope):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        if self.receiving.get(client, 0) >= self.settings.max_uploads_per_client:
            self.metrics.rejected.inc()  # refused before a byte of its body is read: it holds nothing
            limit = self.settings.max_uploads_per_client
            await json_response(send, 503, f"this client already sends {limit} uploads at once; retry when one is done",
                                {"retry-after": "1", "connection": "close"})  # fmt: skip
            return
        try:
            if self.held >= self.settings.max_uploads_held:
                await self._read(scope, receive, client, keep=False)  # drained, not stored (bounded like any body)
                await self._busy(send)
                return
            body = await self._read(scope, receive, client, keep=True)
            try:
                if self.held >= self.settings.max_uploads_held:  # filled while this body arrived: dropped
                    await self._busy(send)
                    return
                self.held += 1
                self.metrics.uploads_held.set(self.held)
                try:
                    watcher = asyncio.ensure_future(_watch(receive, scope))
                    try:
                        await self.app(scope, _replay(body, receive), send)
                    finally:
                        watcher.cancel()
                finally:
                    self.held -= 1
                    self.metrics.uploads_held.set(self.held)
            finally:
                self.body_bytes -= len(body)
        except BodyRefused as exc:
            headers = {"connection": "close", **({"retry-after": "1"} if exc.status == 503 else {})}
            await json_response(send, exc.status, exc.message, headers)

    async def _busy(self, send: Send) -> None:
        self.metrics.rejected.inc()
        await json_response(send, 503, f"the service is busy ({self.held} uploads in progress); retry shortly",
                            {"retry-after": "1"})  # fmt: skip

    async def _read(self, scope: Scope, receive: Receive, client: str, keep: bool) -> bytes:
        """The whole body (or b"" when ``keep`` is False), counted as it streams in, within the time limits.

        A kept body's bytes count against :attr:`max_body_bytes` as they arrive (and stay counted until the
        request ends: the caller subtracts them); a body being sent counts against its client's
        ``max_uploads_per_client`` until it is complete.

        Raises:
            BodyRefused: over ``max_body`` (413, before the extra bytes are stored), slower than
                ``body_timeout_s`` or than ``min_upload_kbps`` (408), or the bodies in memory would pass
                :attr:`max_body_bytes` (503).
            ClientGone: the client disconnected.
        """
        self.receiving[client] = self.receiving.get(client, 0) + 1
        try:
            chunks: list[bytes] = []
            async with aclosing(self._chunks(scope, receive)) as arriving:
                async for chunk in arriving:
                    if keep and chunk:
                        if self.body_bytes + len(chunk) > self.max_body_bytes:
                            self.metrics.rejected.inc()
                            raise BodyRefused(
                                503, "the service is busy (uploads in memory at their bound); retry shortly"
                            )
                        self.body_bytes += len(chunk)
                        chunks.append(chunk)
            return b"".join(chunks)
        except BaseException:
            if keep:
                self.body_bytes -= sum(len(c) for c in chunks)
            raise
        finally:
            self.receiving[client] -= 1
            if not self.receiving[client]:
                del self.receiving[client]

    async def _chunks(self, scope: Scope, receive: Receive) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive, within the size, the total time and the minimum rate."""
        images = IMAGES_PER_UPLOAD.get(scope["path"], 1)
        max_body = images * self.settings.max_upload_bytes + FORM_OVERHEAD
        size = (
            f"{self.settings.max_upload_mb:g} MB"
            if images == 1
            else f"{images} images of {self.settings.max_upload_mb:g} MB"
        )
        refused = BodyRefused(413, f"the upload is larger than {size}")
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > max_body):
            raise refused
        total = 0
        start = time.monotonic()
        deadline = start + self.settings.body_timeout_s
        rate = self.settings.min_upload_kbps * 1024  # bytes/s; 0: no minimum
        while True:
            wake = deadline if not rate else min(deadline, start + max(RATE_GRACE_S, total / rate))
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wake - time.monotonic(), 0.0))
            except TimeoutError:
                now = time.monotonic()
                if now < deadline and not (now - start >= RATE_GRACE_S and total < rate * (now - start)):
                    continue  # woke a little early: the average is still above the minimum
                self.metrics.timeouts.inc()
                if now >= deadline:
                    message = f"the upload did not arrive within {self.settings.body_timeout_s:g} s; send it faster"
                else:
                    message = f"the upload arrives slower than {self.settings.min_upload_kbps:g} KB/s; send it faster"
                raise BodyRefused(408, message) from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            total += len(chunk)
            self.metrics.upload_bytes.inc(len(chunk))
            if total > max_body:
                raise refused
            yield chunk
            if not message.get("more_body", False):
                return


def _head_size(scope: Scope) -> int:
    """Bytes of the request line and headers, as sent (within a few bytes of line endings)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    return line + 12 + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    return _header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() != "0")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then passes on what the server says (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _watch(receive: Receive, scope: Scope) -> None:
    """Mark the request ``nst.gone`` when its client disconnects before the response has started."""
    message = await receive()
    if message["type"] == "http.disconnect" and not scope["nst.status"]:
        scope["nst.gone"] = True
