"""Result cache for stylized images: key = sha256(image bytes) + style + options, value = encoded image bytes.

Three backends with one interface (``get``/``put``): a bytes-bounded in-memory LRU (default, per process),
a bytes-bounded folder on disk (survives restarts), and Redis (shared by several replicas).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from nst_lightning.errors import NSTError
from nst_lightning.serve.settings import CacheSettings

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

    Writes are atomic (temp file + rename), so several processes may share the folder.
    """

    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

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
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        os.replace(tmp, self._path(key))
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for p in self.folder.glob("*.bin"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
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

    def __init__(self, url: str, ttl_s: int = 86400) -> None:
        import redis

        self.ttl_s = ttl_s
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
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
        return RedisCache(str(settings.url), settings.ttl_s)
    return NoCache()
