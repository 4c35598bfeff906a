"""The routes of the service but zero-shot (:mod:`nst_lightning.serve.zeroshot`) and adaptation
(:mod:`nst_lightning.serve.adapt_jobs`), and its error answers.

``POST /stylize`` turns its form into a :class:`~nst_lightning.serve.pipeline.Job` and hands it to the one request
pipeline; ``GET /health``, ``GET /styles``, a style's thumbnail, ``GET /metrics`` and the web page at ``/`` say
what the service runs. Every error is a JSON ``{"detail": ...}`` whose status comes from the error's type
(:data:`nst_lightning.serve.errors.STATUS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from nst_lightning.errors import BadValue, NotFound, NSTError
from nst_lightning.serve.errors import BUSY_STATUS, Busy, status_of
from nst_lightning.serve.fields import (
    Output,
    form_openapi,
    option_defaults,
    output,
    parse_style_mix,
    stylize_options,
)
from nst_lightning.serve.guard import shorten
from nst_lightning.serve.models import StyleModel, find_style
from nst_lightning.serve.pipeline import Job, Pipeline, fixed_model, read_form
from nst_lightning.serve.uploads import image_part
from nst_lightning.serve.zeroshot import ARBITRARY_STYLES

STATIC_DIR = Path(__file__).parent / "static"
STYLIZE_FIELDS = {
    "image": {"type": "string", "format": "binary", "description": "the photo (png, jpeg, webp, ...)"},
    "style": {"type": "string", "description": "a name from GET /styles"},
    "style_mix": {"type": "string", "description": 'a multi-style network: JSON {"style": weight, ...}'},
    "quality": {"type": "string", "enum": ["full", "fast"], "description": "default: the service's quality"},
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": message}``: a user error with the status of its type, busy as 503."""

    @app.exception_handler(NSTError)
    async def user_error(_: Request, exc: NSTError) -> JSONResponse:
        return _error(status_of(exc), str(exc))

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(BUSY_STATUS, str(exc), {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


def add_stylize_route(app: FastAPI, pipeline: Pipeline, styles: dict[str, StyleModel]) -> None:
    """``POST /stylize``: a photo and one of the loaded styles."""
    settings = pipeline.settings

    @app.post("/stylize", openapi_extra=form_openapi(["image", "style"], STYLIZE_FIELDS, settings))
    async def stylize(request: Request) -> Response:
        """Multipart form: ``image`` (file), ``style``, optional ``style_mix``, ``format`` (png | jpeg),
        ``quality`` (full | fast) and the option fields (:data:`~nst_lightning.serve.fields.OPTION_FIELDS`).
        Returns the stylized image; header ``X-Cache`` says hit, shared or miss, ``X-Variant`` which variant
        made it."""
        form = await read_form(request)
        photo = image_part(form, "image", settings.max_upload_mb,
                           "send the photo as a multipart/form-data file field named 'image'")  # fmt: skip
        model = find_style(styles, form.fields.get("style", ""))
        if model is None:
            raise BadValue(f"unknown style {shorten(form.fields.get('style', ''))}; choose one of "
                           f"{', '.join(sorted(styles))} (GET /styles)")  # fmt: skip
        name = model.name
        mix = parse_style_mix(form.fields.get("style_mix"), model.network_styles)
        options = stylize_options(form.fields, settings, style=None if mix else model.style, style_mix=mix)
        fmt, quality = output(form.fields, settings)
        variant, runner = model.variant(quality)  # what will really run
        job = Job(photo.data, model.model_id, name, options, Output(fmt, variant), fixed_model(runner))
        return await pipeline.run(job)


def add_info_routes(app: FastAPI, pipeline: Pipeline, styles: dict[str, StyleModel]) -> None:
    """``GET /health``, ``/styles``, ``/styles/{name}/thumbnail.jpg``, ``/metrics``, the page at ``/``."""
    settings, cache, metrics = pipeline.settings, pipeline.cache, pipeline.metrics

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, what is loaded, and ``degraded`` while the cache is skipped after failures."""
        runtimes = sorted({getattr(m.runner, "name", "eager") for m in styles.values()})  # what auto resolved to
        fast = sorted(name for name, m in styles.items() if m.fast is not None)
        metrics.cache_open.set(int(cache.is_open))
        return {"status": "degraded" if cache.is_open else "ok", "styles": sorted(styles), "runtime": settings.runtime,
                "runtimes": runtimes, "fast": fast, "cache": settings.cache.kind,
                "cache_state": "skipped" if cache.is_open else "ok", "in_flight": pipeline.gate.count}  # fmt: skip

    @app.get("/styles")
    async def list_styles() -> dict[str, Any]:
        """Names and thumbnail URLs of the styles this service runs, and the network that serves each (a
        multi-style network is listed under its own name, for style 0 or any ``style_mix``, and once per style as
        ``<network>.<style>``; ``networks`` lists each one's styles); ``arbitrary``: any painting, zero-shot;
        ``options``: the value each option field of the stylize forms has when left out."""
        named = []
        for n in sorted(styles):
            m = styles[n]
            entry: dict[str, Any] = {"name": n, "thumbnail": f"/styles/{n}/thumbnail.jpg", "network": m.network or n}
            if m.network_styles:
                entry.update(style=m.style, network_styles=m.network_styles)
            named.append(entry)
        networks = {m.network: m.network_styles for m in styles.values() if m.network_styles}
        return {"styles": named, "arbitrary": ARBITRARY_STYLES, "networks": networks,
                "options": option_defaults(settings)}  # fmt: skip

    @app.get("/styles/{name}/thumbnail.jpg")
    async def thumbnail(name: str) -> Response:
        if name not in styles:
            raise NotFound(f"unknown style {shorten(name)}; see GET /styles")
        return Response(styles[name].thumbnail, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.cache_open.set(int(cache.is_open))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
