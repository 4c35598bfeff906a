#!/usr/bin/env python
"""Load test of the service: N concurrent clients send a bounded number of ``POST /stylize`` requests.

    python benchmarks/serve_load.py                                   # starts serve.py, 4 clients, 32 requests
    python benchmarks/serve_load.py --clients 8 --requests 64 --size 512 --distinct 16 -- max_concurrency=2
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --pid 12345   # a server already running

Without ``--url`` it starts ``serve.py`` on a free loopback port (extra ``key=value`` arguments after ``--`` go
to it) and stops it at the end. Only loopback URLs are accepted. Images are synthetic; ``--distinct`` of them
are cycled, so ``requests - distinct`` requests can be cache hits (``--distinct`` = ``--requests``: all misses).

Prints one JSON object per line: the settings, then the summary (last line) with ``requests_per_s``, ``p50_ms``,
``p95_ms``, ``p99_ms``, ``errors``, ``status_counts``, ``cache_hits`` and ``server_peak_rss_mb`` (the server
process's VmHWM, i.e. its peak resident memory, when its pid is known).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def synthetic_jpeg(size: int, seed: int) -> bytes:
    """A size×size JPEG with gradients and a few random rectangles (distinct per seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(xx * 20 + seed)], axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, size // 2, 2)
        img[y0 : y0 + size // 4, x0 : x0 + size // 4] = rng.random(3)
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def peak_rss_mb(pid: int | None) -> float | None:
    """Peak resident set size (VmHWM) of a process, in MB, or None when unknown."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """``serve.py`` on a free loopback port; returns the process and its base URL once /health answers."""
    from nst_lightning.serve.server import free_port

    port = free_port()
    cmd = [sys.executable, str(REPO / "serve.py"), f"port={port}", "log_level=warning", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"serve.py did not start (exit status {proc.poll()})")
        time.sleep(0.2)


def run_load(url: str, style: str, images: list[bytes], requests: int, clients: int, fields: dict[str, str]) -> dict:
    """``clients`` threads share ``requests`` requests; returns latencies, statuses and cache hits."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    hits = 0
    next_index = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal next_index, hits
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    if next_index >= requests:
                        return
                    i = next_index
                    next_index += 1
                files = {"image": (f"img{i % len(images)}.jpg", images[i % len(images)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    response = http.post("/stylize", files=files, data={"style": style, **fields})
                    status = str(response.status_code)
                    hit = response.headers.get("x-cache") in ("hit", "shared")
                except httpx.HTTPError as exc:
                    status, hit = type(exc).__name__, False
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    hits += hit

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "status_counts": dict(statuses),
        "cache_hits": hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server on loopback (default: start serve.py)")
    parser.add_argument("--pid", type=int, help="pid of the server at --url, for its peak memory")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="side of the square test images, pixels")
    parser.add_argument("--distinct", type=int, default=None, help="distinct images (default: requests // 2)")
    parser.add_argument("--style", default="starry_night")
    parser.add_argument("--strength", default="1.0")
    parser.add_argument("server_args", nargs="*", help="key=value settings for serve.py (after --)")
    args = parser.parse_args()
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit(f"--url must be on loopback ({', '.join(sorted(LOOPBACK))}), got {args.url}")
    distinct = max(1, min(args.distinct or args.requests // 2, args.requests))
    images = [synthetic_jpeg(args.size, seed) for seed in range(distinct)]
    settings = {k: v for k, v in vars(args).items() if k not in ("server_args",)} | {
        "distinct": distinct, "server_args": args.server_args, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
    }  # fmt: skip
    print(json.dumps({"settings": settings}), flush=True)

    proc, url, pid = None, args.url, args.pid
    if url is None:
        proc, url = start_server(args.server_args)
        pid = proc.pid
    try:
        summary = run_load(url, args.style, images, args.requests, args.clients, {"strength": args.strength})
        summary["server_peak_rss_mb"] = peak_rss_mb(pid)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        summary["server_rejected_503"] = sum(
            float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("nst_rejected_total")
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
