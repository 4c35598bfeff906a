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
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's nst_lightning (the GPU machine has no installed copy)

from release.check import phase_check  # noqa: E402  (scripts/ is on the path: this file's folder)
from release.manifest import install, load_manifest  # noqa: E402
from release.measure import phase_multistyle, phase_throughput, phase_transfer  # noqa: E402
from release.pick import phase_pick  # noqa: E402
from release.plan import estimate, measure_throughput, plan_training  # noqa: E402
from release.prepare import prepare  # noqa: E402
from release.profiles import DRY, GPU  # noqa: E402
from release.session import Session  # noqa: E402
from release.ship import phase_ship  # noqa: E402
from release.train import phase_train  # noqa: E402

PHASES = "plan,pick,train,check,ship,multistyle"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", help="output folder (what comes back)")
    ap.add_argument("--prepare", type=Path, default=None, metavar="BUNDLE", help="build the carried bundle here")
    ap.add_argument("--short-side", type=int, default=320, help="--prepare: training photos' shorter side")
    ap.add_argument("--install", type=Path, default=None, metavar="OUT", help="install a release's passing models")
    ap.add_argument("--dry-run", action="store_true", default=bool(os.environ.get("DRY_RUN")))
    ap.add_argument("--total-s", type=float, default=None, help="deadline (default $TOTAL_S, else 560; dry: 3600)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default /tmp/gpu_release; OUT/work dry)")
    ap.add_argument("--phases", default=os.environ.get("PHASES") or PHASES, help="default $PHASES, else all")
    args = ap.parse_args()
    if args.out is None and not (args.prepare or args.install):
        ap.error("give OUT (or --prepare BUNDLE / --install OUT)")
    if args.total_s is None:  # a busy shared CPU takes minutes for the dry run: no deadline there unless asked
        args.total_s = float(os.environ.get("TOTAL_S") or (3600 if args.dry_run else 560))
    return args


def run_release(args: argparse.Namespace) -> None:
    """Every phase named in ``args.phases``, in order, within the one deadline."""
    profile = DRY if args.dry_run else GPU
    work = args.work or (args.out / "work" if args.dry_run else Path("/tmp/gpu_release"))
    s = Session(args.out.resolve(), work.resolve(), args.total_s, profile, args.dry_run)
    phases = args.phases.split(",")
    manifest = load_manifest()
    rate = measure_throughput(profile)
    winner = manifest.get("recipe") or {"name": "baseline", "overrides": [], "measured": False}
    plan = plan_training(s, winner, manifest)
    est = estimate(s, plan, rate)
    waves = {k: [(j["name"], j["seconds"]) for j in plan[k]] for k in ("wave_a", "wave_b", "wave_c")}
    s.record("plan", "plan", dry_run=s.dry, images_per_s=round(rate, 1), estimated_s=est, total_s=args.total_s,
             waves=waves, fits=sum(est.values()) <= args.total_s)  # fmt: skip
    if manifest.get("recipe"):  # picked in an earlier window: the ablation is not repeated
        s.record("pick", "winner", resumed=True, recipe=winner)
    elif "pick" in phases:
        winner = phase_pick(s)
    models = phase_train(s, winner, manifest) if "train" in phases else {}
    rows = {}
    if "check" in phases:
        rows = phase_check(s, models, manifest)
        phase_throughput(s)
        phase_transfer(s)
    if "ship" in phases:
        phase_ship(s, models, rows, winner)
    if "multistyle" in phases:
        phase_multistyle(s, models)
    print(f"release done in {s.elapsed():.0f} s (deadline {args.total_s:.0f} s)", flush=True)


def main() -> None:
    args = parse_args()
    if args.prepare:
        return prepare(args.prepare, Path(os.environ.get("NST_DATA_DIR", REPO / "data")), args.short_side)
    if args.install:
        return install(args.install)
    return run_release(args)


if __name__ == "__main__":
    main()
