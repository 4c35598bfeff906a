"""LightningModule that trains an image transformation network against a frozen VGG-19 perceptual loss."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from nst_lightning.errors import NSTError
from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.models import create_model
from nst_lightning.styles import set_style_targets

LOSS_PREFIX = "loss_fn."


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
    ) -> None:
        super().__init__()
        loss_config = LossConfig.from_dict(loss, "the module's loss") if loss is not None else LossConfig()
        self.save_hyperparameters(ignore=["loss"])
        # The loss always complete, whatever the caller left out; saved again so that the hyper-parameters
        # Lightning logs (hparams_initial: TensorBoard's HPARAMS tab) hold it too.
        self.save_hyperparameters({**self.hparams, "loss": loss_config.to_dict()})
        self.net = create_model(model_name, **(model_kwargs or {}))
        self.loss_fn = PerceptualLoss(loss_config)

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

    # -- forward / steps -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W content images in [0, 1] → stylized B×3×H×W in [0, 1]."""
        return self.net(images)

    def _shared_step(self, batch: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        if self.hparams.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        terms = self.loss_fn(self.net(batch), batch)
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

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")["objective"]

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
        for key in [k for k in state if k.startswith(LOSS_PREFIX)]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key, value in self.loss_fn.state_dict(prefix=LOSS_PREFIX).items():
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
