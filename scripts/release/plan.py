"""The plan phase: this machine's training throughput, the training jobs in waves, the estimated seconds."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from .manifest import shipped_and_passing
from .profiles import REPO, STARTUP_S, STYLES, Profile
from .session import Session


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
