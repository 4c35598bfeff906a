"""The FastAPI app: ``POST /stylize``, ``POST /stylize/zeroshot``, ``GET /styles``, ``GET /health``,
``GET /metrics`` and the web page at ``/``.

A stylize request goes through these bounded stages, each with its own limit (see ``docs/serve.md``):

1. :class:`~nst_lightning.serve.guard.Guard`: Host check; the body is read and counted as it streams, within
   ``max_upload_mb`` and ``body_timeout_s``, while at most ``max_uploads_held`` bodies are in memory.
2. The route checks the form and builds one job (:mod:`nst_lightning.serve.routes`,
   :mod:`nst_lightning.serve.zeroshot`).
3. The one request pipeline of both routes (:mod:`nst_lightning.serve.pipeline`): cache, identical requests in
   flight, decode pool, model gate, encode, metrics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nst_lightning.serve.adapt_jobs import add_adapt_routes
from nst_lightning.serve.cache import CircuitBreaker, make_cache
from nst_lightning.serve.device import add_device_routes
from nst_lightning.serve.guard import Guard
from nst_lightning.serve.metrics import Metrics
from nst_lightning.serve.models import StyleModel, load_styles
from nst_lightning.serve.pipeline import Pipeline
from nst_lightning.serve.routes import add_error_handlers, add_info_routes, add_stylize_route
from nst_lightning.serve.settings import ServeSettings
from nst_lightning.serve.zeroshot import add_zeroshot_route

log = logging.getLogger(__name__)


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
    pipeline = Pipeline(settings, metrics, cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for close in app.state.at_shutdown:  # e.g. the temp folders of adaptation jobs and in-browser bundles
            close()

    app = FastAPI(title="nst_lightning", summary="Neural style transfer as a service", docs_url="/docs",
                  lifespan=lifespan)  # fmt: skip
    app.state.settings, app.state.styles, app.state.metrics, app.state.cache = settings, styles, metrics, cache
    app.add_middleware(Guard, settings=settings, metrics=metrics)  # type: ignore[arg-type]
    add_error_handlers(app)
    add_stylize_route(app, pipeline, styles)
    app.state.zeroshot = add_zeroshot_route(app, pipeline)
    app.state.adapt = add_adapt_routes(app, settings, styles)
    app.state.device = add_device_routes(app, styles)
    app.state.at_shutdown = [app.state.adapt.close, app.state.device.close]  # callers may add theirs
    add_info_routes(app, pipeline, styles)
    return app
