"""LightningModule that trains an image transformation network against a frozen VGG-19 perceptual loss."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from nst_lightning.losses.config import LossConfig
from nst_lightning.losses.perceptual import PerceptualLoss
from nst_lightning.losses.styles import set_style_targets
from nst_lightning.models import create_model
from nst_lightning.models.conditional import num_styles, style_parameters
from nst_lightning.training.allocator import use_allocator
from nst_lightning.training.divergence import loss_is_finite
from nst_lightning.training.hparams import (
    ModelGroup,
    OptimGroup,
    RuntimeGroup,
    SmoothGroup,
    StyleGroup,
    TransferGroup,
)
from nst_lightning.training.precision import resolve_precision
from nst_lightning.training.schedule import LRSchedule, budget_progress
from nst_lightning.training.smooth import (
    inference_noise,
    oriented_excess,
    random_smooth_images,
    smoothest_windows,
    window_excess,
)
from nst_lightning.transfer import (
    Teacher,
    describe_arch,
    distill_terms,
    freeze,
    keep_frozen_norms_in_eval,
    load_start,
)

log = logging.getLogger(__name__)

LOSS_PREFIX = "loss_fn."
TEACHER_PREFIX = "teacher."


class StyleTransferModule(L.LightningModule):
    """Feed-forward style transfer (Johnson et al. 2016) with grouped, primitive, checkpointed hyper-parameters.

    The transformation network is built by name from the model registry; the loss network (VGG-19) and the
    style's target Grams are rebuilt from their names and never stored in checkpoints. Each argument is a dict
    of one group's values (keys left out take the defaults of its table in :mod:`nst_lightning.training.hparams`).

    Args:
        model: :class:`~nst_lightning.training.hparams.ModelGroup` (``name``, ``kwargs``).
        style: :class:`~nst_lightning.training.hparams.StyleGroup` (``name``, ``image``, ``size``, ``cache_dir``).
        loss: the objective as :meth:`LossConfig.to_dict` (every key required, weights included; None: the
            defaults of :class:`~nst_lightning.losses.config.LossConfig`).
        optim: :class:`~nst_lightning.training.hparams.OptimGroup` (Adam and the learning-rate schedule).
        runtime: :class:`~nst_lightning.training.hparams.RuntimeGroup` (channels-last, ``torch.compile``).
        transfer: :class:`~nst_lightning.training.hparams.TransferGroup` (init_from, freeze, teacher, distill).
        smooth: :class:`~nst_lightning.training.hparams.SmoothGroup` (the regulariser against stripes on smooth
            inputs; off by default).
    """

    def __init__(
        self,
        model: Mapping[str, Any] | None = None,
        style: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        optim: Mapping[str, Any] | None = None,
        runtime: Mapping[str, Any] | None = None,
        transfer: Mapping[str, Any] | None = None,
        smooth: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model_group = ModelGroup.from_dict(model, "model")
        self.style_group = StyleGroup.from_dict(style, "style")
        self.loss_config = LossConfig.from_dict(loss, "the module's loss") if loss is not None else LossConfig()
        self.optim_group = OptimGroup.from_dict(optim, "optim")
        self.runtime_group = RuntimeGroup.from_dict(runtime, "runtime")
        self.transfer_group = TransferGroup.from_dict(transfer, "transfer")
        self.smooth_group = SmoothGroup.from_dict(smooth, "smooth")
        LRSchedule(0, self.optim_group.lr_schedule, None, 0.0)  # an unknown schedule fails now, not at fit
        # Complete groups: what checkpoints hold and TensorBoard's HPARAMS tab shows, whatever was left out.
        self.save_hyperparameters(
            {
                "model": self.model_group.to_dict(),
                "style": self.style_group.to_dict(),
                "loss": self.loss_config.to_dict(),
                "optim": self.optim_group.to_dict(),
                "runtime": self.runtime_group.to_dict(),
                "transfer": self.transfer_group.to_dict(),
                "smooth": self.smooth_group.to_dict(),
            }
        )
        self.net = create_model(self.model_group.name, **self.model_group.kwargs)
        self.frozen_stages = freeze(self.net, self.transfer_group.freeze)
        self.teacher = Teacher(self.transfer_group.teacher) if self.transfer_group.teacher else None
        self.loss_fn = PerceptualLoss(self.loss_config)
        self.channels_last = False
        self._compiled = False

    def train(self, mode: bool = True) -> StyleTransferModule:
        super().train(mode)
        keep_frozen_norms_in_eval(self.net, getattr(self, "frozen_stages", ()))
        return self

    # -- weights a fresh run starts from ---------------------------------------------------------------
    def load_init_weights(self) -> None:
        """Copy the network weights of ``transfer.init_from`` into :attr:`net` and record their provenance in
        the hyper-parameters (``transfer.init_provenance``). Called for a fresh fit only (:meth:`on_fit_start`):
        a resumed run restores its own weights and never reads the source again."""
        group = self.transfer_group
        if not group.init_from:
            return
        arch = describe_arch(self.model_group.name, self.model_group.kwargs)
        provenance = load_start(self.net, group.init_from, self.style_group.name, arch=arch)
        self._set_provenance(provenance)

    def _set_provenance(self, provenance: dict[str, Any] | None) -> None:
        if provenance:
            log.info("starting from init_from=%s: %s, style %s, step %s (%s)", provenance["init_from"],
                     provenance["arch"], provenance.get("style_name"), provenance.get("global_step"),
                     provenance["path"])  # fmt: skip
        self.transfer_group = TransferGroup.from_dict({**self.transfer_group.to_dict(), "init_provenance": provenance},
                                                      "transfer")  # fmt: skip
        self.hparams["transfer"] = self.transfer_group.to_dict()

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path:
            log.info("resuming from %s (weights, optimizer, step and schedule)", self.trainer.ckpt_path)
            return
        if not self.transfer_group.init_from:
            log.info("starting from random weights (init_from=NAME_OR_PATH starts from a trained network)")
        self.load_init_weights()

    # -- style targets -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        style = self.style_group
        if not self.loss_fn.target_grams and style.image:
            set_style_targets(self.loss_fn, [(style.image, style.size)], cache_dir=style.cache_dir)
        rt = self.runtime_group
        if self._trainer is not None:  # ``auto`` follows the trainer's precision on the device it trains on
            device = self.trainer.strategy.root_device.type
            choice = resolve_precision(self.trainer.precision, device, rt.channels_last, allocator=rt.allocator)
            self.channels_last = choice.channels_last
            use_allocator(choice.allocator)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
            self.loss_fn.vgg.to(memory_format=torch.channels_last)
        if rt.compile and not self._compiled:
            self.net.compile(mode=rt.compile_mode)
            self.loss_fn.vgg.compile(mode=rt.compile_mode)
            self._compiled = True

    # -- forward / steps -----------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W content images in [0, 1] → stylized B×3×H×W in [0, 1]."""
        return self.net(images)

    def _shared_step(self, batch: torch.Tensor, prefix: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The logged loss terms of one batch, and the network's B×3×H×W output."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        on_step = prefix == "train"
        out = self.net(self._net_input(batch) if on_step else batch)
        # Pure distillation (objective_weight 0) skips the loss network in training steps: most of a step's cost.
        pure = self.teacher is not None and on_step and self.transfer_group.objective_weight == 0
        terms = {} if pure else self.loss_fn(out, batch)
        if self.teacher is not None:
            terms.update(self._distill_terms(out, batch, with_teacher_objective=prefix == "val"))
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
                weight = getattr(self.loss_config, f"{name}_weight")
                if weight > 0:
                    self.log(f"{prefix}/{name}_raw", terms[name].detach() / weight, on_epoch=True,
                             batch_size=batch.shape[0], sync_dist=True)  # fmt: skip
        return terms, out

    def _distill_terms(self, out: torch.Tensor, batch: torch.Tensor, with_teacher_objective: bool) -> dict:
        """Distillation terms, their sum with the objective (``loss``) and, in validation, the teacher's
        own objective on the same photos (``teacher_objective``)."""
        group = self.transfer_group
        assert self.teacher is not None
        target = self.teacher(batch)
        terms = distill_terms(
            out, target, group.pixel_weight, group.feature_weight, self.loss_fn.vgg, group.feature_layers
        )
        if with_teacher_objective:
            with torch.no_grad():
                terms["teacher_objective"] = self.loss_fn(target, batch)["objective"]
        return terms

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        terms, out = self._shared_step(batch, "train")
        loss = terms.get("distill_pixel", 0.0) + terms.get("distill_feature", 0.0)
        if self.teacher is None:
            loss = self._training_objective(terms)
        elif self.transfer_group.objective_weight:  # 0: pure distillation, no objective computed
            loss = loss + self.transfer_group.objective_weight * self._training_objective(terms)
        if self.smooth_group.weight > 0:
            loss = loss + self.smooth_group.weight * self._smooth_term(batch)
        if self.smooth_group.sky_weight > 0:
            loss = loss + self.smooth_group.sky_weight * self._sky_term(batch, out)
        # Divergence guard: a NaN/inf loss skips this update (None); training.divergence.DivergenceGuard counts it.
        return loss if loss_is_finite(self, loss) else None

    # -- the regulariser against stripes on smooth inputs (smooth.weight > 0) ---------------------------
    def _step_generator(self, salt: int) -> torch.Generator:
        """A CPU generator seeded by the step (and ``salt``): the same draws again after a resume."""
        return torch.Generator().manual_seed(1_000_003 * int(self.global_step) + salt)

    def _net_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A training batch as the network sees it: with ``smooth.photo_noise``, plus the inference's input noise."""
        if not self.smooth_group.photo_noise:
            return batch
        return inference_noise(batch, self._step_generator(1)).to(batch.dtype)

    def _smooth_term(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean oriented texture (RMS luma) of the network's answer to random smooth images with input noise."""
        group, gen = self.smooth_group, self._step_generator(2)
        images = inference_noise(random_smooth_images(group.batch_size, group.size, batch, gen), gen).to(batch.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        term = oriented_excess(self._stylize_smooth(images)).mean()
        self.log("train/smooth_stripes", term.detach(), on_step=True, batch_size=images.shape[0])
        return term

    def _sky_term(self, batch: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Oriented texture (RMS luma) of the network's answer ``out`` in the smoothest window of each training
        photo of ``batch`` (both B×3×H×W), weighted by how smooth that window is (0 where none is)."""
        window = min(self.smooth_group.sky_window, *batch.shape[-2:])
        corners, weights = smoothest_windows(batch.float(), window)
        term = window_excess(out, corners, weights, window)
        self.log("train/sky_stripes", term.detach(), on_step=True, batch_size=batch.shape[0])
        return term

    def _stylize_smooth(self, images: torch.Tensor) -> torch.Tensor:
        """The network on the regulariser's B×3×S×S smooth images (subclasses choose the styles)."""
        return self.net(images)

    def _training_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The perceptual objective that training minimises (subclasses may weight it differently)."""
        return terms["objective"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    # -- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optim_group
        optimizer = torch.optim.Adam(self._param_groups(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None
        schedule = LRSchedule(opt.warmup_steps, opt.lr_schedule, total, opt.min_lr_ratio)
        if opt.lr_schedule == "cosine_time":
            schedule.progress = budget_progress(self.trainer)  # fails early without trainer.max_time
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _param_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters: the per-style scales and shifts of a multi-style network in a group of
        their own at ``optim.style_lr`` (when set), everything else at ``optim.lr``."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        style_lr = self.optim_group.style_lr
        per_style = set()
        if style_lr is not None:
            per_style = {id(p) for s in range(num_styles(self.net)) for p in style_parameters(self.net, s)}
        shared = [p for p in params if id(p) not in per_style]
        styled = [p for p in params if id(p) in per_style]
        groups = [{"params": shared}] if shared else []
        return groups + ([{"params": styled, "lr": style_lr}] if styled else [])

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if self.optim_group.lr_schedule == "cosine_time":
            scheduler.lr_lambdas[0].progress = budget_progress(self.trainer)
        scheduler.step()

    # -- checkpoints: the loss network and the teacher are rebuilt from their names, never saved ---------
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
        # A resumed fine-tune keeps recording where its first weights came from.
        saved = checkpoint.get("hyper_parameters", {}).get("transfer") or {}
        if saved.get("init_provenance") and not self.transfer_group.init_provenance:
            self._set_provenance(saved["init_provenance"])
