"""The one request pipeline of both stylize routes (``POST /stylize`` and ``POST /stylize/zeroshot``).

A route reads its form and builds a :class:`Job` (the photo, one :class:`~nst_lightning.inference.StylizeOptions`,
how the result is sent, and what names and loads the model); :meth:`Pipeline.run` does the rest, the same way for
both:

1. the cache key: the photo's sha256, the model's identity and every field of the options' canonical form (all
   that changes the pixels, ``tile_size`` included) plus the output format and variant;
2. a cache hit answers at once (``X-Cache: hit``); an identical request in flight is waited for (``shared``);
3. otherwise (``miss``) the photo is decoded and checked in a pool of ``decode_workers`` threads, at reduced size,
   before it may take a model slot (junk never waits for, or holds, a model), and the job's model gets ready (the
   zero-shot route decodes its painting in the same pool);
4. :class:`ModelGate`: ``max_concurrency`` model calls run, ``max_queue`` more wait, each at most
   ``max_queue_wait_s``; beyond that 503;
5. the result is encoded, stored in the cache, and counted (hit, shared, miss, model seconds by model).

The request body itself was bounded before the route ran (:class:`~nst_lightning.serve.guard.Guard`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request
from fastapi.responses import Response
from PIL import Image

from nst_lightning.inference import StylizeOptions
from nst_lightning.serve.cache import CircuitBreaker, cache_key
from nst_lightning.serve.errors import Busy
from nst_lightning.serve.fields import Output, check_network_size
from nst_lightning.serve.form import Form, parse_form
from nst_lightning.serve.memory import release_memory
from nst_lightning.serve.metrics import Metrics
from nst_lightning.serve.models import Runner, stylize_image
from nst_lightning.serve.settings import ServeSettings
from nst_lightning.serve.uploads import decode_upload

T = TypeVar("T")
# Called once the photo is decoded, before the model gate: may decode more (with the pipeline's decode pool) and
# returns the function that, in a model thread, gives the network to run.
ModelLoader = Callable[["Pipeline"], Awaitable[Callable[[], Runner]]]


async def read_form(request: Request) -> Form:
    """The request's multipart form (its body already read and bounded by the guard)."""
    return parse_form(await request.body(), request.headers.get("content-type"))


def fixed_model(runner: Runner) -> ModelLoader:
    """A loader for a network that is already loaded."""

    async def load(_: Pipeline) -> Callable[[], Runner]:
        return lambda: runner

    return load


@dataclass(frozen=True)
class Job:
    """One checked stylize request.

    Attributes:
        photo: the uploaded photo's bytes (not decoded yet).
        model_id: what the cache key names as the model: the style, or the zero-shot method and painting's hash.
        label: the model's name in metrics and in the file name (a style, or ``zeroshot``; never a hash).
        options: how to stylize, every field of which is in the cache key.
        output: the format sent and the variant that runs.
        model: gets the network ready (see :data:`ModelLoader`).
    """

    photo: bytes
    model_id: str
    label: str
    options: StylizeOptions
    output: Output
    model: ModelLoader

    def key(self) -> str:
        """The result cache key: photo, model, every option and the output."""
        fields = {**self.options.canonical(), "format": self.output.format, "variant": self.output.variant}
        return cache_key(hashlib.sha256(self.photo).hexdigest(), self.model_id, fields)


