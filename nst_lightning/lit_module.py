"""LightningModule that trains an image transformation network against a frozen VGG-19 perceptual loss."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from nst_lightning import transfer
from nst_lightning.errors import NSTError
from nst_lightning.fault import loss_is_finite
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.models import create_model
from nst_lightning.styles import set_style_targets

LOSS_PREFIX = "loss_fn."
TEACHER_PREFIX = "teacher."


class StyleTransferModule(L.LightningModule):
    """Feed-forward style transfer (Johnson et al. 2016) with primitive, checkpointed hyper-parameters.

    The transformation network is built by name from the model registry; the loss network (VGG-19) and the
    style's target Grams are rebuilt from their names and never stored in checkpoints.

    Args:
        model_name: registered network name (``johnson``, ``mobilenetv3``, ``resnet50``, ...).
        model_kwargs: primitive keyword arguments for the network builder.
        style_image: path of the style image.
        style_size: longest side the style image is resized to before computing its Grams (None: as is).
        style_name: a label for logs and exported models.
        loss: the objective as :meth:`LossConfig.to_dict` (every key required; None: the defaults of
            :class:`~nst_lightning.losses.config.LossConfig`).
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: Adam weight decay.
        warmup_steps: linear learning-rate warm-up steps.
        lr_schedule: ``constant``, ``cosine`` (to ``min_lr_ratio * lr`` at ``max_steps``) or ``cosine_time``
            (cosine over the training time budget ``trainer.max_time``, or ``max_steps`` if that runs out first).
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        cache_dir: where style Grams are cached (None: the default cache folder).
        channels_last: run the network and VGG in NHWC memory format.
        compile: ``torch.compile`` the network and VGG (in place: checkpoint keys are unchanged).
        compile_mode: the ``mode`` given to ``torch.compile`` (``default``, ``reduce-overhead``: CUDA graphs,
            ``max-autotune``, ...).
        init_from: start from the network weights of this checkpoint or shipped model (weights only; see
            :func:`nst_lightning.transfer.load_init_weights`). ``init_provenance`` records where they came from
            (filled in here; passed back by ``load_from_checkpoint``, which then does not read the source again).
        freeze: stages of the network to freeze (``encoder``, a list or comma-separated names; see
            :func:`nst_lightning.transfer.freeze`).
        teacher: a trained model to distill (checkpoint, export or shipped name); never saved in checkpoints.
        distill_pixel_weight, distill_feature_weight, distill_feature_layers: the distillation terms (see
            :func:`nst_lightning.transfer.distill_terms`); the training loss is the objective plus them.
    """

    def __init__(
        self,
        model_name: str = "johnson",
        model_kwargs: dict[str, Any] | None = None,
        style_image: str | None = None,
        style_size: int | None = 512,
        style_name: str = "style",
        loss: dict[str, Any] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] | list[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        min_lr_ratio: float = 0.1,
        cache_dir: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        init_from: str | None = None,
        init_provenance: dict[str, Any] | None = None,
        freeze: str | list[str] | None = None,
        teacher: str | None = None,
        distill_pixel_weight: float = 0.0,
        distill_feature_weight: float = 0.0,
        distill_feature_layers: list[str] | tuple[str, ...] = ("relu2_2",),
    ) -> None:
        super().__init__()
        loss_config = LossConfig.from_dict(loss, "the module's loss") if loss is not None else LossConfig()
        self.net = create_model(model_name, **(model_kwargs or {}))
        if init_from and init_provenance is None:  # load_from_checkpoint passes the recorded provenance back
            arch = transfer.describe_arch(model_name, model_kwargs)
            init_provenance = transfer.load_init_weights(self.net, init_from, arch=arch)
        self.save_hyperparameters(ignore=["loss"])
        # The loss always complete, whatever the caller left out; saved again so that the hyper-parameters
        # Lightning logs (hparams_initial: TensorBoard's HPARAMS tab) hold it too.
        self.save_hyperparameters({**self.hparams, "loss": loss_config.to_dict()})
        self.frozen_stages = transfer.freeze(self.net, freeze)
        self.teacher = transfer.Teacher(teacher) if teacher else None
        self.loss_fn = PerceptualLoss(loss_config)

    def train(self, mode: bool = True) -> StyleTransferModule:
        super().train(mode)
        transfer.keep_frozen_norms_in_eval(self.net, getattr(self, "frozen_stages", ()))
        return self

    # -- style targets -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if not self.loss_fn.target_grams and self.hparams.style_image:
            hp = self.hparams
            set_style_targets(self.loss_fn, [(hp.style_image, hp.style_size)], cache_dir=hp.cache_dir)
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
            self.loss_fn.vgg.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile(mode=self.hparams.compile_mode)
            self.loss_fn.vgg.compile(mode=self.hparams.compile_mode)
            self._compiled = True

    def on_train_start(self) -> None:
        # Pretrained timm encoders in bn_mode=batch: re-estimate their ImageNet batch-norm statistics on the
        # training photos before the first step (see nst_lightning/transfer/batchnorm.py).
        kw = self.hparams.model_kwargs or {}
        fresh = not (self.trainer.ckpt_path or self.hparams.init_from)
        if kw.get("bn_mode") == "batch" and (kw.get("pretrained") or kw.get("weights_file")) and fresh:
            transfer.reestimate_batchnorm(self.net, iter(self.trainer.train_dataloader))

    # -- forward / steps -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W content images in [0, 1] → stylized B×3×H×W in [0, 1]."""
        return self.net(images)

    def _shared_step(self, batch: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        if self.hparams.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = self.net(batch)
        terms = self.loss_fn(out, batch)
        if self.teacher is not None:
            terms.update(self._distill_terms(out, batch, with_teacher_objective=prefix == "val"))
        on_step = prefix == "train"
        for name, value in terms.items():
            self.log(
                f"{prefix}/{name}",
                value.detach(),
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=name == "objective",
                batch_size=batch.shape[0],
                sync_dist=not on_step,
            )
        if not on_step:  # unweighted terms: comparable across loss weights (sweep_metric=val/style_raw)
            for name in ("content", "style"):
                weight = getattr(self.loss_fn, f"{name}_weight")
                if weight > 0:
                    self.log(f"{prefix}/{name}_raw", terms[name].detach() / weight, on_epoch=True,
                             batch_size=batch.shape[0], sync_dist=True)  # fmt: skip
        return terms

    def _distill_terms(self, out: torch.Tensor, batch: torch.Tensor, with_teacher_objective: bool) -> dict:
        """Distillation terms, their sum with the objective (``loss``) and, in validation, the teacher's
        own objective on the same photos (``teacher_objective``)."""
        hp = self.hparams
        target = self.teacher(batch)
        terms = transfer.distill_terms(
            out, target, hp.distill_pixel_weight, hp.distill_feature_weight, self.loss_fn.vgg, hp.distill_feature_layers
        )
        if with_teacher_objective:
            with torch.no_grad():
                terms["teacher_objective"] = self.loss_fn(target, batch)["objective"]
        return terms

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        terms = self._shared_step(batch, "train")
        loss = terms["objective"] + terms.get("distill_pixel", 0.0) + terms.get("distill_feature", 0.0)
        # Divergence guard: a NaN/inf loss skips this update (None); nst_lightning.fault.DivergenceGuard counts it.
        return loss if loss_is_finite(self, loss) else None

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    # -- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None
        schedule = lr_lambda(hp.warmup_steps, hp.lr_schedule, total, hp.min_lr_ratio)
        if hp.lr_schedule == "cosine_time":
            schedule.progress = budget_progress(self.trainer)  # fails early without trainer.max_time
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if self.hparams.lr_schedule == "cosine_time":
            scheduler.lr_lambdas[0].progress = budget_progress(self.trainer)
        scheduler.step()

    # -- checkpoints: the loss network is rebuilt from its name, never saved ---------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith((LOSS_PREFIX, TEACHER_PREFIX))]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key, value in self.loss_fn.state_dict(prefix=LOSS_PREFIX).items():
            state.setdefault(key, value)
        if self.teacher is not None:
            for key, value in self.teacher.state_dict(prefix=TEACHER_PREFIX).items():
                state.setdefault(key, value)


class _Schedule:
    """Picklable multiplier for LambdaLR: linear warm-up, then constant or cosine decay. ``cosine_time`` decays
    over :attr:`progress` in [0, 1], which the module sets from the time budget before every step."""

    def __init__(self, warmup: int, kind: str, total: int | None, min_ratio: float) -> None:
        if kind not in ("constant", "cosine", "cosine_time"):
            raise NSTError(f"unknown optim.lr_schedule {kind!r}; use constant, cosine or cosine_time")
        self.warmup, self.kind, self.total, self.min_ratio = warmup, kind, total, min_ratio
        self.progress = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "cosine_time":
            progress = self.progress
        elif self.kind == "constant" or not self.total:
            return 1.0
        else:
            progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def budget_progress(trainer: L.Trainer) -> float:
    """Share of the training budget used, in [0, 1]: elapsed training time / ``max_time`` (Lightning's Timer,
    whose elapsed time survives a resume), or the step share if ``max_steps`` runs out first."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        raise NSTError("optim.lr_schedule=cosine_time needs a time budget: set trainer.max_time=DD:HH:MM:SS")
    elapsed = timer.time_elapsed("train")
    steps = trainer.global_step / trainer.max_steps if trainer.max_steps > 0 else 0.0
    return min(1.0, max(elapsed / max(elapsed + remaining, 1e-9), steps))


def lr_lambda(warmup: int, kind: str, total: int | None, min_ratio: float) -> _Schedule:
    """Learning-rate multiplier per optimiser step (see :class:`_Schedule`)."""
    return _Schedule(warmup, kind, total, min_ratio)
