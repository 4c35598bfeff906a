"""Every value of ``conf/train.yaml`` checked before anything is built: the top-level keys by their types here
(no defaults: the YAML is where they live), each ``_target_`` group against the signature it is called with,
and the network's arguments against its builder."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import hydra
from omegaconf import DictConfig

from nst_lightning.cli.config import plain
from nst_lightning.errors import BadValue
from nst_lightning.settings import check_call_args, from_mapping

INSTANTIATED = ("data", "trainer")
"""Groups that are one ``_target_`` call; ``logger`` and ``callbacks`` hold one per entry."""
MODEL_KEYS = ("name", "freeze", "channels_last", "compile", "compile_mode", "allocator", "checkpointing")


@dataclass(frozen=True)
class EMAKeys:
    decay: float | None
    start_step: int
    every_n_steps: int


@dataclass(frozen=True)
class DistillKeys:
    pixel_weight: float
    feature_weight: float
    feature_layers: list[str]
    objective_weight: float


@dataclass(frozen=True)
class SmoothKeys:
    weight: float
    batch_size: int
    size: int
    photo_noise: bool
    sky_weight: float
    sky_window: int


@dataclass(frozen=True)
class CheckpointKeys:
    every_minutes: float


@dataclass(frozen=True)
class GuardKeys:
    max_consecutive_nonfinite: int


@dataclass(frozen=True)
class SlurmKeys:
    requeue: bool


@dataclass(frozen=True)
class TrainKeys:
    """The top-level keys of ``conf/train.yaml`` that are no config group."""

    seed: int | None
    ckpt_path: str | None
    resume: Literal["auto"] | None
    sweep_metric: str
    ema: EMAKeys
    styles: list[str] | None
    add_style: bool
    refine_styles: list[str] | None
    style_balance: bool
    init_from: str | None
    export_at_end: bool
    teacher: str | None
    distill: DistillKeys
    smooth: SmoothKeys
    checkpoint: CheckpointKeys
    guard: GuardKeys
    slurm: SlurmKeys


def _check_target(node: Any, source: str) -> None:
    values = {k: v for k, v in plain(node).items() if not k.startswith("_")}
    target = hydra.utils.get_class(node._target_) if "_target_" in node else None
    if target is not None:
        check_call_args(target, values, source)


def check_train_config(cfg: DictConfig) -> None:
    """Raise :class:`BadValue` naming the first key of ``cfg`` whose value has the wrong type.

    The groups' own range checks (``optim``, ``style``, ``loss``, the network's) still run where they are built.
    """
    names = [f.name for f in fields(TrainKeys)]
    from_mapping(TrainKeys, {k: plain(cfg[k]) for k in names if k in cfg}, "train")
    for group in INSTANTIATED:
        if group in cfg and cfg[group] is not None:
            _check_target(cfg[group], group)
    for group in ("logger", "callbacks"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None:
                _check_target(node, f"{group}.{name}")
    _check_model(cfg.model)


def _check_model(model: DictConfig) -> None:
    import nst_lightning.models  # noqa: F401  (importing the package registers every network)
    from nst_lightning.models.registry import model_builder

    values = plain(model)
    if not isinstance(values.get("name"), str):
        raise BadValue(f"model.name must be a network name, got {values.get('name')!r}")
    for key in ("compile", "checkpointing"):
        if key in values and not isinstance(values[key], bool):
            raise BadValue(f"model.{key} must be true or false, got {values[key]!r}")
    check_call_args(model_builder(values["name"]), {k: v for k, v in values.items() if k not in MODEL_KEYS}, "model")
