"""Result cache for stylized images: key = sha256(image bytes) + style + options, value = encoded image bytes.

Three backends with one interface (``get``/``put``): a bytes-bounded in-memory LRU (default, per process),
a bytes-bounded folder on disk (survives restarts), and Redis (shared by several replicas).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from nst_lightning.errors import NSTError
from nst_lightning.serve.settings import CacheSettings

log = logging.getLogger(__name__)
KEY_VERSION = "v3"  # bump when the output for the same key changes (e.g. a new inference core)


def cache_key(image_sha256: str, style: str, options: dict[str, Any]) -> str:
    """A stable hex key for (image content, style, options); options are sorted so their order is irrelevant."""
    blob = json.dumps({"v": KEY_VERSION, "image": image_sha256, "style": style, "options": options}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache(Protocol):
    """What the app needs from a cache backend."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class NoCache:
    """Caching turned off (``cache=none``)."""

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, value: bytes) -> None:
        return None


class MemoryLRU:
    """Least-recently-used cache bounded by the total size of its values in bytes (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: keep what is there
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted)

    def __len__(self) -> int:
        return len(self._items)


class DiskCache:
    """One file per result in a folder, bounded by total bytes; the least recently read files go first.

    Writes are atomic (temp file + rename), so several processes may share the folder; a temp file left by a
    writer that died is removed by the next eviction pass once it is ``STALE_TMP_S`` old.
    """

    STALE_TMP_S = 60.0

    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._evict()  # also clears temp files that a crashed writer left

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.bin"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            value = path.read_bytes()
            os.utime(path)  # mark as recently used
        except FileNotFoundError:
            return None
        return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, self._path(key))
        finally:
            Path(tmp).unlink(missing_ok=True)  # gone after the rename; left only by a failed write
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries = []
            stale = time.time() - self.STALE_TMP_S
            for p in self.folder.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if p.suffix == ".tmp" and st.st_mtime < stale:  # a writer that died mid-write (any process)
                    p.unlink(missing_ok=True)
                elif p.suffix == ".bin":
                    entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries):
                if total <= self.max_bytes:
                    break
                p.unlink(missing_ok=True)
                total -= size


class RedisCache:
    """Results in a Redis server shared by several replicas; entries expire after ``ttl_s`` seconds.

    Bound the server's memory with its own ``maxmemory`` + ``maxmemory-policy allkeys-lru``.
    """

    PREFIX = "nst:result:"

    def __init__(self, url: str, ttl_s: int = 86400, timeout_s: float = 0.5) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.ttl_s = ttl_s
        # One try per call, each bounded by the timeout: the circuit breaker, not retries, handles an outage.
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise NSTError(
                f"cannot reach the Redis cache at {url} ({exc}); start redis-server or use cache=memory"
            ) from exc

    def get(self, key: str) -> bytes | None:
        return self.client.get(self.PREFIX + key)

    def put(self, key: str, value: bytes) -> None:
        self.client.set(self.PREFIX + key, value, ex=self.ttl_s or None)


class CircuitBreaker:
    """Wraps a cache: after ``failures`` failed calls in a row the cache is skipped for ``open_s`` seconds (get
    gives None, put does nothing), so a slow or hung backend costs each request at most its timeout until then.
    After that, calls go through again (half-open): one more failure opens it again, one success closes it."""

    def __init__(self, cache: ResultCache, failures: int, open_s: float, on_error: Any = None) -> None:
        self.cache = cache
        self.failures = failures
        self.open_s = open_s
        self.on_error = on_error  # called with each failure (counted by the app)
        self.on_skip: Any = None
        self._count = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _call(self, fn: Any, *args: Any) -> Any:
        if self.is_open:
            if self.on_skip is not None:
                self.on_skip()
            return None
        try:
            result = fn(*args)
        except Exception as exc:
            with self._lock:
                self._count += 1
                tripped = self._count >= self.failures
                if tripped:  # the count stays at the bound: after open_s, one failure (half-open) opens it again
                    self._open_until = time.monotonic() + self.open_s
                    self._count = self.failures
            if self.on_error is not None:
                self.on_error(exc)
            if tripped:
                log.warning("cache failed %d times in a row (%s): skipped for %g s", self.failures, exc, self.open_s)
            return None
        with self._lock:
            self._count = 0
        return result

    def get(self, key: str) -> bytes | None:
        return self._call(self.cache.get, key)

    def put(self, key: str, value: bytes) -> None:
        self._call(self.cache.put, key, value)


def default_cache_dir() -> Path:
    root = os.environ.get("NST_CACHE_DIR") or Path.home() / ".cache" / "nst_lightning"
    return Path(root) / "serve"


def make_cache(settings: CacheSettings) -> ResultCache:
    """The backend named by ``settings.kind``."""
    max_bytes = int(settings.max_mb * 1024 * 1024)
    if settings.kind == "memory":
        return MemoryLRU(max_bytes)
    if settings.kind == "disk":
        return DiskCache(settings.dir or default_cache_dir(), max_bytes)
    if settings.kind == "redis":
        return RedisCache(str(settings.url), settings.ttl_s, settings.timeout_s)
    return NoCache()
