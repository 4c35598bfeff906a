"""The FastAPI app: ``POST /stylize``, ``GET /styles``, ``GET /health``, ``GET /metrics`` and the web page at ``/``.

One stylize request goes through these bounded stages, each with its own limit (see ``docs/serve.md``):

1. :class:`~nst_lightning.serve.guard.Guard`: Host check; the body is read and counted as it streams, within
   ``max_upload_mb`` and ``body_timeout_s``, while at most ``max_uploads_held`` bodies are in memory.
2. The form and options are checked; a cache hit (or an identical request in flight) answers at once.
3. :meth:`Pipeline.decode`: the upload is decoded and checked in a pool of ``decode_workers`` threads, at reduced
   size, before it may take a model slot (junk never waits for, or holds, a model).
4. :class:`ModelGate`: ``max_concurrency`` model calls run, ``max_queue`` more wait; beyond that 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from nst_lightning.errors import NSTError
from nst_lightning.serve.cache import CircuitBreaker, cache_key, make_cache
from nst_lightning.serve.errors import BadRequest
from nst_lightning.serve.form import parse_form
from nst_lightning.serve.guard import Guard, shorten
from nst_lightning.serve.memory import release_memory
from nst_lightning.serve.metrics import Metrics
from nst_lightning.serve.models import StyleModel, load_styles, stylize_image
from nst_lightning.serve.settings import ServeSettings
from nst_lightning.serve.uploads import (
    OUTPUT_FORMATS,
    Options,
    check_content_type,
    decode_upload,
    parse_options,
    parse_style_mix,
)
from nst_lightning.serve.zeroshot import ARBITRARY_STYLES, add_zeroshot_routes

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
T = TypeVar("T")
# The form of POST /stylize, for /docs (the endpoint reads the form itself, to check limits in its own order).
STYLIZE_OPENAPI = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "style"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "the photo (png, jpeg, webp, ...)"},
            "style": {"type": "string", "description": "a name from GET /styles"},
            "style_mix": {"type": "string", "description": 'a multi-style network: JSON {"style": weight, ...}'},
            "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
            "preserve_color": {"type": "boolean", "default": False},
            "max_size": {"type": "integer", "description": "longest output side (default: the service's max_size)"},
            "format": {"type": "string", "enum": ["png", "jpeg"], "default": "png"},
            "quality": {"type": "string", "enum": ["full", "fast"], "description": "default: the service's quality"},
        }}}}},
    "responses": {"200": {"description": "the stylized image", "content": {"image/png": {}, "image/jpeg": {}}}},
}  # fmt: skip


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

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
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
    """RGB or RGBA PIL image → PNG (alpha kept) or JPEG (RGB only) bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=4)
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Pipeline:
    """Decode and compute, each in its own bounded thread pool (the work behind a cache miss)."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.decoder = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="nst-decode")
        self.gate = ModelGate(settings.max_concurrency, settings.max_queue, metrics)

    def _decode(self, data: bytes, max_size: int) -> Image.Image:
        start = time.perf_counter()
        try:
            return decode_upload(data, self.settings.max_pixels, max_size)
        finally:
            self.metrics.decode_seconds.observe(time.perf_counter() - start)
            if self.settings.trim_memory:
                release_memory()  # the full-size decode is gone now

    async def decode(self, data: bytes, max_size: int) -> Image.Image:
        return await asyncio.wrap_future(self.decoder.submit(self._decode, data, max_size))

    def _compute(
        self, model: StyleModel, image: Image.Image, options: Options, style_mix: dict[str, float] | None = None
    ) -> bytes:
        try:
            _, runner = model.variant(options.quality)
            style = None if style_mix else model.style
            out = stylize_image(runner, image, options.strength, options.preserve_color, options.max_size,
                                self.settings.tile_size, style=style, style_mix=style_mix)  # fmt: skip
            return encode(out, options.format)
        except NSTError as exc:
            raise BadRequest(422, str(exc)) from None
        finally:
            del image
            if self.settings.trim_memory:
                release_memory()

    async def compute(
        self, model: StyleModel, image: Image.Image, options: Options, style_mix: dict[str, float] | None = None
    ) -> bytes:
        start = time.perf_counter()
        result = await self.gate.run(self._compute, model, image, options, style_mix)
        self.metrics.model_seconds.labels(model.name).observe(time.perf_counter() - start)
        return result


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(settings: ServeSettings, styles: dict[str, StyleModel] | None = None) -> FastAPI:
    """Build the service. ``styles`` lets tests share loaded models; by default they are loaded here, once."""
    metrics = Metrics()
    backend = make_cache(settings.cache)  # first: an unreachable Redis fails before models load
    cache = CircuitBreaker(backend, settings.cache.breaker_failures, settings.cache.breaker_open_s)
    cache.on_error = lambda exc: (metrics.cache_errors.inc(), log.warning("cache call failed: %s", exc))
    cache.on_skip = metrics.cache_skipped.inc
    if styles is None:
        styles = load_styles(settings.styles, settings.models_dir, settings.runtime, settings.device,
                             settings.thumbnail_size, settings.fast_runtime, settings.fast_models_dir)  # fmt: skip
    pipeline = Pipeline(settings, metrics)

    app = FastAPI(title="nst_lightning", summary="Neural style transfer as a service", docs_url="/docs")
    app.state.settings, app.state.styles, app.state.metrics, app.state.cache = settings, styles, metrics, cache
    app.add_middleware(Guard, settings=settings, metrics=metrics)  # type: ignore[arg-type]

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, what is loaded, and ``degraded`` while the cache is skipped after failures."""
        runtimes = sorted({getattr(m.runner, "name", "eager") for m in styles.values()})  # what auto resolved to
        fast = sorted(name for name, m in styles.items() if m.fast is not None)
        cache_state = "skipped" if cache.is_open else "ok"
        metrics.cache_open.set(int(cache.is_open))
        return {"status": "degraded" if cache.is_open else "ok", "styles": sorted(styles), "runtime": settings.runtime,
                "runtimes": runtimes, "fast": fast, "cache": settings.cache.kind, "cache_state": cache_state,
                "in_flight": pipeline.gate.count}  # fmt: skip

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
            raise BadRequest(404, f"unknown style {shorten(name)}; see GET /styles")
        return Response(styles[name].thumbnail, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.cache_open.set(int(cache.is_open))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/stylize", openapi_extra=STYLIZE_OPENAPI)
    async def stylize(request: Request) -> Response:
        """Multipart form: ``image`` (file), ``style``, optional ``strength``, ``preserve_color``, ``max_size``,
        ``format`` (png | jpeg), ``quality`` (full | fast). Returns the stylized image; header ``X-Cache`` says
        hit, shared or miss, ``X-Variant`` which variant made it."""
        form = parse_form(await request.body(), request.headers.get("content-type"))
        upload = form.files.get("image")
        if upload is None:
            raise BadRequest(422, "send the photo as a multipart/form-data file field named 'image'")
        check_content_type(upload.content_type)
        if len(upload.data) > settings.max_upload_bytes:
            raise BadRequest(413, f"the image is larger than {settings.max_upload_mb:g} MB")
        style = form.fields.get("style", "")
        if style not in styles:
            raise BadRequest(
                422, f"unknown style {shorten(style)}; choose one of {', '.join(sorted(styles))} (GET /styles)"
            )
        options = parse_options(form.fields, settings.max_size, settings.quality)
        options = replace(options, quality=styles[style].variant(options.quality)[0])  # what will really run
        mix = parse_style_mix(form.fields.get("style_mix"), styles[style].network_styles)
        extra = {"style_mix": mix} if mix else {}
        key = cache_key(
            hashlib.sha256(upload.data).hexdigest(),
            style,
            {**options.key(), "tile_size": settings.tile_size, **extra},
        )
        result = await anyio.to_thread.run_sync(cache.get, key)
        status = "hit"
        if result is None and key in pending:  # the same request is being computed: wait for that result
            result = await _join(pending[key])
            status = "shared"
        if result is None:
            result = await _compute_once(key, styles[style], upload.data, options, mix)
            status = "miss"
        {"hit": metrics.cache_hits, "shared": metrics.shared, "miss": metrics.cache_misses}[status].inc()
        filename = f"stylized_{style}.{'jpg' if options.format == 'jpeg' else 'png'}"
        headers = {"X-Cache": status, "X-Variant": options.quality,
                   "Content-Disposition": f'inline; filename="{filename}"'}  # fmt: skip
        return Response(result, media_type=OUTPUT_FORMATS[options.format], headers=headers)

    pending: dict[str, asyncio.Future[bytes]] = {}  # results being computed, by cache key

    async def _compute_once(
        key: str, model: StyleModel, data: bytes, options: Options, mix: dict[str, float] | None = None
    ) -> bytes:
        """Decode and run the model for ``key``; identical requests arriving meanwhile wait for this result."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pending[key] = future
        try:
            image = await pipeline.decode(data, options.max_size)
            result = await pipeline.compute(model, image, options, mix)
            await anyio.to_thread.run_sync(cache.put, key, result)
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

    async def cache_get(key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(cache.get, key)

    async def cache_put(key: str, value: bytes) -> None:
        await anyio.to_thread.run_sync(cache.put, key, value)

    app.state.zeroshot = add_zeroshot_routes(app, pipeline, cache_get, cache_put)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
