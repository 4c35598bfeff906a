#!/usr/bin/env python
"""Soak test of the service: 16 clients send a mix of good (small and 1024-px), bad, huge, aborted and stalled
requests and the inputs that once reached a 500, for ``--minutes`` (default 10), while the Redis cache is killed
and restarted twice and, in every other phase of ``--phase-s`` seconds, one address holds 16 or 64 stalled and
trickling uploads, renewed as the server drops them (the slow-client attack). Loopback only.

    python benchmarks/serve_soak.py                       # 10 minutes, writes nothing but JSON lines
    python benchmarks/serve_soak.py --minutes 3 --report docs/results/serve_soak.md

It starts its own redis-server and ``serve.py`` (``cache=redis``, a private TMPDIR) on free loopback ports and
stops both at the end. Each client sends from its own loopback address (127.0.0.10, .11, ...), the attack from
127.0.0.200. Each line of output is JSON; the last one is the summary: requests by kind and outcome, good
requests lost (anything but 200 or 503), 500s, the good requests' 200s per second in the phases without and with
the attack, server RSS over time (start, peak, final), open file descriptors, files left in the server's TMPDIR,
and whether the targets held (zero 500s, zero lost good requests, the 200-rate under attack at least 80 % of the
rate without it, final RSS within 300 MB of the start, no temp files).
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
KINDS = ("good", "repeat", "large", "bad", "huge", "aborted", "stalled", "former_500")
WEIGHTS = (36, 20, 3, 14, 8, 8, 7, 4)
GOOD_KINDS = ("good", "repeat", "large")  # must get 200 (or 503 when busy)
# The service's own runtime (auto) unless a setting after -- names another (-- runtime=eager).
SERVER_ARGS = ["max_upload_mb=2", "max_size=1024", "body_timeout_s=5", "header_timeout_s=5",
               "max_queue=8", "max_uploads_held=16", "shutdown_timeout_s=5", "log_level=warning"]  # fmt: skip
ATTACKER = "127.0.0.200"  # the address of the slow-client attack; client i sends from 127.0.0.(10 + i)
ATTACK = r"""
import socket, sys, time
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
head = (b"POST /stylize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 99999\r\n\r\n--x\r\n")
socks = [None] * count
while True:
    for i, s in enumerate(socks):  # even sockets stall, odd ones trickle a byte a round
        if s is None:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
                s.sendall(head)
                s.setblocking(False)
                socks[i] = s
            except OSError:
                pass
            continue
        try:
            if s.recv(65536) == b"":
                raise ConnectionError  # answered and closed by the server: renewed on the next round
        except BlockingIOError:
            if i % 2:
                try:
                    s.send(b"a")
                except OSError:
                    s.close(); socks[i] = None
        except OSError:
            s.close(); socks[i] = None
    time.sleep(0.5)
