"""Evaluate a trained network against per-image L-BFGS on the network's own objective.

For every image of an evaluation folder, at one size: the network's output and the L-BFGS baseline (from the
content image) after each of k iterations are scored with the checkpoint's loss (content, style, TV,
objective, all re-evaluated in fp32), SSIM to the content, checkerboard energy and border statistics; the
seconds per image are timed for each method. Johnson et al. (2016) report their network as about as good as
50–100 L-BFGS iterations on the same objective; ``lbfgs_iterations_matched`` is that comparison per image.

Shapes: images are 1×3×H×W fp32 in [0, 1].
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nst_lightning.baseline.optimize import PRECISIONS, ImageOptimization, OptimizeSettings
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.evaluation.metrics import border_artifacts, checkerboard_energy, checkerboard_ratio, ssim
from nst_lightning.image import list_images, load_image, tensor_to_pil
from nst_lightning.inference import LoadedModel
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """What to compare and how.

    Attributes:
        size: longest side of each evaluation image, pixels.
        lbfgs_iterations: the k at which the L-BFGS baseline is scored (one run per image, snapshots at each k).
        lbfgs_precision: precision of the L-BFGS run's VGG passes (default fp32: in bf16 on a GPU, L-BFGS
            stopped after one evaluation on one of the eval photos); the reported losses are always fp32.
        max_images: evaluate only the first N images of the folder (None: all).
        grid_cell: longest side of each picture in the PNG grid.
    """

    size: int = 512
    lbfgs_iterations: list[int] = field(default_factory=lambda: [50, 100, 300])
    lbfgs_precision: str = "fp32"
    max_images: int | None = None
    grid_cell: int = 256

    def __post_init__(self) -> None:
        if self.lbfgs_precision not in PRECISIONS:
            raise BadValue(f"lbfgs_precision must be one of {', '.join(PRECISIONS)}, got {self.lbfgs_precision!r}")
        for name in ("size", "grid_cell"):
            if getattr(self, name) < 1:
                raise BadValue(f"{name} must be a positive number of pixels, got {getattr(self, name)}")
        if self.max_images is not None and self.max_images < 1:
            raise BadValue(f"max_images must be at least 1 (or null: all), got {self.max_images}")
        if any(k < 1 for k in self.lbfgs_iterations):
            raise BadValue(f"lbfgs_iterations must be whole numbers ≥ 1, got {self.lbfgs_iterations}")


def eval_images(folder: str | Path, max_images: int | None = None) -> list[Path]:
    """Image files directly in ``folder`` (not its subfolders), sorted by name; the first ``max_images``.

    Raises:
        NSTError: the folder does not exist or holds no images.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NSTError(f"evaluation folder not found: {folder} (set eval_dir=FOLDER or NST_DATA_DIR)")
    files = list_images(folder, recursive=False)
    if not files:
        raise NSTError(f"no images in evaluation folder {folder}")
    return files[:max_images] if max_images else files


