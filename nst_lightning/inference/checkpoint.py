"""Find, read and rebuild a trained network: a checkpoint path, an exported model file or a shipped model's name.

A checkpoint is self-describing: either a Lightning checkpoint (``hyper_parameters`` + ``state_dict``) or an
exported model file (``{"format": "nst_lightning.model", "model_name", "model_kwargs", "state_dict", "meta"}``).
Both load with ``torch.load(..., weights_only=True)``; nothing here imports Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nst_lightning.errors import BadValue, NSTError
from nst_lightning.models import create_model

EXPORT_FORMAT = "nst_lightning.model"
NET_PREFIX = "net."
PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"
# Distilled students of shipped models, named like their teacher: the service's fast variant (quality=fast).
PRETRAINED_FAST_DIR = PRETRAINED_DIR / "fast"
# Checkpoint hyper-parameters that say where a network's weights came from (kept in exports; docs/transfer.md).
TRANSFER_HPARAMS = ("init_provenance", "freeze", "teacher", "pixel_weight", "feature_weight", "objective_weight")


def style_names_of_meta(meta: dict[str, Any]) -> list[str]:
    """The styles a checkpoint holds, in order: a multi-style network's list, else its one style's name."""
    styles = meta.get("styles") or []
    return [str(s["name"]) for s in styles] or [str(meta.get("style_name") or "style")]


# Builder arguments that do not belong to a rebuilt network: the trained weights replace any pretrained encoder
# weights, and older checkpoints recorded ``freeze_encoder``, an option the networks no longer take.
_NOT_REBUILT = ("pretrained", "weights_file", "freeze_encoder")


def pretrained_models() -> dict[str, Path]:
    """Models shipped with the package: ``{name: path}`` (``stylize.py ckpt=<name>``)."""
    return {p.stem: p for p in sorted(PRETRAINED_DIR.glob("*.pt"))}


def pretrained_students() -> dict[str, Path]:
    """Distilled students shipped with the package: ``{teacher's name: path}`` (the service's fast variant;
    ``stylize.py ckpt=<path>`` runs one like any model)."""
    return {p.stem: p for p in sorted(PRETRAINED_FAST_DIR.glob("*.pt"))}


def resolve_checkpoint(ckpt: str | Path) -> Path:
    """A path as given if it exists, else the shipped model of that name, else a clear error."""
    path = Path(ckpt).expanduser()
    if path.exists():
        return path
    shipped = pretrained_models()
    if str(ckpt) in shipped:
        return shipped[str(ckpt)]
    names = ", ".join(shipped) or "none"
    raise NSTError(f"checkpoint not found: {path} (and no shipped model of that name; shipped: {names})")


def resolve_device(name: str | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; asking for CUDA without a GPU is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BadValue(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NSTError("device=cuda was asked for but no CUDA GPU is available; use device=cpu")
    return device


@dataclass
class LoadedModel:
    """A transformation network in eval mode plus what the checkpoint says about it."""

    net: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise NSTError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NSTError(unreadable_checkpoint(path, exc)) from exc


def unreadable_checkpoint(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in the user's terms (not torch's loading advice)."""
    if "Unsupported global" in str(exc):
        return (
            f"{path} holds Python objects besides tensors and plain values, which are not loaded for safety; "
            "nst_lightning reads its own training checkpoints (.ckpt) and exported models (.pt)"
        )
    return (
        f"{path} is not a checkpoint (not a file saved by torch.save: {type(exc).__name__}); "
        "give a training checkpoint (.ckpt), an exported model (.pt) or a shipped model's name"
    )


def _from_lightning(raw: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(model name, builder kwargs, network state dict, meta) of a Lightning checkpoint."""
    hp = raw["hyper_parameters"]  # the module's groups (nst_lightning.training.hparams)
    state = {k[len(NET_PREFIX) :]: v for k, v in raw["state_dict"].items() if k.startswith(NET_PREFIX)}
    meta = {
        "style_name": hp["style"]["name"],
        "style_image": hp["style"]["image"],
        "style_size": hp["style"]["size"],
        "global_step": raw.get("global_step"),
        # The objective the network was trained on (kept in exports, so that a shipped model can still be
        # evaluated on its own loss).
        "loss": hp["loss"],
        "transfer": {k: v for k, v in hp["transfer"].items() if k in TRANSFER_HPARAMS and v},  # weights' origin
        "styles": hp.get("styles"),  # a multi-style network's styles and their loss settings, in order
    }
    return hp["model"]["name"], dict(hp["model"]["kwargs"]), state, meta


def load_model(ckpt: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network stored in ``ckpt`` (Lightning checkpoint, exported model, or the name of a shipped
    model such as ``starry_night``) on ``device``, in eval mode without gradients.

    Raises:
        NSTError: the file is missing, unreadable or not an nst_lightning checkpoint.
    """
    path = resolve_checkpoint(ckpt)
    raw = _read(path)
    if raw.get("format") == EXPORT_FORMAT:
        name, kwargs, state, meta = raw["model_name"], raw["model_kwargs"], raw["state_dict"], raw.get("meta", {})
    elif "hyper_parameters" in raw and "state_dict" in raw:
        name, kwargs, state, meta = _from_lightning(raw)
    else:
        raise NSTError(f"{path} is not an nst_lightning checkpoint (no model name or state dict in it)")
    kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_REBUILT}
    net = create_model(name, **kwargs)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    net.eval().requires_grad_(False).to(device)
    net.style_names = style_names_of_meta(meta)  # what stylize(style=NAME) chooses from
    meta = {**meta, "source": str(path)}
    return LoadedModel(net=net, model_name=name, model_kwargs=kwargs, meta=meta)


def export_model(ckpt: str | Path, out: str | Path, half: bool = False) -> Path:
    """Write a slim self-describing model file (network weights only; fp16 when ``half``)."""
    return write_model(load_model(ckpt), out, half)


def write_model(loaded: LoadedModel, out: str | Path, half: bool = False) -> Path:
    """Write ``loaded`` (a network in memory, e.g. with a newly learned style) as a slim model file that
    :func:`load_model` reads back (fp16 weights when ``half``)."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in loaded.net.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": EXPORT_FORMAT,
            "model_name": loaded.model_name,
            "model_kwargs": loaded.model_kwargs,
            "state_dict": state,
            "meta": {k: v for k, v in loaded.meta.items() if k != "source"},
        },
        out,
    )
    return out
