"""Service settings: one dataclass, filled from ``conf/serve.yaml`` (or directly in tests and notebooks).

The defaults live here, once; ``conf/serve.yaml`` (with ``conf/cache/*.yaml``) says what each key means and reads
its value from here (``${nst.serve_default:KEY}``, ``${nst.cache_default:KEY}``); only what differs per cache kind
is written in its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nst_lightning.errors import BadValue
from nst_lightning.export.runtime import normalize_runtime
from nst_lightning.inference import DEFAULT_TILE_SIZE, StylizeOptions, resolve_device
from nst_lightning.settings import from_mapping

CACHE_KINDS = ("memory", "disk", "redis", "none")
QUALITIES = ("full", "fast")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class CacheSettings:
    """Result cache: ``memory`` (bounded LRU), ``disk`` (bounded folder), ``redis`` (shared) or ``none``."""

    kind: str = "memory"
    max_mb: float = 256.0
    dir: str | None = None
    url: str | None = None
    ttl_s: int = 86400
    timeout_s: float = 0.5
    breaker_failures: int = 3
    breaker_open_s: float = 30.0


@dataclass
class ServeSettings:
    """Everything the app needs; ``conf/serve.yaml`` says what each key means and protects."""

    host: str = "127.0.0.1"
    port: int = 8000
    styles: list[str] | None = None
    models_dir: str | None = None
    runtime: str = "auto"
    device: str = "cpu"
    quality: str = "full"
    fast_runtime: str | None = None
    fast_models_dir: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    max_size: int = 1024
    tile_size: int | None = DEFAULT_TILE_SIZE
    max_concurrency: int = 1
    max_queue: int = 8
    max_queue_wait_s: float = 60.0
    max_uploads_held: int = 16
    max_uploads_per_client: int = 4
    min_upload_kbps: float = 16.0
    decode_workers: int = 1
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    shutdown_timeout_s: float = 10.0
    max_header_kb: int = 16
    allowed_hosts: list[str] | None = None
    trim_memory: bool = True
    thumbnail_size: int = 160
    adapt_base: str = "multistyle"
    max_adapt_minutes: float = 15.0
    max_adapt_jobs: int = 2
    max_adapted_styles: int = 8
    cache: CacheSettings = field(default_factory=CacheSettings)

    def __post_init__(self) -> None:
        if self.cache.kind not in CACHE_KINDS:
            raise BadValue(f"unknown cache={self.cache.kind!r}; use one of {', '.join(CACHE_KINDS)}")
        if self.cache.kind == "redis" and not self.cache.url:
            raise BadValue("cache=redis needs an address: cache.url=redis://HOST:PORT/0")
        positive = (
            "max_upload_mb",
            "max_pixels",
            "max_size",
            "max_concurrency",
            "max_uploads_held",
            "max_uploads_per_client",
            "decode_workers",
            "header_timeout_s",
            "body_timeout_s",
            "max_header_kb",
            "thumbnail_size",
            "max_adapt_minutes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise BadValue(f"{name} must be positive, got {getattr(self, name)}")
        resolve_device(self.device)  # an unknown device, or cuda without a GPU, fails here
        normalize_runtime(self.runtime)  # an unknown runtime name fails here, with the library's list
        if self.fast_runtime is not None:
            normalize_runtime(self.fast_runtime)
        StylizeOptions(tile_size=self.tile_size)  # a bad tile_size fails with the library's message
        if self.quality not in QUALITIES:
            raise BadValue(f"quality must be one of {', '.join(QUALITIES)}, got {self.quality!r}")
        non_negative = ("max_queue", "max_queue_wait_s", "shutdown_timeout_s", "min_upload_kbps", "max_adapt_jobs",
                        "max_adapted_styles")  # fmt: skip
        for name in non_negative:
            if getattr(self, name) < 0:
                raise BadValue(f"{name} must be 0 or more, got {getattr(self, name)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def hosts(self) -> tuple[str, ...] | None:
        """Host header names accepted (lower case, no port); None = any (``allowed_hosts=['*']``, or a wildcard
        bind address without ``allowed_hosts``)."""
        if self.allowed_hosts is not None:
            names = tuple(h.lower().strip("[]") for h in self.allowed_hosts)
            return None if "*" in names else names
        if self.host in WILDCARD_HOSTS:
            return None
        return (self.host.lower().strip("[]"), *LOCAL_HOSTS)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ServeSettings:
        """Build from a plain dict (e.g. a resolved Hydra config); unknown keys and values of the wrong type are
        errors that name the key."""
        values = dict(values)
        if isinstance(values.get("cache"), str):  # ``cache=redis`` on the command line
            values["cache"] = {"kind": values["cache"]}
        return from_mapping(cls, values, "serve setting")
