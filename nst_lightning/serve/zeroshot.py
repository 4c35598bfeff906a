"""Zero-shot styles in the service: ``POST /stylize/zeroshot`` takes a photo and any painting.

The painting is an upload bounded like the photo (the request's bytes and time by the service's guard; pixels
and formats by the library's decoder, at reduced size, in the service's decode pool). Its VGG-19 feature
statistics are what the model needs from it; they are computed once per painting and kept by the painting's
sha256 (an LRU of ``STYLE_STATS_ENTRIES``), so repeated requests with the same painting skip that pass. The
request goes through the same pipeline as a trained style (:mod:`nst_lightning.serve.pipeline`): its cache key
names the zero-shot method and the painting's hash instead of a style.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image

from nst_lightning.export.runtime import normalize_runtime
from nst_lightning.export.zeroshot_runtime import zeroshot_runtime
from nst_lightning.inference.zeroshot import DEFAULT_METHOD, STYLE_SIZE, PaintingStats, ZeroShotModel, load_zeroshot
from nst_lightning.serve.fields import Output, form_openapi, output, stylize_options
from nst_lightning.serve.models import Runner
from nst_lightning.serve.pipeline import Job, ModelLoader, Pipeline, read_form
from nst_lightning.serve.uploads import image_part

STYLE_STATS_ENTRIES = 32  # paintings whose statistics are kept (each ~2.5 MB for the relu4_1 + relu3_1 levels)
ARBITRARY_STYLES = {
    "available": True,
    "endpoint": "/stylize/zeroshot",
    "fields": {"image": "the photo", "style_image": "any painting (png, jpeg, webp)"},
    "method": DEFAULT_METHOD,
}
ZEROSHOT_FIELDS = {
    "image": {"type": "string", "format": "binary", "description": "the photo (png, jpeg, webp, ...)"},
    "style_image": {"type": "string", "format": "binary", "description": "any painting (png, jpeg, webp, ...)"},
}
MISSING = "send the photo as file field 'image' and the painting as file field 'style_image'"


class ZeroShotStyles:
    """The zero-shot model (loaded on first use) and the statistics of recent paintings, by sha256."""

    def __init__(self, device: str = "cpu", entries: int = STYLE_STATS_ENTRIES, runtime: str = "eager") -> None:
        self.device, self.entries, self.runtime = device, entries, runtime
        self._model: ZeroShotModel | None = None
        self._stats: OrderedDict[str, PaintingStats] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def _loaded(self) -> ZeroShotModel:
        with self._lock:
            if self._model is None:  # the encoder and decoders in the service's runtime (auto: the gated choice)
                self._model = zeroshot_runtime(load_zeroshot(device=self.device), self.runtime, fallback=True)
            return self._model

    def cached(self, digest: str) -> PaintingStats | None:
        """The statistics of the painting with sha256 ``digest``, if kept (then counted in ``hits``)."""
        with self._lock:
            stats = self._stats.get(digest)
            if stats is not None:
                self._stats.move_to_end(digest)
                self.hits += 1
            return stats

    def with_painting(self, digest: str, painting: Image.Image) -> ZeroShotModel:
        """The model with the statistics of ``painting`` (RGB), computed now and kept by ``digest``."""
        stats = self._loaded().style_stats(painting)
        with self._lock:
            self._stats[digest] = stats
            while len(self._stats) > self.entries:
                self._stats.popitem(last=False)
        return self._loaded().with_style(stats)

    def loader(self, digest: str, painting: bytes) -> ModelLoader:
        """How a job gets the model for the painting: its kept statistics, or the painting decoded in the decode
        pool (at most ``STYLE_SIZE``; ``style_stats`` enlarges tiny ones) and its statistics computed in the model
        thread."""

        async def load(pipeline: Pipeline) -> Callable[[], Runner]:
            stats = self.cached(digest)
            if stats is not None:
                return lambda: self._loaded().with_style(stats)
            image = (await pipeline.decode(painting, STYLE_SIZE)).convert("RGB")
            return lambda: self.with_painting(digest, image)

        return load


def add_zeroshot_route(app: FastAPI, pipeline: Pipeline) -> ZeroShotStyles:
    """Register ``POST /stylize/zeroshot`` on ``app``, through ``pipeline`` like ``POST /stylize``."""
    settings = pipeline.settings
    device = str(settings.device) if settings.device not in (None, "auto") else "cpu"
    styles = ZeroShotStyles(device, runtime=normalize_runtime(settings.runtime) or "eager")

    @app.post("/stylize/zeroshot", openapi_extra=form_openapi(["image", "style_image"], ZEROSHOT_FIELDS, settings))
    async def stylize_zeroshot(request: Request) -> Response:
        """Multipart form: ``image`` (the photo) and ``style_image`` (any painting), and the options of
        ``POST /stylize`` but ``style``, ``style_mix`` and ``quality``. Returns the photo stylized zero-shot with
        the painting; header ``X-Cache`` says hit, shared or miss."""
        form = await read_form(request)
        photo = image_part(form, "image", settings.max_upload_mb, MISSING)
        painting = image_part(form, "style_image", settings.max_upload_mb, MISSING)
        options = stylize_options(form.fields, settings)
        fmt, _ = output(form.fields, settings)  # one network: no fast variant
        digest = hashlib.sha256(painting.data).hexdigest()
        job = Job(photo.data, f"zeroshot:{DEFAULT_METHOD}:{digest}", "zeroshot", options, Output(fmt, "full"),
                  styles.loader(digest, painting.data))  # fmt: skip
        return await pipeline.run(job)

    return styles