"""


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
    """The files under ``folder`` (relative names) and their total size."""
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


def raw_upload(port: int, source: str, body: bytes, ctype: str, send: int, wait_for_answer: bool) -> str:
    """Send headers and ``send`` bytes of ``body`` on a raw socket from ``source``; then either close (abort) or
    wait for the server to answer or close (stall). Returns the outcome."""
    with socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(source, 0)) as sock:
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


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def former_500(http: httpx.Client, rng: random.Random, photo: bytes) -> str:
    """One of the inputs that once reached a 500: a multipart boundary over 256 characters (either route), a
    zero-shot painting with a side under 4 px, a ``style_mix`` weight written as a 401-digit JSON integer."""
    which = rng.choice(("boundary", "tiny_painting", "huge_weight"))
    if which == "boundary":
        boundary = "b" * rng.choice((257, 300, 1000))
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="style"\r\n\r\nstarry_night\r\n--{boundary}--\r\n'
        route = rng.choice(("/stylize", "/stylize/zeroshot"))
        r = http.post(
            route, content=body.encode(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
    elif which == "tiny_painting":
        size = rng.choice(((1, 1), (2, 2), (1, 100), (3, 7)))
        files = {"image": ("p.jpg", photo, "image/jpeg"),
                 "style_image": ("tiny.png", png(Image.new("RGB", size, (200, 40, 30))), "image/png")}  # fmt: skip
        r = http.post("/stylize/zeroshot", files=files, data={"max_size": "128"})
    else:
        mix = '{"candy": 1' + "0" * 400 + ', "mosaic": 1}'
        r = http.post("/stylize", files={"image": ("p.jpg", photo, "image/jpeg")},
                      data={"style": "multistyle", "style_mix": mix})  # fmt: skip
    return f"{which}:{r.status_code}"


def client(port: int, stop: float, seed: int, results: Counter, good_log: list, lock: threading.Lock) -> None:
    """One client from its own loopback address; every request's (end time, kind, outcome, seconds) goes to
    ``good_log``."""
    rng = random.Random(seed)
    url = f"http://127.0.0.1:{port}"
    source = f"127.0.0.{10 + seed}"
    shared = [jpeg(256, s) for s in range(4)]  # a few popular images: cache hits and shared results
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, timeout=120, transport=transport) as http:
        n = 0
        while time.monotonic() < stop:
            n += 1
            kind = rng.choices(KINDS, WEIGHTS)[0]
            began = time.monotonic()
            try:
                if kind in GOOD_KINDS:
                    if kind == "good":
                        image = jpeg(rng.choice((128, 256, 384)), seed * 100_000 + n)
                    elif kind == "large":
                        image = jpeg(1024, seed * 100_000 + n)  # stylized at 1024 px (max_size=1024)
                    else:
                        image = rng.choice(shared)
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
                    outcome = raw_upload(port, source, body, "image/jpeg", len(body) // 2, wait_for_answer=False)
                elif kind == "stalled":
                    body = jpeg(256, n)
                    outcome = raw_upload(port, source, body, "image/jpeg", len(body) // 3, wait_for_answer=True)
                else:
                    outcome = former_500(http, rng, jpeg(64, n))
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with lock:
                results[(kind, outcome)] += 1
                good_log.append((time.monotonic(), kind, outcome, time.monotonic() - began))


class Attack:
    """The slow-client attack: a subprocess holding ``count`` stalled and trickling uploads from one address."""

    def __init__(self, port: int) -> None:
        self.port, self.proc, self.count = port, None, 0

    def start(self, count: int) -> None:
        self.stop()
        self.count = count
        self.proc = subprocess.Popen([sys.executable, "-c", ATTACK, str(self.port), str(count), ATTACKER])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc, self.count = None, 0


def phase_rates(phases: list[dict], good_log: list[tuple[float, str, str, float]]) -> dict:
    """Good requests' 200s per second (and their share of 200) in the phases without and with the attack."""
    totals: dict[str, dict[str, float]] = {}
    for phase in phases:
        done = [(k, o, d) for t, k, o, d in good_log if phase["start"] <= t < phase["end"]]
        outcomes = [o for k, o, _ in done if k in GOOD_KINDS]
        phase["requests"] = dict(Counter(k for k, _, _ in done))
        phase["good"], phase["ok"] = len(outcomes), outcomes.count("200")
        ok_s = [d for k, o, d in done if k in GOOD_KINDS and o == "200"]
        phase["ok_mean_s"] = round(sum(ok_s) / max(len(ok_s), 1), 2)
        phase["large_ok"] = sum(k == "large" and o == "200" for k, o, _ in done)
        phase["ok_per_s"] = round(phase["ok"] / max(phase["end"] - phase["start"], 1e-9), 3)
        keys = [f"{phase['sockets']}_sockets", "attack"] if phase["sockets"] else ["none"]
        if not phase["cache_down"]:  # the same, over the phases with the cache up throughout
            keys += ["attack_cache_up" if phase["sockets"] else "none_cache_up"]
        for key in keys:
            t = totals.setdefault(key, {"seconds": 0.0, "good": 0, "ok": 0})
            t["seconds"] += phase["end"] - phase["start"]
            t["good"] += phase["good"]
            t["ok"] += phase["ok"]
    for t in totals.values():
        t["ok_per_s"] = round(t["ok"] / max(t["seconds"], 1e-9), 3)
        t["ok_share"] = round(t["ok"] / max(t["good"], 1), 3)
        t["seconds"] = round(t["seconds"], 1)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument(
        "--phase-s",
        type=float,
        default=60.0,
        help="seconds of each phase; phases alternate: no attack, 16 sockets, none, 64 sockets, ...",
    )
    parser.add_argument("--report", type=Path, help="also write the summary as a markdown file")
    parser.add_argument("--note", default="", help="a sentence for the report on the machine (what else ran)")
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
    good_log: list[tuple[float, str, str, float]] = []
    phases: list[dict] = []
    attack = Attack(port)
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
        threads = [threading.Thread(target=client, args=(port, stop, seed, results, good_log, lock))
                   for seed in range(args.clients)]  # fmt: skip
        for t in threads:
            t.start()
        # Redis is killed at the start of the phases about 30 % and 60 % of the way, one with the attack and one
        # without (an outage skips the cache for breaker_open_s after it, so it lowers that phase's 200-rate)
        count = max(2, round(args.minutes * 60 / args.phase_s))
        first = round(count * 0.3) | 1  # odd: an attack phase
        second = max(first + 1, round(count * 0.6) // 2 * 2)  # even: no attack
        outages = [begin + i * args.phase_s for i in (first, second)]
        down_until = None
        next_sample = begin
        while (now := time.monotonic()) < stop:
            index = int((now - begin) // args.phase_s)
            if len(phases) <= index:  # a new phase: odd ones hold 16, 64, 16, ... sockets
                sockets = 0 if index % 2 == 0 else (16, 64)[(index // 2) % 2]
                if phases:
                    phases[-1]["end"] = now
                attack.start(sockets) if sockets else attack.stop()
                phases.append({"t_s": round(now - begin), "sockets": sockets, "start": now, "end": stop,
                               "cache_down": redis.proc is None})  # fmt: skip
                print(json.dumps({"t_s": round(now - begin), "attack_sockets": sockets}), flush=True)
            if outages and now >= outages[0]:
                outages.pop(0)
                redis.kill()
                phases[-1]["cache_down"] = True
                down_until = now + min(30.0, args.phase_s / 2)
                print(json.dumps({"t_s": round(now - begin), "redis": "killed"}), flush=True)
            if down_until is not None and now >= down_until:
                redis.start()
                down_until = None
                print(json.dumps({"t_s": round(now - begin), "redis": "restarted"}), flush=True)
            if now >= next_sample:
                next_sample += args.sample_s
                samples.append((round(now - begin, 1), status_of(server.pid, "VmRSS") // 1024))
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
                if health["status"] != "ok" or redis.proc is None:
                    phases[-1]["cache_down"] = True  # Redis down or the breaker open in this phase
                print(json.dumps({"t_s": samples[-1][0], "rss_mb": samples[-1][1], "health": health["status"]}),
                      flush=True)  # fmt: skip
            time.sleep(min(1.0, max(0.0, stop - time.monotonic())))
        attack.stop()
        for t in threads:
            t.join(timeout=180)
        if down_until is not None:
            redis.start()
        time.sleep(2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        final_rss = status_of(server.pid, "VmRSS") // 1024
        peak_rss = status_of(server.pid, "VmHWM") // 1024
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    finally:
        attack.stop()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        redis.kill()
    tmp_files, tmp_bytes = folder_bytes(tmp)  # once the server has exited: what it left behind
    tmp_heads = {name: (tmp / name).read_bytes()[:80].decode("latin-1") for name in tmp_files[:5]}
    tmp_dirs = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_dir())
    ours = [d for d in tmp_dirs if d.startswith("nst")]  # torch's own torchinductor_root/ is reported, not ours
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, outcome), count in sorted(results.items()):
        by_kind.setdefault(kind, {})[outcome] = count
    lost = sum(c for k in GOOD_KINDS for o, c in by_kind.get(k, {}).items() if o not in ("200", "503"))
    server_500 = sum(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith("nst_requests_total") and 'status="500"' in line)  # fmt: skip
    counters = {name: sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))
                for name in ("nst_cache_hits_total", "nst_cache_misses_total", "nst_shared_total", "nst_rejected_total",
                             "nst_client_aborted_total", "nst_body_timeouts_total", "nst_cache_errors_total",
                             "nst_cache_skipped_total")}  # fmt: skip
    rates = phase_rates(phases, good_log)
    without, under = rates.get("none", {}).get("ok_per_s", 0.0), rates.get("attack", {}).get("ok_per_s", 0.0)
    ratio = round(under / without, 3) if without else None
    up_without = rates.get("none_cache_up", {}).get("ok_per_s", 0.0)
    up_ratio = round(rates.get("attack_cache_up", {}).get("ok_per_s", 0.0) / up_without, 3) if up_without else None
    summary = {
        "minutes": args.minutes, "clients": args.clients, "phase_s": args.phase_s,
        "requests": sum(results.values()), "by_kind": by_kind,
        "good_lost": lost, "server_500": server_500, "server_counters": counters,
        "good_200_per_s": rates, "attack_over_none": ratio, "attack_over_none_cache_up": up_ratio,
        "phases": [{k: v for k, v in p.items() if k not in ("start", "end")} for p in phases],
        "rss_mb": {"start": start_rss // 1024, "peak": peak_rss, "final": final_rss}, "rss_samples": samples,
        "open_fds": fds, "tmp_files": len(tmp_files), "tmp_names": tmp_files[:5], "tmp_heads": tmp_heads,
        "tmp_bytes": tmp_bytes, "tmp_dirs": tmp_dirs, "server_exit_status": server.returncode,
        "targets_held": {"zero_500": server_500 == 0, "zero_lost_good": lost == 0,
                         "attack_rate_within_20pct": ratio is not None and ratio >= 0.8,
                         "final_rss_within_300mb": final_rss - start_rss // 1024 <= 300,
                         "no_temp_files": not tmp_files and not ours},
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.report:
        write_report(args.report, summary, args.note)


def write_report(path: Path, s: dict, note: str = "") -> None:
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
        f"Redis killed and restarted twice, phases of {s['phase_s']:g} s alternating no attack and one address "
        f"holding 16 or 64 stalled and trickling uploads; server settings `{' '.join(SERVER_ARGS)}`. CPU: {cpu}, "
        f"{os.cpu_count()} cores. {note}".rstrip(),
        "",
        "| kind | outcomes |",
        "|---|---|",
        *(f"| {k} | {', '.join(f'{o}: {c}' for o, c in v.items())} |" for k, v in s["by_kind"].items()),
        "",
        f"- requests: {s['requests']}; good requests lost (not 200/503): {s['good_lost']}; "
        f"server 500s: {s['server_500']:g}",
        f"- server counters: {counters}",
        f"- RSS MB: start {rss['start']}, peak {rss['peak']}, final {rss['final']}; samples (s: MB): {samples}",
        f"- open fds at the end: {s['open_fds']}; left in the server's TMPDIR after it exited: {s['tmp_files']} files "
        f"({s['tmp_bytes']} bytes{': ' + ', '.join(s['tmp_names']) if s['tmp_names'] else ''}), "
        f"folders: {', '.join(s['tmp_dirs']) or 'none'}; "
        f"exit status after SIGTERM: {s['server_exit_status']} (uvicorn re-raises SIGTERM once shut down)",
        f"- targets: {targets}",
        "",
        "Good requests (good, repeat, large) answered 200, per second, by phase:",
        "",
        "| phases | seconds | good requests | 200 | 200/s | share 200 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {k} | {v['seconds']:g} | {v['good']} | {v['ok']} | {v['ok_per_s']:g} | {v['ok_share']:g} |"
            for k, v in s["good_200_per_s"].items()
        ),  # fmt: skip
        "",
        f"200/s with the attack / without: {s['attack_over_none']} (phases with the cache up throughout: "
        f"{s['attack_over_none_cache_up']}). Each phase (start s: sockets, 200/s, mean seconds of a 200, cache "
        "down): "
        + "; ".join(
            f"{p['t_s']}: {p['sockets']}, {p['ok_per_s']:g}, {p['ok_mean_s']:g} s"
            f"{', cache down' if p['cache_down'] else ''}"
            for p in s["phases"]
        )
        + ".",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
