"""Lightning callbacks: a fixed grid of stylized validation images in TensorBoard (and as PNG files)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid

from nst_lightning.image import save_image


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
