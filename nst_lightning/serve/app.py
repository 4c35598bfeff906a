"""The FastAPI app: ``POST /stylize``, ``GET /styles``, ``GET /health``, ``GET /metrics`` and the web page at ``/``.

Model calls run in a small thread pool (``max_concurrency`` workers) so the event loop keeps answering; at most
``max_queue`` more requests wait for a worker, further ones get 503 at once, which bounds memory under load.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from nst_lightning.errors import NSTError
from nst_lightning.serve.cache import ResultCache, cache_key, make_cache
from nst_lightning.serve.metrics import Metrics
from nst_lightning.serve.models import StyleModel, load_styles, stylize_image
from nst_lightning.serve.settings import ServeSettings
from nst_lightning.serve.uploads import (
    OUTPUT_FORMATS,
    BadRequest,
    Options,
    check_content_type,
    decode_image,
    parse_options,
    parse_style_mix,
)
from nst_lightning.serve.zeroshot import ARBITRARY_STYLES, add_zeroshot_routes

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
# The form of POST /stylize, for /docs (the endpoint reads the form itself, to check limits in its own order).
STYLIZE_OPENAPI = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "style"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "the photo (png, jpeg, webp)"},
            "style": {"type": "string", "description": "a name from GET /styles"},
            "style_mix": {"type": "string", "description": 'a multi-style network: JSON {"style": weight, ...}'},
            "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
            "preserve_color": {"type": "boolean", "default": False},
            "max_size": {"type": "integer", "description": "longest output side (default: the service's max_size)"},
            "format": {"type": "string", "enum": ["png", "jpeg"], "default": "png"},
        }}}}},
    "responses": {"200": {"description": "the stylized image", "content": {"image/png": {}, "image/jpeg": {}}}},
}  # fmt: skip
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small text fields, on top of the image itself


class ModelGate:
    """Runs model work in ``max_concurrency`` threads with at most ``max_queue`` requests waiting."""

    def __init__(self, max_concurrency: int, max_queue: int, metrics: Metrics) -> None:
        self.limit = max_concurrency + max_queue
        self.count = 0
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="nst-model")

    def _release(self) -> None:
        self.count -= 1
        self.metrics.in_flight.set(self.count)

    async def run(self, fn: Callable[..., bytes], *args: Any) -> bytes:
        if self.count >= self.limit:
            self.metrics.rejected.inc()
            raise BadRequest(503, f"the service is busy ({self.count} requests running or queued); retry shortly")
        loop = asyncio.get_running_loop()
        self.count += 1
        self.metrics.in_flight.set(self.count)
        future = self.executor.submit(fn, *args)
        # Released when the work really ends (not when a client disconnects), so the bound holds.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future)


def encode(image: Image.Image, fmt: str) -> bytes:
    """RGB or RGBA PIL image → PNG (alpha kept) or JPEG (alpha dropped) bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=4)
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def compute(
    model: StyleModel, data: bytes, options: Options, settings: ServeSettings, style_mix: dict[str, float] | None = None
) -> bytes:
    """Decode, stylize and encode one upload (runs in a model worker thread)."""
    image = decode_image(data, settings.max_pixels)
    try:
        style = None if style_mix else model.style
        out = stylize_image(model.runner, image, options.strength, options.preserve_color, options.max_size,
                            settings.tile_size, style=style, style_mix=style_mix)  # fmt: skip
    except NSTError as exc:
        raise BadRequest(422, str(exc)) from None
    return encode(out, options.format)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "other")


