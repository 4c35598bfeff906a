"""Lightning callbacks: a fixed grid of stylized validation images in TensorBoard (and as PNG files); an
exponential moving average of the network's weights; batch-norm statistics re-estimated before a fresh run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchvision.utils import make_grid

from nst_lightning.errors import NSTError
from nst_lightning.image import save_image
from nst_lightning.transfer import reestimate_batchnorm


class StylizedGridCallback(L.Callback):
    """Every ``every_n_steps`` training steps, stylize a fixed set of images and log a 2-row grid.

    The top row holds the content images, the bottom row their stylized versions. The images are the first
    ``num_images`` of the validation set (or of the first training batch when there is no validation set),
    so the grids of one run are directly comparable. Each grid is also written to
    ``<log_dir>/grids/step_XXXXXX.png`` unless ``save_png`` is false. The state training ends in gets a grid
    too, unless the last periodic one already showed that step (each step's grid is logged once).
    """

    def __init__(self, every_n_steps: int = 200, num_images: int = 4, save_png: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.save_png = save_png
        self.images: torch.Tensor | None = None
        self.last_logged_step: int | None = None

    def _fixed_images(self, trainer: L.Trainer, fallback: torch.Tensor) -> torch.Tensor:
        if self.images is None:
            dm = trainer.datamodule
            val_set = getattr(dm, "val_set", None) if dm is not None else None
            if val_set is not None and len(val_set) > 0:
                n = min(self.num_images, len(val_set))
                self.images = torch.stack([val_set[i] for i in range(n)])
            else:
                self.images = fallback[: self.num_images].detach().float().cpu()
        return self.images

    @torch.no_grad()
    def log_grid(self, trainer: L.Trainer, module: L.LightningModule, fallback: torch.Tensor) -> torch.Tensor:
        """Stylize the fixed images and log the grid; returns the 3×H×W grid tensor."""
        content = self._fixed_images(trainer, fallback).to(module.device)
        was_training = module.training
        module.eval()
        stylized = module(content).float().clamp(0, 1)
        module.train(was_training)
        grid = make_grid(torch.cat([content.float(), stylized]), nrow=content.shape[0], padding=2)
        step = trainer.global_step
        self.last_logged_step = step
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("stylized", grid.cpu(), global_step=step)
        if self.save_png and trainer.is_global_zero:
            save_image(grid, self._log_dir(trainer) / "grids" / f"step_{step:06d}.png")
        return grid

    @staticmethod
    def _log_dir(trainer: L.Trainer) -> Path:
        # Not trainer.log_dir: under DDP that is a collective broadcast, and this runs on rank zero only.
        for logger in trainer.loggers:
            if getattr(logger, "log_dir", None):
                return Path(logger.log_dir)
        return Path(trainer.default_root_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if trainer.is_global_zero and self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self.log_grid(trainer, pl_module, batch)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.images is not None and self.last_logged_step != trainer.global_step:
            self.log_grid(trainer, pl_module, self.images)


class NetworkEMA(L.Callback):
    """Exponential moving average of the transformation network's weights (``pl_module.net`` only).

    Validation runs on the averaged weights, and every checkpoint's ``state_dict`` holds them, so the best
    checkpoint, ``export_model`` and inference all use the average; the raw training weights and the update
    count travel in this callback's state, so a resumed run continues exactly. The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after n updates (as TensorFlow's ExponentialMovingAverage), so short runs
    are not dominated by the random initial weights. (Lightning's ``EMAWeightAveraging`` averages the whole
    LightningModule, VGG included, and pairs parameters and buffers by position: with the style Grams that the
    module registers as buffers in ``setup`` it fails with a shape mismatch.)

    Args:
        decay: the EMA decay per update, in (0, 1) (e.g. 0.999: about the last 1,000 steps; the config's
            ``ema.decay``, whose null means no average and so no callback).
        start_step: first optimiser step that updates the average (earlier steps are ignored).
        every_n_steps: update every N optimiser steps.
    """

    def __init__(self, decay: float, start_step: int = 0, every_n_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise NSTError(f"ema.decay must be in (0, 1), got {decay}")
        self.decay, self.start_step, self.every_n_steps = decay, start_step, max(1, every_n_steps)
        self.updates = 0
        self.average: dict[str, torch.Tensor] | None = None
        self._raw: dict[str, torch.Tensor] | None = None  # training weights while the average is swapped in
        self._module: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step <= self.start_step or step % self.every_n_steps:
            return
        state = pl_module.net.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
        else:
            d = min(self.decay, (1 + self.updates) / (10 + self.updates))
            for k, v in state.items():
                avg = self.average[k]
                if avg.is_floating_point():
                    avg.lerp_(v.to(avg.dtype), 1 - d)
                else:
                    avg.copy_(v)
        self.updates += 1

    # -- validation sees the average ------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None and self._raw is None:
            self._raw = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
            pl_module.net.load_state_dict(self.average)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._raw is not None:
            pl_module.net.load_state_dict(self._raw)
            self._raw = None

    # -- checkpoints: state_dict = the average; this callback's state = raw weights + update count ----
    def state_dict(self) -> dict[str, Any]:
        if self._module is None or self.average is None:
            return {"updates": self.updates}
        raw = self._raw if self._raw is not None else self._module.net.state_dict()
        return {"updates": self.updates, "raw_net": {k: v.detach().clone() for k, v in raw.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict.get("updates", 0))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.average is not None:
            checkpoint["state_dict"].update({f"net.{k}": v.detach().clone() for k, v in self.average.items()})

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        mine = next((v for k, v in checkpoint.get("callbacks", {}).items() if k.startswith("NetworkEMA")), {})
        if "raw_net" in mine:  # the module was loaded with the average: keep it as such, train on the raw
            self.average = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
            pl_module.net.load_state_dict(mine["raw_net"])


class BatchNormReestimation(L.Callback):
    """Before the first step of a fresh run, re-estimate the ImageNet batch-norm statistics of a pretrained timm
    encoder trained in ``bn_mode=batch`` on the training photos (see :mod:`nst_lightning.transfer.batchnorm`).

    Nothing happens for other networks, on a resume (``ckpt_path``) or when the weights come from ``init_from``
    (their statistics already describe style-transfer activations).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        kwargs = pl_module.model_group.kwargs
        pretrained = kwargs.get("pretrained") or kwargs.get("weights_file")
        fresh = not (trainer.ckpt_path or pl_module.transfer_group.init_from)
        if kwargs.get("bn_mode") == "batch" and pretrained and fresh:
            reestimate_batchnorm(pl_module.net, iter(trainer.train_dataloader))


def ema_callbacks(cfg: Any) -> list[L.Callback]:
    """``[NetworkEMA]`` when the ``ema`` config section sets a decay, else ``[]``."""
    if cfg.decay is None:
        return []
    return [NetworkEMA(float(cfg.decay), int(cfg.start_step), int(cfg.every_n_steps))]
