"""The train phase: each wave's jobs at once, each run exported to an fp16 model file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .plan import plan_training
from .profiles import CHECK_RESERVE_S, PRETRAINED, STARTUP_S
from .session import Job, Session, max_time


def _train_job(s: Session, spec: dict[str, Any], seconds: float, models: dict[str, Path]) -> Job:
    p, run_dir = s.profile, s.work / "runs" / spec["name"]
    if spec["kind"] == "decoder":
        dry = ["--crop", "32", "--short-side", "48", "--batch", "1"] if s.dry else ["--batch", "16", "--crop", "256"]
        dry += ["--device", p.device]
        cmd = [
            sys.executable,
            "scripts/train_decoder.py",
            "--minutes",
            f"{seconds / 60:.3f}",
            "--work",
            str(run_dir),
            "--out",
            str(s.work / "models" / "decoder.pt"),
            *dry,
        ]
        return Job(spec["name"], cmd, run_dir / "train.log", timeout_s=seconds + 90, info=spec)
    extra = []
    if spec.get("init_from_starry"):
        extra.append(f"init_from={models['starry_night']}")
    if spec["kind"] == "student":
        extra.append(f"teacher={models[spec['teacher']]}")
    budget = p.step_limit or [f"++trainer.max_time={max_time(seconds)}", "trainer.max_steps=-1"]
    overrides = spec["overrides"]
    if s.dry and spec["kind"] in ("style", "student"):  # experiment=tiny replaces the recipe, the style stays
        overrides = ["experiment=tiny", *[o for o in overrides if not o.startswith("experiment=")], "style.size=64"]
        overrides += ["distill.pixel_weight=100"] if spec["kind"] == "student" else []
    elif s.dry:  # the five-style network keeps its own experiment and model, on tiny data, loss and trainer
        overrides = [*overrides, "loss=tiny", "data=tiny", "trainer=tiny"]
    cmd = [sys.executable, "train.py", *overrides, *p.train_extra, *extra, *budget, f"hydra.run.dir={run_dir}",
           "++trainer.enable_progress_bar=false"]  # fmt: skip
    return Job(spec["name"], cmd, run_dir / "train.log", timeout_s=seconds + 120, info=spec)


def _export(s: Session, job: Job) -> Path | None:
    """The run's best (else last) checkpoint as an fp16 model file in WORK/models; None when there is none."""
    from nst_lightning.inference import export_model

    if job.info["kind"] == "decoder":
        out = s.work / "models" / "decoder.pt"
        return out if out.exists() else None
    ckpts = s.work / "runs" / job.name / "checkpoints"
    best = sorted(ckpts.glob("best-*.ckpt"))
    ckpt = best[-1] if best else ckpts / "last.ckpt"
    if not ckpt.exists():
        return None
    return export_model(ckpt, s.work / "models" / f"{job.name}.pt", half=True)


def _run_facts(s: Session, job: Job) -> dict[str, Any]:
    """Training steps, images seen (steps × batch) and the checkpoint used, from the run's files."""
    import torch
    import yaml

    facts: dict[str, Any] = {}
    last = s.work / "runs" / job.name / "checkpoints" / "last.ckpt"
    if last.exists():
        facts["steps"] = torch.load(last, map_location="cpu", weights_only=True).get("global_step")
    cfg = s.work / "runs" / job.name / ".hydra" / "config.yaml"
    if cfg.exists() and facts.get("steps") is not None:
        facts["images_seen"] = facts["steps"] * yaml.safe_load(cfg.read_text())["data"]["batch_size"]
    return facts


def phase_train(s: Session, winner: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Path]:
    plan = plan_training(s, winner, manifest)
    models: dict[str, Path] = {name: PRETRAINED / manifest["models"][name]["file"] for name in plan["skipped_shipped"]}
    s.record(
        "train",
        "plan",
        **{k: [j["name"] for j in v] if isinstance(v, list) and k.startswith("wave") else v for k, v in plan.items()},
    )
    waves = [plan["wave_a"], plan["wave_b"], plan["wave_c"]]
    for i, wave in enumerate(waves):
        if not wave:
            continue
        # The first wave (starry_night, the shared networks) is shrunk to fit; a later wave runs only with its
        # full budget (short budgets make weak models): otherwise it waits for the next window (resume).
        planned = max(j["seconds"] for j in wave)
        room = s.left() - CHECK_RESERVE_S - STARTUP_S
        if i and room < planned:
            for spec in wave:
                s.record("train", spec["name"], skipped="deadline: next window", planned_s=planned, room_s=round(room))
            continue
        share = max(10.0, min(planned, room))
        jobs = [
            _train_job(s, spec, min(spec["seconds"], share), models)
            for spec in wave
            if not (spec.get("init_from_starry") and "starry_night" not in models)
            and not (spec["kind"] == "student" and spec["teacher"] not in models)
        ]
        s.run_all(jobs, parallel=s.profile.parallel, reserve_s=60)
        for job in jobs:
            model = _export(s, job) if job.returncode is not None else None
            if model is not None:
                models[job.name] = model
            s.record(
                "train",
                job.name,
                kind=job.info["kind"],
                returncode=job.returncode,
                train_seconds=job.seconds,
                skipped=job.skipped or None,
                model=str(model) if model else None,
                overrides=job.info.get("overrides"),
                **_run_facts(s, job),
            )
    return models
