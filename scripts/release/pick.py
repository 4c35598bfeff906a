"""The pick phase: the recipe ablation (``benchmarks/ablation.py``) and the rule that picks its winner."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from .session import Job, Session, max_time


def pick_winner(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule: among variants whose objective (÷ L-BFGS@50, on the baseline's objective) beat the baseline by
    more than the noise floor (the seeds' spread) and did not add checkerboard (ablation.py's verdict), the one
    with the lowest objective; its stripe figure must not be worse than the baseline's by more than 0.005.
    None qualifies → the baseline recipe."""
    base = next((r for r in rows if r.get("name") == "baseline"), None)
    ok = []
    for r in rows:
        verdict = r.get("verdict", "")
        if (
            r is base
            or r.get("eval_objective") is None
            or "objective better" not in verdict
            or "checkerboard more" in verdict
        ):
            continue
        if base and r.get("stripe_rms", 0) > base.get("stripe_rms", 0) + 0.005:
            continue
        ok.append(r)
    best = min(ok, key=lambda r: r["eval_objective"]) if ok else base
    return {
        "name": best["name"] if best else "baseline",
        "overrides": best.get("overrides", []) if best else [],
        "measured": base is not None and base.get("eval_objective") is not None,
    }


def phase_pick(s: Session) -> dict[str, Any]:
    p = s.profile
    report = s.work / "pick" / "ablation"
    budget = ["--tiny", "--steps", "2"] if p.step_limit else ["--time", max_time(min(p.pick_seconds, s.left() * 0.3))]
    cmd = [
        sys.executable,
        "benchmarks/ablation.py",
        "--preset",
        "gpu",
        "--only",
        *p.pick_variants,
        *budget,
        "--parallel",
        str(len(p.pick_variants)),
        "--eval-size",
        str(p.eval_sizes[0]),
        "--eval-images",
        str(p.eval_images),
        "--lbfgs",
        str(p.lbfgs),
        "--checkpoint",
        "last",
        "--device",
        p.device,
        "--out",
        str(s.work / "pick"),
        "--report",
        str(report),
        "--extra",
        *p.train_extra,
    ]
    job = Job("ablation", cmd, s.work / "logs" / "pick.log", timeout_s=max(30, s.left() * 0.45))
    s.run_all([job], parallel=1)
    rows = [r for r in job.json_lines() if "name" in r and "overrides" in r]
    final = report.with_suffix(".jsonl")
    if final.exists():  # the complete rows, with verdicts against the noise floor
        rows = [json.loads(line) for line in final.read_text().splitlines()[1:]]
        shutil.copy(report.with_suffix(".md"), s.out / "ablation.md")
    for r in rows:
        s.record("pick", r["name"], **{k: v for k, v in r.items() if k not in ("name", "val_curve", "meta_ref")})
    winner = pick_winner(rows) if rows else {"name": "baseline", "overrides": [], "measured": False}
    s.record("pick", "winner", returncode=job.returncode, seconds=job.seconds, recipe=winner)
    return winner
