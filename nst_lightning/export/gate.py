"""The quality gate a lower-precision runtime must pass before it is used: close to eager fp32 on photos.

Two figures against the eager fp32 network:

* ``mean_abs_diff``: the mean absolute difference of the outputs on photos, at most one 8-bit level (1/255);
* ``objective_rel``: the relative change of the mean training objective (content + style + TV, as
  ``evaluate.py`` scores it) on a few evaluation photos, at most 1 %; measured only when an objective is given.

Photos are 1×3×H×W float32 in [0, 1]. Noise inputs (``check_parity``) are harsher than photos and are not the
gate: a bf16 or int8 runtime is a few levels off on noise and well under one level on photos.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nst_lightning.export.base import Runtime

MAX_MEAN_ABS_DIFF = 1.0 / 255.0
MAX_OBJECTIVE_REL = 0.01
Objective = Callable[[torch.Tensor, torch.Tensor], float]  # (1×3×H×W output, 1×3×H×W content) → objective


@dataclass(frozen=True)
class GateResult:
    """What the gate measured for one runtime, and whether it passed (``reason`` says why, for the log)."""

    runtime: str
    mean_abs_diff: float
    objective_rel: float | None
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"runtime": self.runtime, "mean_abs_diff": self.mean_abs_diff, "objective_rel": self.objective_rel,
                "passed": self.passed, "reason": self.reason}  # fmt: skip


@torch.inference_mode()
def check_gate(
    reference: Runtime,
    candidate: Runtime,
    photos: Sequence[torch.Tensor],
    objective: Objective | None = None,
    objective_photos: Sequence[torch.Tensor] | None = None,
) -> GateResult:
    """Compare ``candidate`` with the eager fp32 ``reference`` on ``photos`` (and the objective, if given, on
    ``objective_photos``, default ``photos``)."""
    diffs = []
    for photo in photos:
        expected, got = reference(photo), candidate(photo).to(reference.device)
        diffs.append(float((got - expected).abs().mean()))
    mean_abs = statistics.fmean(diffs)
    rel = None
    if objective is not None:
        chosen = objective_photos if objective_photos is not None else photos
        ref_obj = statistics.fmean(objective(reference(p), p) for p in chosen)
        got_obj = statistics.fmean(objective(candidate(p).to(reference.device), p) for p in chosen)
        rel = abs(got_obj - ref_obj) / max(abs(ref_obj), 1e-12)
    failures = []
    if mean_abs > MAX_MEAN_ABS_DIFF:
        failures.append(f"mean abs diff {mean_abs:.2e} > 1/255")
    if rel is not None and rel > MAX_OBJECTIVE_REL:
        failures.append(f"objective {100 * rel:.2f}% off > 1%")
    passed = not failures
    measured = f"mean abs diff {mean_abs:.2e}" + ("" if rel is None else f", objective {100 * rel:.2f}% off")
    reason = f"passed ({measured})" if passed else "failed: " + "; ".join(failures)
    return GateResult(candidate.name, mean_abs, rel, passed, reason)