class ModelGate:
    """Runs model work in ``max_concurrency`` threads with at most ``max_queue`` requests waiting, each for at most
    ``max_wait_s`` (0: no limit) before it gets 503: a queue of slow requests cannot keep one waiting longer than
    its client would."""

    def __init__(self, max_concurrency: int, max_queue: int, metrics: Metrics, max_wait_s: float = 0.0) -> None:
        self.limit = max_concurrency + max_queue
        self.max_wait_s = max_wait_s
        self.count = 0
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="nst-model")

    def _release(self) -> None:
        self.count -= 1
        self.metrics.in_flight.set(self.count)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.count >= self.limit:
            self.metrics.rejected.inc()
            raise Busy(f"the service is busy ({self.count} requests running or queued); retry shortly")
        loop = asyncio.get_running_loop()
        self.count += 1
        self.metrics.in_flight.set(self.count)
        future = self.executor.submit(fn, *args)
        # Released when the work really ends (not when a client disconnects), so the bound holds.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        result = asyncio.wrap_future(future)
        if self.max_wait_s:
            try:
                return await asyncio.wait_for(asyncio.shield(result), self.max_wait_s)
            except asyncio.TimeoutError:  # TimeoutError on 3.11+
                if future.cancel():  # it never got a model thread: its place is given back (the callback runs)
                    self.metrics.rejected.inc()
                    raise Busy(
                        f"the service is busy (no model slot within {self.max_wait_s:g} s); retry shortly"
                    ) from None
        return await result


def encode(image: Image.Image, fmt: str) -> bytes:
    """RGB or RGBA PIL image → PNG (alpha kept) or JPEG (RGB only) bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=4)
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Pipeline:
    """Cache, in-flight merging, the decode pool and the model gate, shared by both stylize routes."""

    def __init__(self, settings: ServeSettings, metrics: Metrics, cache: CircuitBreaker) -> None:
        self.settings, self.metrics, self.cache = settings, metrics, cache
        self.decoder = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="nst-decode")
        self.gate = ModelGate(settings.max_concurrency, settings.max_queue, metrics, settings.max_queue_wait_s)
        self.pending: dict[str, asyncio.Future[bytes]] = {}  # results being computed, by cache key

    async def run(self, job: Job) -> Response:
        """The job's image: from the cache, from an identical request in flight, or computed; counted."""
        key = job.key()
        result, status = await anyio.to_thread.run_sync(self.cache.get, key), "hit"
        if result is None and key in self.pending:  # the same request is being computed: wait for that result
            result, status = await _join(self.pending[key]), "shared"
        if result is None:
            result, status = await self._compute_once(key, job), "miss"
        {"hit": self.metrics.cache_hits, "shared": self.metrics.shared, "miss": self.metrics.cache_misses}[status].inc()
        headers = {"X-Cache": status, "X-Variant": job.output.variant,
                   "Content-Disposition": f'inline; filename="stylized_{job.label}.{job.output.suffix}"'}  # fmt: skip
        return Response(result, media_type=job.output.media_type, headers=headers)

    def _decode(self, data: bytes, max_size: int | None) -> Image.Image:
        start = time.perf_counter()
        try:
            return decode_upload(data, self.settings.max_pixels, max_size)
        finally:
            self.metrics.decode_seconds.observe(time.perf_counter() - start)
            if self.settings.trim_memory:
                release_memory()  # the full-size decode is gone now

    async def decode(self, data: bytes, max_size: int | None) -> Image.Image:
        """An upload decoded (at reduced size towards ``max_size``) and checked in the decode pool."""
        return await asyncio.wrap_future(self.decoder.submit(self._decode, data, max_size))

    def _compute(self, job: Job, model: Callable[[], Runner], image: Image.Image) -> bytes:
        try:
            return encode(stylize_image(model(), image, job.options), job.output.format)
        finally:
            del image
            if self.settings.trim_memory:
                release_memory()

    async def _compute_once(self, key: str, job: Job) -> bytes:
        """Decode and run the model for ``key``; identical requests arriving meanwhile wait for this result."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        try:
            image = await self.decode(job.photo, job.options.max_size)
            check_network_size(image.width, image.height, job.options, self.settings.max_size)
            model = await job.model(self)
            start = time.perf_counter()
            result = await self.gate.run(self._compute, job, model, image)
            self.metrics.model_seconds.labels(job.label).observe(time.perf_counter() - start)
            await anyio.to_thread.run_sync(self.cache.put, key, result)
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
            self.pending.pop(key, None)


async def _join(future: asyncio.Future[bytes]) -> bytes | None:
    """The result another request is computing; None if that request was cancelled (then compute anew)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.cancelled():
            return None
        raise
