"""The check phase: every new model against L-BFGS@k on its own objective, its stripes and fp16 parity, the gates."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from .profiles import GATES, PRETRAINED, REPO, TARGETS
from .session import Session


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
    return rows
