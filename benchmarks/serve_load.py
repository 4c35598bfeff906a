#!/usr/bin/env python
"""Load test of the service: N concurrent clients send a bounded number of ``POST /stylize`` requests.

    python benchmarks/serve_load.py                                   # starts serve.py, 4 clients, 32 requests
    python benchmarks/serve_load.py --clients 8 --requests 64 --size 512 --distinct 16 -- max_concurrency=2
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --pid 12345   # a server already running
    python benchmarks/serve_load.py --matrix --requests 6 --clients 2   # eager vs full vs fast, 256 and 512 px

``--matrix`` starts two servers (``runtime=eager``; ``runtime=onnxruntime fast_runtime=onnxruntime_int8``), all
requests misses (``cache=none``), and reports for 256 and 512 px the eager baseline, the full network (ONNX
Runtime) and the fast variant (``quality=fast``: the shipped student when there is one, else int8), each with
its req/s ratio to the same run's eager baseline,
and the eval objective (the checkpoint's own perceptual loss, as ``evaluate.py``) of full and fast on
``--quality-images`` photos from ``$NST_DATA_DIR/eval`` at 512 px.

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
    deadline = time.monotonic() + 1200  # converting models in memory takes minutes on a loaded CPU
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


def stylized(url: str, style: str, image: bytes, fields: dict[str, str]) -> bytes:
    response = httpx.post(url + "/stylize", files={"image": ("p.jpg", image, "image/jpeg")},
                          data={"style": style, **fields}, timeout=600)  # fmt: skip
    response.raise_for_status()
    return response.content


def objectives(url: str, style: str, count: int, size: int) -> dict[str, float] | None:
    """Mean eval objective of the full and the fast variant on ``count`` photos of $NST_DATA_DIR/eval."""
    data = os.environ.get("NST_DATA_DIR")
    if not data or not (Path(data) / "eval").is_dir() or count <= 0:
        return None
    from nst_lightning.cli.presets import checkpoint_style_image
    from nst_lightning.evaluation.evaluate import eval_images, loss_from_meta, score
    from nst_lightning.image import fit_size, open_rgb, pil_to_tensor
    from nst_lightning.inference import load_model
    from nst_lightning.losses.styles import set_style_targets

    meta = load_model(style).meta
    loss = loss_from_meta(meta)
    set_style_targets(loss, [(checkpoint_style_image(meta, None, data), meta.get("style_size"))])
    totals = {"full": 0.0, "fast": 0.0}
    folder = Path(data) / "eval" / "content"
    photos = eval_images(folder if folder.is_dir() else Path(data) / "eval", count)
    for path in photos:
        content_img = open_rgb(path)
        content_img = content_img.resize(fit_size(*content_img.size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        content_img.save(buf, format="PNG")
        content = pil_to_tensor(content_img).unsqueeze(0)
        for quality in totals:
            out = Image.open(
                io.BytesIO(stylized(url, style, buf.getvalue(), {"quality": quality, "max_size": str(size)}))
            )
            totals[quality] += score(loss, pil_to_tensor(out).unsqueeze(0), content)["objective"] / len(photos)
    return {f"objective_{k}": round(v, 4) for k, v in totals.items()} | {
        "objective_fast_over_full": round(totals["fast"] / totals["full"], 4),
        "objective_images": len(photos),
    }


def matrix(args: argparse.Namespace) -> list[dict]:
    """Eager baseline, full and fast variants at 256 and 512 px, all misses, from the same run."""
    rows: list[dict] = []
    servers = {"eager": ["runtime=eager", "cache=none"],
               "ort": ["runtime=onnxruntime", "fast_runtime=onnxruntime_int8", "cache=none"]}  # fmt: skip
    plan = [("eager_full", "eager", "full"), ("full", "ort", "full"), ("fast", "ort", "fast")]
    for server, extra in servers.items():
        proc, url = start_server([*extra, *args.server_args])
        try:
            for label, _, quality in (p for p in plan if p[1] == server):
                for size in (256, 512):
                    images = [synthetic_jpeg(size, 1000 * size + seed) for seed in range(args.requests)]
                    row = run_load(url, args.style, images, args.requests, args.clients, {"quality": quality})
                    rows.append({"variant": label, "size": size, **row})
                    print(json.dumps(rows[-1]), flush=True)
            if server == "ort":
                quality = objectives(url, args.style, args.quality_images, 512)
                if quality is not None:
                    rows.append({"variant": "quality", "size": 512, **quality})
                    print(json.dumps(rows[-1]), flush=True)
            rows.append({"variant": f"server_{server}", "peak_rss_mb": peak_rss_mb(proc.pid)})
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    eager = {r["size"]: r["requests_per_s"] for r in rows if r["variant"] == "eager_full"}
    for r in rows:
        if r["variant"] in ("full", "fast"):
            r["x_eager_req_per_s"] = round(r["requests_per_s"] / eager[r["size"]], 2)
    return rows


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
    parser.add_argument("--matrix", action="store_true", help="eager vs full vs fast at 256 and 512 px (see above)")
    parser.add_argument("--quality-images", type=int, default=4, help="--matrix: eval photos for the objective")
    parser.add_argument("server_args", nargs="*", help="key=value settings for serve.py (after --)")
    args = parser.parse_args()
    if args.matrix:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())  # fmt: skip
        print(json.dumps({"settings": vars(args) | {"cpu": cpu, "cpu_count": os.cpu_count()}}), flush=True)
        rows = matrix(args)
        print(json.dumps({"summary": [r for r in rows if r["variant"] in ("full", "fast", "quality")]}), flush=True)
        return
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
