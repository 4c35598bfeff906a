"""Benchmarks run in a release window: training throughput, the transfer profile, multi- vs single-style."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .profiles import THROUGHPUT_ARGS
from .session import Job, Session


def phase_throughput(s: Session) -> None:
    """johnson's training step at 256 px: one process per setting, then the best plain setting in N processes at
    once (their images/s summed: what the shared GPU gives in total)."""
    p, fixed = s.profile, THROUGHPUT_ARGS[s.profile.device]
    for i, args in enumerate(p.throughput):
        if s.left() < 45:
            s.record("check", f"throughput_{i}", skipped="deadline", args=args)
            continue
        job = Job(
            f"throughput_{i}",
            [sys.executable, "benchmarks/train_throughput.py", *fixed, *args],
            s.work / "logs" / f"throughput_{i}.log",
            timeout_s=min(150, s.left() - 30),
        )
        s.run_all([job], parallel=1)
        for r in job.json_lines()[:-1] or job.json_lines():
            s.record("check", f"throughput_{i}", args=args, returncode=job.returncode, result=r)
    for n in p.concurrent:
        if s.left() < 45:
            s.record("check", f"throughput_x{n}", skipped="deadline")
            continue
        jobs = [
            Job(
                f"throughput_x{n}_{k}",
                [sys.executable, "benchmarks/train_throughput.py", *fixed, *p.throughput[0], "--no-baseline"],
                s.work / "logs" / f"throughput_x{n}_{k}.log",
                timeout_s=min(120, s.left() - 30),
            )
            for k in range(n)
        ]
        s.run_all(jobs, parallel=n)
        rates = [r.get("images_per_s") for j in jobs for r in j.json_lines()[-1:]]
        rates = [r for r in rates if r]
        s.record(
            "check",
            f"throughput_x{n}",
            processes=n,
            per_process=rates,
            aggregate_images_per_s=round(sum(rates), 1) if len(rates) == n else None,
        )


def _benchmark(s: Session, name: str, args: list[str], seconds: int) -> dict[str, Any] | None:
    """Run a benchmark script alone in the time left (``seconds`` at least, else recorded as skipped): its return
    code, seconds and last JSON line (``result``), or None when skipped."""
    if s.left() < seconds + 20:
        s.record("check", name, skipped="deadline")
        return None
    job = Job(name, [sys.executable, *args], s.work / "logs" / f"{name}.log", timeout_s=s.left() - 20)
    s.run_all([job], parallel=1)
    lines = job.json_lines()
    return {"returncode": job.returncode, "job_seconds": job.seconds, "result": lines[-1] if lines else None}


def phase_transfer(s: Session) -> None:
    """The transfer benchmark's profile (student vs teacher, fine-tuning's steps ratio) in the time left."""
    p = s.profile
    args = ["benchmarks/transfer.py", *p.transfer, "--plot-dir", str(s.work / "transfer")]
    if (run := _benchmark(s, "transfer", args, p.transfer_seconds)) is not None:
        s.record("check", "transfer", **run)


def phase_multistyle(s: Session, models: dict[str, Path]) -> None:
    """Multi- against single-style networks at equal steps (``benchmarks/multistyle.py --init-from``), every run
    started from this window's starry_night (else the shipped one), in the time left after shipping."""
    p = s.profile
    if not p.multistyle:
        s.record("check", "multistyle_vs_single", skipped="not in this profile")
        return
    source = str(models.get("starry_night") or "starry_night")
    args = ["benchmarks/multistyle.py", *p.multistyle, "--init-from", source]
    run = _benchmark(s, "multistyle_vs_single", args, p.multistyle_bench_seconds)
    if run is not None:
        result = run.pop("result") or {}
        keep = ("multi_vs_single", "final_val_objective", "parameters", "device")
        s.record("check", "multistyle_vs_single", **run, source=source, **{k: result.get(k) for k in keep})
