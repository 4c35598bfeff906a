#!/usr/bin/env python
"""Soak test of the service: 16 clients send a mix of good, bad, huge, aborted and stalled requests for
``--minutes`` (default 10) while the Redis cache is killed and restarted twice. Loopback only.

    python benchmarks/serve_soak.py                       # 10 minutes, writes nothing but JSON lines
    python benchmarks/serve_soak.py --minutes 3 --report docs/results/serve_soak.md

It starts its own redis-server and ``serve.py`` (``cache=redis``, a private TMPDIR) on free loopback ports and
stops both at the end. Each line of output is JSON; the last one is the summary: requests by kind and outcome,
good requests lost (anything but 200 or 503), 500s, server RSS over time (start, peak, final), open file
descriptors, bytes left in the server's TMPDIR, and whether the targets held (zero 500s, zero lost good
requests, final RSS within 300 MB of the start, no temp files).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
KINDS = ("good", "repeat", "bad", "huge", "aborted", "stalled")
WEIGHTS = (40, 20, 15, 8, 9, 8)
SERVER_ARGS = ["max_upload_mb=2", "max_size=256", "body_timeout_s=5", "header_timeout_s=5", "max_queue=8",
               "max_uploads_held=16", "shutdown_timeout_s=5", "log_level=warning"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def status_of(pid: int, key: str) -> int:
    """A /proc/PID/status field in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def folder_bytes(folder: Path) -> tuple[list[str], int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return [str(p.relative_to(folder)) for p in files], sum(p.stat().st_size for p in files)


class Redis:
    """A redis-server on a fixed loopback port that can be killed and started again."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder, self.proc = free_port(), folder, None
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
             "--appendonly", "no", "--maxmemory", "128mb", "--maxmemory-policy", "allkeys-lru"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def raw_upload(port: int, body: bytes, ctype: str, send: int, wait_for_answer: bool) -> str:
    """Send headers and ``send`` bytes of ``body`` on a raw socket; then either close (abort) or wait for the
    server to answer or close (stall). Returns the outcome."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        head = (f"POST /stylize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        sock.sendall(head + body[:send])
        if not wait_for_answer:
            return "aborted"
        try:
            data = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return "reset" if not isinstance(sys.exc_info()[1], TimeoutError) else "client_timeout"
        return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"


def client(port: int, stop: float, seed: int, results: Counter, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    url = f"http://127.0.0.1:{port}"
    shared = [jpeg(256, s) for s in range(4)]  # a few popular images: cache hits and shared results
    with httpx.Client(base_url=url, timeout=120) as http:
        n = 0
        while time.monotonic() < stop:
            n += 1
            kind = rng.choices(KINDS, WEIGHTS)[0]
            try:
                if kind in ("good", "repeat"):
                    image = (
                        jpeg(rng.choice((128, 256, 384)), seed * 100_000 + n) if kind == "good" else rng.choice(shared)
                    )
                    r = http.post("/stylize", files={"image": ("p.jpg", image, "image/jpeg")},
                                  data={"style": "starry_night", "quality": rng.choice(("full", "fast"))})  # fmt: skip
                    outcome = str(r.status_code)
                elif kind == "bad":
                    junk = rng.choice([b"not an image", jpeg(64, n)[:200], b"\x89PNG\r\n\x1a\n" + b"\0" * 100])
                    fields = rng.choice([{"style": "starry_night"}, {"style": "x" * 5000}, {"strength": "2"}])
                    r = http.post("/stylize", files={"image": ("p.png", junk, "image/png")}, data=fields)
                    outcome = str(r.status_code)
                elif kind == "huge":
                    big = os.urandom(3 * 2**20)  # over the 2 MB limit, streamed without a Content-Length
                    r = http.post("/stylize", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                                  headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
                    outcome = str(r.status_code)
                elif kind == "aborted":
                    body = jpeg(256, n)
                    outcome = raw_upload(port, body, "image/jpeg", len(body) // 2, wait_for_answer=False)
                else:
                    body = jpeg(256, n)
                    outcome = raw_upload(port, body, "image/jpeg", len(body) // 3, wait_for_answer=True)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with lock:
                results[(kind, outcome)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--report", type=Path, help="also write the summary as a markdown file")
    parser.add_argument("server_args", nargs="*", help="extra key=value settings for serve.py (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nst_soak_"))
    tmp = work / "tmp"
    tmp.mkdir()
    redis = Redis(work)
    redis.start()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "serve.py"), f"port={port}", "cache=redis",
           f"cache.url=redis://127.0.0.1:{redis.port}/0", *SERVER_ARGS, *args.server_args]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=REPO, env=env)
    results: Counter = Counter()
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve.py did not start")
            time.sleep(0.5)
        start_rss = status_of(server.pid, "VmRSS")
        begin = time.monotonic()
        stop = begin + args.minutes * 60
        print(json.dumps({"started": True, "rss_mb": start_rss // 1024, "clients": args.clients}), flush=True)
        lock = threading.Lock()
        threads = [
            threading.Thread(target=client, args=(port, stop, seed, results, lock)) for seed in range(args.clients)
        ]
        for t in threads:
            t.start()
        outages = [begin + args.minutes * 60 * f for f in (0.3, 0.65)]
        down_until = None
        while time.monotonic() < stop:
            now = time.monotonic()
            if outages and now >= outages[0]:
                outages.pop(0)
                redis.kill()
                down_until = now + min(30.0, args.minutes * 6)
                print(json.dumps({"t_s": round(now - begin), "redis": "killed"}), flush=True)
            if down_until is not None and now >= down_until:
                redis.start()
                down_until = None
                print(json.dumps({"t_s": round(now - begin), "redis": "restarted"}), flush=True)
            samples.append((round(now - begin, 1), status_of(server.pid, "VmRSS") // 1024))
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
            print(json.dumps({"t_s": samples[-1][0], "rss_mb": samples[-1][1], "health": health["status"]}), flush=True)
            time.sleep(min(args.sample_s, max(0.0, stop - time.monotonic())))
        for t in threads:
            t.join(timeout=180)
        if down_until is not None:
            redis.start()
        time.sleep(2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        final_rss = status_of(server.pid, "VmRSS") // 1024
        peak_rss = status_of(server.pid, "VmHWM") // 1024
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        tmp_files, tmp_bytes = folder_bytes(tmp)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        redis.kill()
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, outcome), count in sorted(results.items()):
        by_kind.setdefault(kind, {})[outcome] = count
    good = {o: c for k, outcomes in by_kind.items() if k in ("good", "repeat") for o, c in outcomes.items()}
    lost = sum(c for o, c in good.items() if o not in ("200", "503"))
    server_500 = sum(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith("nst_requests_total") and 'status="500"' in line)  # fmt: skip
    counters = {name: sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))
                for name in ("nst_cache_hits_total", "nst_cache_misses_total", "nst_shared_total", "nst_rejected_total",
                             "nst_client_aborted_total", "nst_body_timeouts_total", "nst_cache_errors_total",
                             "nst_cache_skipped_total")}  # fmt: skip
    summary = {
        "minutes": args.minutes, "clients": args.clients, "requests": sum(results.values()), "by_kind": by_kind,
        "good_lost": lost, "server_500": server_500, "server_counters": counters,
        "rss_mb": {"start": start_rss // 1024, "peak": peak_rss, "final": final_rss}, "rss_samples": samples,
        "open_fds": fds, "tmp_files": len(tmp_files), "tmp_names": tmp_files[:5], "tmp_bytes": tmp_bytes,
        "server_exit_status": server.returncode,
        "targets_held": {"zero_500": server_500 == 0, "zero_lost_good": lost == 0,
                         "final_rss_within_300mb": final_rss - start_rss // 1024 <= 300,
                         "no_temp_files": not tmp_files},
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.report:
        write_report(args.report, summary)


def write_report(path: Path, s: dict) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    counters = ", ".join(f"{k[4:-6]} {v:g}" for k, v in s["server_counters"].items())
    step = max(1, len(s["rss_samples"]) // 12)
    samples = ", ".join(f"{t:g}: {m}" for t, m in s["rss_samples"][::step])
    targets = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["targets_held"].items())
    rss = s["rss_mb"]
    lines = [
        "# Service soak test",
        "",
        f"`python benchmarks/serve_soak.py --minutes {s['minutes']:g}`: {s['clients']} clients on loopback, "
        f"Redis killed and restarted twice; server settings `{' '.join(SERVER_ARGS)}`. CPU: {cpu}, "
        f"{os.cpu_count()} cores shared with other jobs.",
        "",
        "| kind | outcomes |",
        "|---|---|",
        *(f"| {k} | {', '.join(f'{o}: {c}' for o, c in v.items())} |" for k, v in s["by_kind"].items()),
        "",
        f"- requests: {s['requests']}; good requests lost (not 200/503): {s['good_lost']}; "
        f"server 500s: {s['server_500']:g}",
        f"- server counters: {counters}",
        f"- RSS MB: start {rss['start']}, peak {rss['peak']}, final {rss['final']}; samples (s: MB): {samples}",
        f"- open fds at the end: {s['open_fds']}; files left in the server's TMPDIR: {s['tmp_files']} "
        f"({s['tmp_bytes']} bytes{': ' + ', '.join(s['tmp_names']) if s['tmp_names'] else ''}); "
        f"exit status after SIGTERM: {s['server_exit_status']} (uvicorn re-raises SIGTERM once shut down)",
        f"- targets: {targets}",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