def _refuse_upload(request: Request, max_upload: int) -> JSONResponse | None:
    """411/413 for an upload to ``POST /stylize`` judged from its headers alone, before its body is read."""
    if request.method != "POST" or request.url.path != "/stylize":
        return None
    length = request.headers.get("content-length")
    if length is None:
        return _error(411, "send a Content-Length header with the upload")
    if not length.isdigit() or int(length) > max_upload + FORM_OVERHEAD:
        return _error(413, f"the upload is larger than {max_upload / 2**20:g} MB")
    return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(settings: ServeSettings, styles: dict[str, StyleModel] | None = None) -> FastAPI:
    """Build the service. ``styles`` lets tests share loaded models; by default they are loaded here, once."""
    cache: ResultCache = make_cache(settings.cache)  # first: an unreachable Redis fails before models load
    if styles is None:
        styles = load_styles(
            settings.styles, settings.models_dir, settings.runtime, settings.device, settings.thumbnail_size
        )
    metrics = Metrics()
    gate = ModelGate(settings.max_concurrency, settings.max_queue, metrics)
    max_upload = int(settings.max_upload_mb * 1024 * 1024)

    app = FastAPI(title="nst_lightning", summary="Neural style transfer as a service", docs_url="/docs")
    app.state.settings, app.state.styles, app.state.metrics, app.state.cache = settings, styles, metrics, cache

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        refused = _refuse_upload(request, max_upload)
        if refused is None:
            try:
                response = await call_next(request)
            except Exception:
                metrics.requests.labels(_route(request), 500).inc()
                metrics.errors.labels(_route(request), 500).inc()
                raise
        route = "/stylize" if refused is not None else _route(request)
        response = refused or response
        metrics.requests.labels(route, response.status_code).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        if response.status_code >= 400:
            metrics.errors.labels(route, response.status_code).inc()
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error ({type(exc).__name__}); the service keeps running")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is loaded."""
        runtimes = sorted({getattr(m.runner, "name", "eager") for m in styles.values()})  # what auto resolved to
        return {"status": "ok", "styles": sorted(styles), "runtime": settings.runtime, "runtimes": runtimes,
                "cache": settings.cache.kind, "in_flight": gate.count}  # fmt: skip

    @app.get("/styles")
    async def list_styles() -> dict[str, Any]:
        """Names and thumbnail URLs of the styles this service runs, and the network that serves each (a
        multi-style network is listed under its own name, for style 0 or any ``style_mix``, and once per style as
        ``<network>.<style>``; ``networks`` lists each one's styles); ``arbitrary``: any painting, zero-shot."""
        named = []
        for n in sorted(styles):
            m = styles[n]
            entry: dict[str, Any] = {"name": n, "thumbnail": f"/styles/{n}/thumbnail.jpg", "network": m.network or n}
            if m.network_styles:
                entry.update(style=m.style, network_styles=m.network_styles)
            named.append(entry)
        networks = {m.network: m.network_styles for m in styles.values() if m.network_styles}
        return {"styles": named, "arbitrary": ARBITRARY_STYLES, "networks": networks}

    @app.get("/styles/{name}/thumbnail.jpg")
    async def thumbnail(name: str) -> Response:
        if name not in styles:
            raise BadRequest(404, f"unknown style {name!r}; see GET /styles")
        return Response(styles[name].thumbnail, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/stylize", openapi_extra=STYLIZE_OPENAPI)
    async def stylize(request: Request) -> Response:
        """Multipart form: ``image`` (file), ``style``, optional ``strength``, ``preserve_color``, ``max_size``,
        ``format`` (png | jpeg). Returns the stylized image; header ``X-Cache`` says hit or miss."""
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise BadRequest(422, "send the photo as a multipart/form-data file field named 'image'")
        check_content_type(upload.content_type)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        style = fields.get("style", "")
        if style not in styles:
            raise BadRequest(422, f"unknown style {style!r}; choose one of {', '.join(sorted(styles))} (GET /styles)")
        options = parse_options(fields, settings.max_size)
        mix = parse_style_mix(fields.get("style_mix"), styles[style].network_styles)
        data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            raise BadRequest(413, f"the image is larger than {settings.max_upload_mb:g} MB")
        extra = {"style_mix": mix} if mix else {}
        key = cache_key(hashlib.sha256(data).hexdigest(), style, {**options.key(), "tile_size": settings.tile_size,
                                                                  **extra})  # fmt: skip
        result = await _cache_get(key)
        status = "hit"
        if result is None and key in pending:  # the same request is being computed: wait for that result
            result = await _join(pending[key])
            status = "shared"
        if result is None:
            metrics.cache_misses.inc()
            result = await _compute_once(key, style, data, options, mix)
            status = "miss"
        else:
            metrics.cache_hits.inc()
        filename = f"stylized_{style}.{'jpg' if options.format == 'jpeg' else 'png'}"
        headers = {"X-Cache": status, "Content-Disposition": f'inline; filename="{filename}"'}
        return Response(result, media_type=OUTPUT_FORMATS[options.format], headers=headers)

    pending: dict[str, asyncio.Future[bytes]] = {}  # results being computed, by cache key

    async def _compute_once(
        key: str, style: str, data: bytes, options: Options, mix: dict[str, float] | None = None
    ) -> bytes:
        """Run the model for ``key``; identical requests arriving meanwhile wait for this result."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pending[key] = future
        try:
            start = time.perf_counter()
            result = await gate.run(compute, styles[style], data, options, settings, mix)
            metrics.model_seconds.labels(style).observe(time.perf_counter() - start)
            await _cache_put(key, result)
            future.set_result(result)
            return result
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)  # waiters get the same 4xx
                future.exception()  # mark it retrieved: no "never retrieved" warning when nobody waits
            else:
                future.cancel()
            raise
        finally:
            pending.pop(key, None)

    async def _join(future: asyncio.Future[bytes]) -> bytes | None:
        """The result another request is computing; None if that request was cancelled (then compute anew)."""
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                return None
            raise

    async def _cache_get(key: str) -> bytes | None:
        try:
            return await anyio.to_thread.run_sync(cache.get, key)
        except Exception as exc:  # a cache outage must not fail requests
            metrics.cache_errors.inc()
            log.warning("cache get failed: %s", exc)
            return None

    async def _cache_put(key: str, value: bytes) -> None:
        try:
            await anyio.to_thread.run_sync(cache.put, key, value)
        except Exception as exc:
            metrics.cache_errors.inc()
            log.warning("cache put failed: %s", exc)

    app.state.zeroshot = add_zeroshot_routes(app, gate.run, _cache_get, _cache_put, encode)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
