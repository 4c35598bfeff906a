"""Zero-shot styles in the service: ``POST /stylize/zeroshot`` takes a photo and any painting.

The painting is an upload bounded like the photo (the request's bytes and time by the service's guard; pixels
and formats by the library's decoder, at reduced size). Its VGG-19 feature statistics are
what the model needs from it; they are computed once per painting and kept by the painting's sha256 (an LRU of
``STYLE_STATS_ENTRIES``), so repeated requests with the same painting skip that pass. Results go through the
service's result cache like any style, keyed by the photo, the painting's hash and the options.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from nst_lightning.errors import NSTError
from nst_lightning.inference.zeroshot import (
    DEFAULT_METHOD,
    STYLE_SIZE,
    ZeroShotModel,
    load_zeroshot,
)
from nst_lightning.serve.cache import cache_key
from nst_lightning.serve.errors import BadRequest
from nst_lightning.serve.form import parse_form
from nst_lightning.serve.uploads import OUTPUT_FORMATS, check_content_type, decode_upload, parse_options

STYLE_STATS_ENTRIES = 32  # paintings whose statistics are kept (each ~2.5 MB for the relu4_1 + relu3_1 levels)
ARBITRARY_STYLES = {
    "available": True,
    "endpoint": "/stylize/zeroshot",
    "fields": {"image": "the photo", "style_image": "any painting (png, jpeg, webp)"},
    "method": DEFAULT_METHOD,
}


class ZeroShotStyles:
    """The zero-shot model (loaded on first use) and the statistics of recent paintings, by sha256."""

    def __init__(self, device: str = "cpu", entries: int = STYLE_STATS_ENTRIES) -> None:
        self.device, self.entries = device, entries
        self._model: ZeroShotModel | None = None
        self._stats: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def model(self, digest: str, painting: bytes, max_pixels: int) -> ZeroShotModel:
        """The model with the painting's statistics (computed, or reused by ``digest``)."""
        with self._lock:
            if self._model is None:
                self._model = load_zeroshot(device=self.device)
            stats = self._stats.get(digest)
            if stats is not None:
                self._stats.move_to_end(digest)
                self.hits += 1
        if stats is None:
            image = decode_upload(painting, max_pixels, STYLE_SIZE).convert("RGB")  # style_stats enlarges tiny ones
            stats = self._model.style_stats(image)
            with self._lock:
                self._stats[digest] = stats
                while len(self._stats) > self.entries:
                    self._stats.popitem(last=False)
        return self._model.with_style(stats)


def add_zeroshot_routes(
    app: FastAPI,
    pipeline: Any,
    cache_get: Callable[[str], Awaitable[bytes | None]],
    cache_put: Callable[[str, bytes], Awaitable[None]],
) -> ZeroShotStyles:
    """Register ``POST /stylize/zeroshot`` on ``app`` (its settings in ``app.state.settings``); the photo is
    decoded in the service's decode pool and the model runs behind its model gate (``pipeline``)."""
    from nst_lightning.serve.app import encode
    from nst_lightning.serve.models import stylize_image

    settings = app.state.settings
    styles = ZeroShotStyles(str(settings.device) if settings.device not in (None, "auto") else "cpu")

    def compute(digest: str, painting: bytes, image: Any, options: Any) -> bytes:
        try:
            model = styles.model(digest, painting, settings.max_pixels)
            out = stylize_image(model, image, options.strength, options.preserve_color, options.max_size,
                                settings.tile_size)  # fmt: skip
        except NSTError as exc:
            raise BadRequest(422, str(exc)) from None
        return encode(out, options.format)

    @app.post("/stylize/zeroshot")
    async def stylize_zeroshot(request: Request) -> Response:
        """Multipart form: ``image`` (the photo) and ``style_image`` (any painting), optional ``strength``,
        ``preserve_color``, ``max_size``, ``format``. Returns the photo stylized zero-shot with the painting."""
        form = parse_form(await request.body(), request.headers.get("content-type"))
        photo, painting = form.files.get("image"), form.files.get("style_image")
        if photo is None or painting is None:
            raise BadRequest(422, "send the photo as file field 'image' and the painting as file field 'style_image'")
        check_content_type(photo.content_type)
        check_content_type(painting.content_type)
        for part, what in ((photo, "image"), (painting, "style image")):
            if len(part.data) > settings.max_upload_bytes:
                raise BadRequest(413, f"the {what} is larger than {settings.max_upload_mb:g} MB")
        options = parse_options(form.fields, settings.max_size)
        digest = hashlib.sha256(painting.data).hexdigest()
        key = cache_key(hashlib.sha256(photo.data).hexdigest(), f"zeroshot:{digest}", options.key())
        result, status = await cache_get(key), "hit"
        if result is None:
            image = await pipeline.decode(photo.data, options.max_size)
            result, status = await pipeline.gate.run(compute, digest, painting.data, image, options), "miss"
            await cache_put(key, result)
        suffix = "jpg" if options.format == "jpeg" else "png"
        headers = {"X-Cache": status, "Content-Disposition": f'inline; filename="stylized_zeroshot.{suffix}"'}
        return Response(result, media_type=OUTPUT_FORMATS[options.format], headers=headers)

    return styles
