"""The hyper-parameter groups of :class:`~nst_lightning.training.module.StyleTransferModule`: one table each.

The applications read these values from ``conf/`` (the YAML is their source; a test checks that the defaults
below agree with it). The defaults here serve the library called without Hydra. Each group travels as a dict of
primitives (checkpoint hyper-parameters, ``load_from_checkpoint``) and is rebuilt with :meth:`from_dict`, which
fills the defaults of the keys left out and refuses unknown keys. The loss group is
:class:`~nst_lightning.losses.config.LossConfig` (complete, with the style's weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nst_lightning.errors import BadValue
from nst_lightning.settings import from_mapping

G = TypeVar("G", bound="_Group")


class _Group:
    """``from_dict`` / ``to_dict`` for a frozen dataclass of primitive fields."""

    @classmethod
    def from_dict(cls: type[G], values: Mapping[str, Any] | None, group: str) -> G:
        """Rebuild from a mapping of (some of) the fields; missing ones take their defaults.

        Raises:
            NSTError: an unknown key (the message names the group and its keys).
        """
        return from_mapping(cls, values, group)

    def to_dict(self) -> dict[str, Any]:
        """Primitive values (tuples as lists): safe for ``save_hyperparameters`` and ``weights_only`` loading."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class ModelGroup(_Group):
    """The transformation network: a registered ``name`` and its builder's keyword arguments (``conf/model``)."""

    name: str = "johnson"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StyleGroup(_Group):
    """The style whose Gram matrices are the target (``conf/style``; its loss weights go to the loss group).

    Attributes:
        name: a label for logs and exported models.
        image: path of the style image (None: set the targets yourself, e.g. ``set_style_targets``).
        size: longest side the image is resized to before its Grams are computed (None: as is).
        cache_dir: where style Grams are cached (None: the default cache folder).
    """

    name: str = "style"
    image: str | None = None
    size: int | None = 512
    cache_dir: str | None = None


@dataclass(frozen=True)
class OptimGroup(_Group):
    """Adam and its learning-rate schedule (``conf/optim``; see :class:`~nst_lightning.training.schedule.LRSchedule`).

    Attributes:
        lr, betas, weight_decay: Adam's.
        warmup_steps: linear learning-rate warm-up steps.
        lr_schedule: ``constant``, ``cosine`` (to ``min_lr_ratio * lr`` at ``max_steps``) or ``cosine_time``
            (cosine over the training time budget ``trainer.max_time``, or ``max_steps`` if that runs out first).
        min_lr_ratio: final learning rate of the cosine schedules, relative to ``lr``.
        style_lr: learning rate of a multi-style network's per-style scales and shifts (None: ``lr``). Each
            style's rows see only that style's images and must move far from the start (a new style's scales
            and shifts are learned from those of another), so they train best well above the shared weights'
            rate; the schedule scales both alike.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    style_lr: float | None = 3e-2

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True)
class RuntimeGroup(_Group):
    """How the network and VGG run (``conf/model/_runtime.yaml``; ``freeze`` and ``checkpointing`` live there
    too, but belong to the transfer group and the network's builder).

    Attributes:
        channels_last: NHWC memory format for the network and VGG; ``auto`` follows the trainer's precision
            (with bf16, see :func:`~nst_lightning.training.precision.resolve_precision`).
        compile: ``torch.compile`` the network and VGG (in place: checkpoint keys are unchanged).
        compile_mode: the ``mode`` given to ``torch.compile`` (``default``, ``reduce-overhead``, ...).
        allocator: glibc malloc while training, ``auto`` (``reuse`` on a CPU), ``reuse`` or ``system``
            (:mod:`~nst_lightning.training.allocator`).
    """

    channels_last: bool | str = "auto"
    allocator: str = "auto"
    compile: bool = False
    compile_mode: str = "default"


@dataclass(frozen=True)
class TransferGroup(_Group):
    """Network transfer (``init_from``, ``teacher``, ``distill`` in ``conf/train.yaml``; ``model.freeze``).

    Attributes:
        init_from: start a fresh run from the network weights of this checkpoint, export or shipped model
            (weights only; read when training starts, never on a resume: see
            :meth:`~nst_lightning.training.module.StyleTransferModule.on_fit_start`).
        init_provenance: where those weights came from (filled in when they are loaded; kept in checkpoints).
        freeze: stages of the network to freeze (``encoder``, a list or comma-separated names).
        teacher: a trained model to distill (checkpoint, export or shipped name); never saved in checkpoints.
        pixel_weight, feature_weight, feature_layers: the distillation terms
            (:func:`~nst_lightning.transfer.distill.distill_terms`).
        objective_weight: weight of the perceptual objective in a distilling run's training loss; 0 trains on
            the distillation terms alone and skips the loss network in training steps (validation still
            reports the objective). Without a teacher the objective is the whole loss and this is not read.
    """

    init_from: str | None = None
    init_provenance: dict[str, Any] | None = None
    freeze: str | list[str] | None = None
    teacher: str | None = None
    pixel_weight: float = 0.0
    feature_weight: float = 0.0
    feature_layers: tuple[str, ...] = ("relu2_2",)
    objective_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_layers", tuple(str(n) for n in self.feature_layers))
        if self.objective_weight < 0:
            raise BadValue(f"distill.objective_weight must be >= 0, got {self.objective_weight}")
        if self.teacher and not (self.objective_weight or self.pixel_weight or self.feature_weight):
            raise BadValue("distillation with every weight 0 trains nothing: set distill.pixel_weight, "
                             "distill.feature_weight or distill.objective_weight")  # fmt: skip


@dataclass(frozen=True)
class SmoothGroup(_Group):
    """The regulariser against stripes and hatching on smooth inputs (``smooth`` in ``conf/train.yaml``).

    A transformation network tends to paint oriented texture (bands, cross-hatching) where a photo is smooth,
    such as a sky; this term stylizes random smooth images each training step, with the input noise inference
    adds by default, and penalises their oriented texture (:mod:`nst_lightning.training.smooth`). It is not
    part of the objective: evaluation and validation objectives are unchanged.

    Attributes:
        weight: weight of the term (RMS luma of oriented texture) in the training loss; 0 = off.
        batch_size: random smooth images per step.
        size: their side in pixels.
        photo_noise: also add the inference's default input noise (a fresh seed each step) to the training photos,
            so the network trains on what it sees at inference; the content loss still compares with the clean photo.
        sky_weight: weight of the same penalty on the network's answer to the training photos themselves, in the
            smoothest ``sky_window``-px square of each crop, weighted by how smooth that square is (real skies,
            which the synthetic images do not cover); 0 = off. Costs no extra network pass.
        sky_window: that square's side in pixels (at most the crop's).
    """

    weight: float = 0.0
    batch_size: int = 2
    size: int = 128
    photo_noise: bool = False
    sky_weight: float = 0.0
    sky_window: int = 64

    def __post_init__(self) -> None:
        if not (self.weight >= 0):  # also refuses NaN
            raise BadValue(f"smooth.weight must be >= 0 (0 = off), got {self.weight}")
        if self.batch_size < 1:
            raise BadValue(f"smooth.batch_size must be >= 1, got {self.batch_size}")
        if self.size < 32:
            raise BadValue(f"smooth.size must be at least 32 pixels, got {self.size}")
        if not (self.sky_weight >= 0):
            raise BadValue(f"smooth.sky_weight must be >= 0 (0 = off), got {self.sky_weight}")
        if self.sky_window < 32:
            raise BadValue(f"smooth.sky_window must be at least 32 pixels, got {self.sky_window}")
