"""The session of a release run: its folders, its deadline, the JSON-lines record, and the subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import REPO, Profile


class Session:
    """The output folder, the work folder, the deadline and the JSON-lines record of every run."""

    def __init__(self, out: Path, work: Path, total_s: float, profile: Profile, dry: bool) -> None:
        self.out, self.work, self.profile, self.dry = out, work, profile, dry
        self.t0 = time.monotonic()
        self.deadline = self.t0 + total_s
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.card = card(profile.device)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def record(self, phase: str, name: str, **fields: Any) -> dict[str, Any]:
        row = {"phase": phase, "name": name, "at_s": round(self.elapsed(), 1), "card": self.card, **fields}
        with open(self.out / "runs.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        print(f"[{row['at_s']:6.1f}s] {phase}/{name}: " + json.dumps(fields, default=str)[:300], flush=True)
        return row

    def run_all(self, jobs: list[Job], parallel: int | None = None, reserve_s: float = 0.0) -> list[Job]:
        """Run ``jobs`` (``parallel`` at a time), each killed at its own timeout or at the deadline less
        ``reserve_s``; returns them with ``returncode`` and ``seconds`` set (-9: killed, None: never started)."""
        parallel = parallel or self.profile.parallel
        pending, running = list(jobs), []
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                if self.left() - reserve_s < 5:
                    job.skipped = "deadline"
                    continue
                job.start(self.env)
                running.append(job)
            for job in list(running):
                limit = min(job.started + job.timeout_s, time.monotonic() + self.left() - reserve_s)
                if job.proc.poll() is not None or time.monotonic() > limit:
                    job.finish()
                    running.remove(job)
            time.sleep(0.5)
        return jobs


@dataclass
class Job:
    """One subprocess: a command, its log file and what came of it."""

    name: str
    cmd: list[str]
    log: Path
    timeout_s: float
    started: float = 0.0
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    seconds: float = 0.0
    skipped: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("$ " + shlex.join(self.cmd) + "\n")
        self._fh = open(self.log, "a")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )

    def finish(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.returncode, self.seconds = self.proc.returncode, round(time.monotonic() - self.started, 1)
        self._fh.close()

    def json_lines(self) -> list[dict[str, Any]]:
        rows = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    rows.append(json.loads(line))
        return rows


def card(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def max_time(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
