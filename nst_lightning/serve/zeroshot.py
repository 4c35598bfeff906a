"""Zero-shot styles in the service: ``POST /stylize/zeroshot`` takes a photo and any painting.

The painting is an upload bounded like the photo (bytes, pixels, formats). Its VGG-19 feature statistics are
what the model needs from it; they are computed once per painting and kept by the painting's sha256 (an LRU of
``STYLE_STATS_ENTRIES``), so repeated requests with the same painting skip that pass. Results go through the
service's result cache like any style, keyed by the photo, the painting's hash and the options.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from nst_lightning.errors import NSTError
from nst_lightning.inference.zeroshot import DEFAULT_METHOD, STYLE_SIZE, ZeroShotModel, load_zeroshot
from nst_lightning.serve.cache import cache_key
from nst_lightning.serve.uploads import OUTPUT_FORMATS, BadRequest, check_content_type, decode_image, parse_options

STYLE_STATS_ENTRIES = 32  # paintings whose statistics are kept (each ~2.5 MB for the relu4_1 + relu3_1 levels)
FORM_OVERHEAD = 64 * 1024
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
            image = decode_image(painting, max_pixels, STYLE_SIZE).rgb
            stats = self._model.style_stats(image)
            with self._lock:
                self._stats[digest] = stats
                while len(self._stats) > self.entries:
                    self._stats.popitem(last=False)
        return self._model.with_style(stats)


async def _read_bounded(upload: UploadFile, limit: int, what: str, limit_mb: float) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(413, f"the {what} is larger than {limit_mb:g} MB")
    return data


def add_zeroshot_routes(
    app: FastAPI,
    gate_run: Callable[..., Awaitable[bytes]],
    cache_get: Callable[[str], Awaitable[bytes | None]],
    cache_put: Callable[[str, bytes], Awaitable[None]],
    encode: Callable,
) -> ZeroShotStyles:
    """Register ``POST /stylize/zeroshot`` on ``app`` (its settings in ``app.state.settings``)."""
    from nst_lightning.serve.models import stylize_image

    settings = app.state.settings
    styles = ZeroShotStyles(str(settings.device) if settings.device not in (None, "auto") else "cpu")
    max_upload = int(settings.max_upload_mb * 1024 * 1024)

    def compute(digest: str, painting: bytes, photo: bytes, options) -> bytes:
        decoded = decode_image(photo, settings.max_pixels, options.max_size)
        try:
            model = styles.model(digest, painting, settings.max_pixels)
            out = stylize_image(model, decoded.rgb, options.strength, options.preserve_color, options.max_size)
        except NSTError as exc:
            raise BadRequest(422, str(exc)) from None
        return encode(out, decoded.alpha, options.format)

    @app.post("/stylize/zeroshot")
    async def stylize_zeroshot(request: Request) -> Response:
        """Multipart form: ``image`` (the photo) and ``style_image`` (any painting), optional ``strength``,
        ``preserve_color``, ``max_size``, ``format``. Returns the photo stylized zero-shot with the painting."""
        length = request.headers.get("content-length")
        if length is None:
            raise BadRequest(411, "send a Content-Length header with the upload")
        if not length.isdigit() or int(length) > 2 * max_upload + FORM_OVERHEAD:
            raise BadRequest(413, f"the upload is larger than two images of {settings.max_upload_mb:g} MB")
        form = await request.form(max_files=2, max_fields=10)
        photo, painting = form.get("image"), form.get("style_image")
        if not isinstance(photo, UploadFile) or not isinstance(painting, UploadFile):
            raise BadRequest(422, "send the photo as file field 'image' and the painting as file field 'style_image'")
        check_content_type(photo.content_type)
        check_content_type(painting.content_type)
        options = parse_options({k: v for k, v in form.items() if isinstance(v, str)}, settings.max_size)
        photo_data = await _read_bounded(photo, max_upload, "image", settings.max_upload_mb)
        style_data = await _read_bounded(painting, max_upload, "style image", settings.max_upload_mb)
        digest = hashlib.sha256(style_data).hexdigest()
        key = cache_key(hashlib.sha256(photo_data).hexdigest(), f"zeroshot:{digest}", options.key())
        result, status = await cache_get(key), "hit"
        if result is None:
            result, status = await gate_run(compute, digest, style_data, photo_data, options), "miss"
            await cache_put(key, result)
        suffix = "jpg" if options.format == "jpeg" else "png"
        headers = {"X-Cache": status, "Content-Disposition": f'inline; filename="stylized_zeroshot.{suffix}"'}
        return Response(result, media_type=OUTPUT_FORMATS[options.format], headers=headers)

    return styles
