#!/usr/bin/env python
"""The service's memory for the worst documented cases: RSS of ``serve.py`` idle, at its peak during each case and
a few seconds after it, against the budget formula of ``docs/serve.md``.

    python benchmarks/serve_memory.py                        # default settings (runtime=auto), all cases
    python benchmarks/serve_memory.py --cases 1024 4096 -- runtime=eager trim_memory=false

Cases: ``uploads`` (40 concurrent uploads of the largest body ``max_upload_mb`` allows, each a real image),
``webp`` (a 38-megapixel WebP of about 100 KB), ``1024`` and ``4096`` (a photo with that longest side, stylized
at the service's ``max_size``). The peak is the server's VmHWM, reset before each case (``/proc/PID/clear_refs``).
Each line of output is JSON; the last one holds every case.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_soak import free_port, status_of  # noqa: E402  (the soak's helpers)

CASES = ("uploads", "webp", "1024", "4096")


def photo(side: int, fmt: str = "JPEG") -> bytes:
    """A smooth photo-like picture with ``side`` pixels on its longest side (4:3)."""
    rng = np.random.default_rng(side)
    small = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((side, side * 3 // 4), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return buf.getvalue()


def noise_png(nbytes: int) -> bytes:
    """An incompressible PNG of about ``nbytes`` (random pixels)."""
    side = int((nbytes / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def flat_webp(pixels: int) -> bytes:
    side = int(pixels**0.5)
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 40)).save(buf, format="WEBP", quality=10)
    return buf.getvalue()


def post(url: str, data: bytes, statuses: list[int], style: str) -> None:
    try:
        files = {"image": ("upload", data, "application/octet-stream")}
        statuses.append(httpx.post(f"{url}/stylize", files=files, data={"style": style}, timeout=600).status_code)
    except httpx.HTTPError:
        statuses.append(0)


def measure(pid: int, url: str, name: str, bodies: list[bytes], style: str, settle_s: float) -> dict:
    """Send ``bodies`` at once; the server's RSS before, its peak, and ``settle_s`` after the last answer."""
    before = status_of(pid, "VmRSS") // 1024
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    statuses: list[int] = []
    threads = [threading.Thread(target=post, args=(url, b, statuses, style)) for b in bodies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    peak = status_of(pid, "VmHWM") // 1024
    time.sleep(settle_s)
    after = status_of(pid, "VmRSS") // 1024
    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {"case": name, "statuses": counts, "seconds": round(seconds, 1), "before_mb": before, "peak_mb": peak,
            "after_mb": after}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--uploads", type=int, default=40, help="concurrent largest uploads (case 'uploads')")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a case before RSS is read")
    parser.add_argument("--style", default="starry_night")
    parser.add_argument("serve_args", nargs="*", help="after --: serve.py settings (KEY=VALUE)")
    args = parser.parse_args()
    port = free_port()
    settings = ["cache=none", f"styles=[{args.style}]", "log_level=warning", *args.serve_args]
    proc = subprocess.Popen([sys.executable, "serve.py", f"port={port}", *settings], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("serve.py did not come up") from None
                time.sleep(0.3)
        max_mb = next((float(a.split("=", 1)[1]) for a in args.serve_args if a.startswith("max_upload_mb=")), 20.0)
        for _ in range(2):  # warm: model, threads, allocator
            post(url, photo(512), [], args.style)
        time.sleep(args.settle)
        idle = status_of(proc.pid, "VmRSS") // 1024
        print(json.dumps({"idle_mb": idle, "settings": settings}), flush=True)
        bodies = {
            "uploads": lambda: [noise_png(int(max_mb * 2**20) - 4096)] * args.uploads,
            "webp": lambda: [flat_webp(38_000_000)],
            "1024": lambda: [photo(1024)],
            "4096": lambda: [photo(4096)],
        }
        results = []
        for name in args.cases:
            result = measure(proc.pid, url, name, bodies[name](), args.style, args.settle)
            result["peak_over_idle_mb"], result["after_over_idle_mb"] = (
                result["peak_mb"] - idle,
                result["after_mb"] - idle,
            )
            print(json.dumps(result), flush=True)
            results.append(result)
        print(json.dumps({"idle_mb": idle, "settings": settings, "cases": results}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
