"""Service settings: one dataclass, filled from ``conf/serve.yaml`` (or directly in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nst_lightning.errors import NSTError
from nst_lightning.export.runtime import normalize_runtime
from nst_lightning.inference import DEFAULT_TILE_SIZE, check_options

CACHE_KINDS = ("memory", "disk", "redis", "none")


@dataclass
class CacheSettings:
    """Result cache: ``memory`` (bounded LRU), ``disk`` (bounded folder), ``redis`` (shared) or ``none``."""

    kind: str = "memory"
    max_mb: float = 256.0  # memory and disk: evict least recently used results beyond this many MB
    dir: str | None = None  # disk: folder of cached results (default: $NST_CACHE_DIR/serve)
    url: str | None = None  # redis: redis://host:port/db
    ttl_s: int = 86400  # redis: seconds a result is kept (0 = no expiry)


@dataclass
class ServeSettings:
    """Everything the app needs; see ``conf/serve.yaml`` for what each key means."""

    host: str = "127.0.0.1"
    port: int = 8000
    styles: list[str] | None = None  # shipped model names to load (None = all shipped models)
    models_dir: str | None = None  # extra checkpoints (*.pt, *.ckpt): the file stem is the style name
    runtime: str = "auto"  # auto = the fastest measured runtime for the device (ONNX Runtime on CPU)
    device: str = "cpu"
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000  # refused before decoding
    max_size: int = 1024  # default and upper bound of the ``max_size`` option (longest output side)
    tile_size: int | None = DEFAULT_TILE_SIZE  # larger outputs are stylized in tiles (None: never tile)
    max_concurrency: int = 1  # model calls running at once
    max_queue: int = 8  # requests waiting for a model slot; more get 503
    thumbnail_size: int = 160
    cache: CacheSettings = field(default_factory=CacheSettings)

    def __post_init__(self) -> None:
        if self.cache.kind not in CACHE_KINDS:
            raise NSTError(f"unknown cache={self.cache.kind!r}; use one of {', '.join(CACHE_KINDS)}")
        if self.cache.kind == "redis" and not self.cache.url:
            raise NSTError("cache=redis needs an address: cache.url=redis://HOST:PORT/0")
        for name in ("max_upload_mb", "max_pixels", "max_size", "max_concurrency", "thumbnail_size"):
            if getattr(self, name) <= 0:
                raise NSTError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise NSTError(f"max_queue must be 0 or more, got {self.max_queue}")
        normalize_runtime(self.runtime)  # an unknown runtime name fails here, with the library's list
        check_options(tile_size=self.tile_size)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServeSettings:
        """Build from a plain dict (e.g. a resolved Hydra config); unknown keys are an error."""
        values = dict(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NSTError(f"unknown serve setting(s) {unknown}; known: {sorted(known)}")
        cache = values.pop("cache", None) or {}
        if isinstance(cache, str):  # ``cache=redis`` on the command line
            cache = {"kind": cache}
        cache_known = {f.name for f in fields(CacheSettings)}
        bad = sorted(set(cache) - cache_known)
        if bad:
            raise NSTError(f"unknown cache setting(s) {bad}; known: {sorted(cache_known)}")
        return cls(**values, cache=CacheSettings(**cache))