def loss_from_meta(meta: dict[str, Any]) -> PerceptualLoss:
    """The checkpoint's own loss configuration (without style targets)."""
    cfg = meta.get("loss")
    if not cfg:
        raise NSTError("this checkpoint does not record its loss configuration; re-export it with this version")
    return PerceptualLoss(LossConfig.from_dict(cfg, f"the checkpoint {meta.get('source', '')}".rstrip()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def score(loss: PerceptualLoss, output: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    """fp32 loss terms plus quality metrics of one 1×3×H×W output against its content."""
    terms = loss(output.float(), content.float())
    border = border_artifacts(output, content)
    return {
        **{k: float(v) for k, v in terms.items()},
        "ssim": float(ssim(output, content)[0]),
        "checkerboard_energy": float(checkerboard_energy(output)[0]),
        "checkerboard_ratio": float(checkerboard_ratio(output, content)[0]),
        "border_mean_gap_excess": float(border["mean_gap_excess"][0]),
        "border_contrast_log_ratio": float(border["contrast_log_ratio"][0]),
    }


def run_network(net: torch.nn.Module, content: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Stylize one image; returns (1×3×H×W output, seconds) timed after a warm-up pass."""
    device = content.device
    with torch.inference_mode():
        net(content)
        _sync(device)
        t = time.perf_counter()
        out = net(content).float().clamp(0, 1)
        _sync(device)
    return out.clone(), time.perf_counter() - t


def run_lbfgs(
    loss: PerceptualLoss, content: torch.Tensor, ks: list[int], precision: str
) -> tuple[dict[int, tuple[torch.Tensor, float, int]], list[float]]:
    """L-BFGS from the content image; snapshots ``{k: (image, seconds so far, evaluations done)}`` (fewer
    evaluations than k when L-BFGS stopped early) and the objective after every iteration (as the optimizer
    saw it, for :func:`iterations_to_match`)."""
    trajectory: list[float] = []
    opt: ImageOptimization | None = None

    def record(_: int) -> None:
        trajectory.append(float(opt.terms["objective"]))  # type: ignore[union-attr]

    opt = ImageOptimization(loss, content, content.clone(), OptimizeSettings(precision=precision),
                            on_evaluation=record)  # fmt: skip
    snapshots: dict[int, tuple[torch.Tensor, float, int]] = {}
    elapsed = 0.0
    for k in sorted(ks):
        _sync(content.device)
        t = time.perf_counter()
        opt.run(k - opt.evaluations)
        _sync(content.device)
        elapsed += time.perf_counter() - t
        snapshots[k] = (opt.result().clone(), elapsed, opt.evaluations)
    return snapshots, trajectory


def iterations_to_match(trajectory: list[float], objective: float) -> int | None:
    """First L-BFGS iteration (1-based) whose objective is at or below ``objective`` (None: never)."""
    return next((i + 1 for i, v in enumerate(trajectory) if v <= objective), None)


def make_grid(rows: list[list[torch.Tensor]], cell: int, gap: int = 4) -> Image.Image:
    """A white-backed PNG grid: one row per image, each picture fitted into a ``cell``×``cell`` box."""
    canvas = Image.new("RGB", (len(rows[0]) * (cell + gap) - gap, len(rows) * (cell + gap) - gap), "white")
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            pil = tensor_to_pil(img.detach().cpu())
            pil.thumbnail((cell, cell), Image.Resampling.LANCZOS)
            x = c * (cell + gap) + (cell - pil.width) // 2
            y = r * (cell + gap) + (cell - pil.height) // 2
            canvas.paste(pil, (x, y))
    return canvas


def _mean(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def summarize(per_image: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Means over images and the network-versus-L-BFGS comparison."""
    keys = [k for k in per_image[0]["network"] if k != "seconds"] + ["seconds"]
    methods = ["network", *[f"lbfgs@{k}" for k in ks]]
    means = {m: {key: _mean([img[m][key] for img in per_image]) for key in keys} for m in methods}
    net_obj = means["network"]["objective"]
    beaten = [k for k in ks if net_obj <= means[f"lbfgs@{k}"]["objective"]]
    matched = [img["lbfgs_iterations_matched"] for img in per_image]
    summary: dict[str, Any] = {
        "images": len(per_image),
        "mean": means,
        "network_beats_lbfgs_at": {str(k): k in beaten for k in ks},
        "images_where_network_beats_lbfgs_at": {
            str(k): sum(img["network"]["objective"] <= img[f"lbfgs@{k}"]["objective"] for img in per_image) for k in ks
        },
        "images_where_lbfgs_stopped_early": sum(
            img[f"lbfgs@{ks[-1]}"].get("evaluations", ks[-1]) < ks[-1] for img in per_image
        ),
        # The smallest listed k whose (mean) objective the network's is at or below.
        "smallest_k_beaten": min(beaten) if beaten else None,
        "largest_k_beaten": max(beaten) if beaten else None,
        "lbfgs_iterations_matched_median": statistics.median([m for m in matched if m is not None])
        if all(m is not None for m in matched)
        else None,  # fmt: skip
        "style_ratio_network_over_lbfgs": {
            str(k): means["network"]["style"] / max(means[f"lbfgs@{k}"]["style"], 1e-12) for k in ks
        },
        "content_ratio_network_over_lbfgs": {
            str(k): means["network"]["content"] / max(means[f"lbfgs@{k}"]["content"], 1e-12) for k in ks
        },
        "speedup_vs_lbfgs": {
            str(k): means[f"lbfgs@{k}"]["seconds"] / max(means["network"]["seconds"], 1e-9) for k in ks
        },
    }
    return summary


def evaluate(
    loaded: LoadedModel,
    loss: PerceptualLoss,
    images: list[Path],
    settings: EvalSettings,
    device: torch.device,
    out_dir: Path,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Run the comparison and write ``report.json``, ``grid.png`` (content | network | L-BFGS@k ...) and,
    when ``tensorboard``, the same figures as TensorBoard scalars and an image under ``out_dir/tensorboard``.

    ``loss`` must already hold the style targets; it is moved to ``device``.
    """
    ks = sorted({int(k) for k in settings.lbfgs_iterations})
    if not ks or ks[0] < 1:
        raise NSTError(f"lbfgs_iterations must be positive integers, got {settings.lbfgs_iterations}")
    loss = loss.to(device).eval().requires_grad_(False)
    net = loaded.net.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image, rows = [], []
    for path in images:
        content = load_image(path, settings.size).to(device)
        out, net_s = run_network(net, content)
        record: dict[str, Any] = {"image": path.name, "height": content.shape[-2], "width": content.shape[-1]}
        record["network"] = {**score(loss, out, content), "seconds": net_s}
        snapshots, trajectory = run_lbfgs(loss, content, ks, settings.lbfgs_precision)
        row = [content, out]
        for k, (img, secs, evals) in snapshots.items():
            record[f"lbfgs@{k}"] = {**score(loss, img, content), "seconds": secs, "evaluations": evals}
            row.append(img)
        record["lbfgs_iterations_matched"] = iterations_to_match(trajectory, record["network"]["objective"])
        per_image.append(record)
        rows.append(row)
        report = _report(loaded, device, settings, ks, per_image)
        # Written after every image, so that an interrupted run still leaves what it measured.
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        grid = make_grid(rows, settings.grid_cell)
        grid.save(out_dir / "grid.png")
        log.info(
            "%s: network objective %.4g in %.3f s; L-BFGS %s; matched at iteration %s",
            path.name, record["network"]["objective"], net_s,
            ", ".join(f"@{k} {record[f'lbfgs@{k}']['objective']:.4g} ({record[f'lbfgs@{k}']['seconds']:.1f} s)"
                      for k in ks),
            record["lbfgs_iterations_matched"],
        )  # fmt: skip
    if tensorboard:
        _write_tensorboard(out_dir / "tensorboard", report, grid)
    return report


def _report(
    loaded: LoadedModel, device: torch.device, settings: EvalSettings, ks: list[int], per_image: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "checkpoint": loaded.meta.get("source"),
        "model": loaded.model_name,
        "style": loaded.meta.get("style_name"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": settings.size,
        "lbfgs_iterations": ks,
        "lbfgs_precision": settings.lbfgs_precision,
        "columns": ["content", "network", *[f"lbfgs@{k}" for k in ks]],
        "summary": summarize(per_image, ks),
        "per_image": per_image,
    }


def _write_tensorboard(log_dir: Path, report: dict[str, Any], grid: Image.Image) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for method, values in report["summary"]["mean"].items():
        for key, value in values.items():
            writer.add_scalar(f"eval/{method}/{key}", value, 0)
    writer.add_image("eval/grid", np.asarray(grid), 0, dataformats="HWC")
    writer.close()
