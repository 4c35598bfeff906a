"""``python train.py style=starry_night``: ``run(cfg)`` builds data, module, logger, callbacks and trainer."""

from __future__ import annotations

import logging
import signal
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from nst_lightning.cli.config import plain
from nst_lightning.cli.multistyle import build_multistyle_module, is_multistyle
from nst_lightning.cli.presets import config_loss, style_image_path
from nst_lightning.cli.train_checks import check_train_config
from nst_lightning.training import checkpoint_io, fault
from nst_lightning.training.callbacks import BatchNormReestimation, ema_callbacks
from nst_lightning.training.deliver import export_and_preview
from nst_lightning.training.module import StyleTransferModule
from nst_lightning.training.precision import PrecisionChoice, resolve_precision, warn_if_emulated

log = logging.getLogger(__name__)
# The VGG loss network is in eval mode on purpose; Lightning warns about any module in eval mode.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
# Logging counts optimiser steps across epochs, so an epoch shorter than log_every_n_steps (a small folder) still
# logs every log_every_n_steps steps; Lightning's warning about it does not apply.
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # inside Lightning


# Keys of conf/model/_runtime.yaml that are not arguments of the network's builder.
RUNTIME_KEYS = ("channels_last", "compile", "compile_mode", "allocator")


def build_module(
    cfg: DictConfig, style_image: str | None, module_class: Any = StyleTransferModule
) -> StyleTransferModule:
    """The LightningModule from the primitive values of ``cfg``'s groups (``model``, ``style``, ``loss``,
    ``optim``, ``init_from`` / ``teacher`` / ``distill``, ``smooth``). ``init_from`` is not read here: the module
    loads it when a fresh fit starts (never when it resumes). ``module_class``: a subclass with its own arguments bound
    (the multi-style module)."""
    kwargs = plain(cfg.model)
    name = kwargs.pop("name")
    runtime = {k: kwargs.pop(k) for k in RUNTIME_KEYS}
    freeze = kwargs.pop("freeze")
    return module_class(
        model={"name": name, "kwargs": kwargs},
        style={"name": cfg.style.name, "image": style_image, "size": cfg.style.size, "cache_dir": cfg.paths.cache_dir},
        loss=config_loss(cfg).to_dict(),
        optim=plain(cfg.optim),
        runtime=runtime,
        transfer={"init_from": cfg.init_from, "freeze": freeze, "teacher": cfg.teacher, **plain(cfg.distill)},
        smooth=plain(cfg.smooth),
    )


def apply_auto_precision(cfg: DictConfig) -> PrecisionChoice:
    """Resolve ``trainer.precision=auto`` and ``model.channels_last=auto`` for this machine and write the choice
    into ``cfg`` (Lightning does not know ``auto``); call it before instantiating ``cfg.trainer``."""
    choice = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator, cfg.model.channels_last,
                               allocator=cfg.model.allocator)  # fmt: skip
    cfg.trainer.precision, cfg.model.channels_last = choice.precision, choice.channels_last
    cfg.model.allocator = choice.allocator
    return choice


def _instantiate_all(cfg: DictConfig, group: str) -> list:
    """Instantiate each entry of ``cfg[group]`` (none when the group was removed: ``~logger``)."""
    if group not in cfg or not cfg[group]:
        return []
    return [hydra.utils.instantiate(c) for c in cfg[group].values() if c is not None]


def run(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train (or resume, with ``cfg.ckpt_path``) and return final metrics and output paths.

    ``extra_callbacks`` are added to those of ``cfg.callbacks`` (for programmatic use and tests).
    """
    checkpoint_io.check_writable((out_dir := Path(cfg.paths.output_dir)) / checkpoint_io.CHECKPOINT_DIR)
    choice = apply_auto_precision(cfg)
    check_train_config(cfg)  # a value of the wrong type fails here, named, before anything is built
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info("precision %s, channels_last=%s, allocator=%s (%s)", choice.precision, choice.channels_last,
             choice.allocator, choice.reason)  # fmt: skip
    warn_if_emulated(choice)
    datamodule = hydra.utils.instantiate(cfg.data)
    if is_multistyle(cfg):  # the listed styles' paintings only (``style``'s own is read only to add it)
        module = build_multistyle_module(cfg, build_module)
    else:
        module = build_module(cfg, str(style_image_path(cfg.style)))
    loggers = _instantiate_all(cfg, "logger")
    callbacks = [*_instantiate_all(cfg, "callbacks"), *ema_callbacks(cfg.ema), BatchNormReestimation(),
                 *(extra_callbacks or [])]  # fmt: skip
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # Atomic checkpoint writes (and the SLURM environment): nst_lightning.training.checkpoint_io.trainer_plugins.
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=checkpoint_io.trainer_plugins()
    )
    # ckpt_path=FILE|RUN_FOLDER|last, or resume=auto (this run folder's last.ckpt if any).
    ckpt_path = fault.resolve_resume(cfg.ckpt_path, cfg.resume, out_dir)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=False)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        # Lightning stops after the step in which SIGTERM arrived (SignalCheckpoint saved last.ckpt); exit with
        # the conventional status 128 + SIGTERM, not 0, so schedulers and scripts see the run did not finish.
        log.warning("stopped by SIGTERM at step %d; resume with resume=auto or ckpt_path=last", trainer.global_step)
        raise SystemExit(128 + signal.SIGTERM) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and getattr(ckpt_cb, "dirpath", None):
        # The checkpoint callback saves after validations; make last.ckpt the state training stopped in
        # (unless the fault-tolerance callbacks already saved it at the last step: that one resumes exactly).
        last = Path(ckpt_cb.dirpath) / "last.ckpt"
        if not fault.saved_at_final_step(trainer):
            trainer.save_checkpoint(last)
        ckpt_cb.last_model_path = str(last)
    result = {
        "metrics": metrics,
        "sweep_metric": cfg.sweep_metric,
        "global_step": trainer.global_step,
        "output_dir": str(out_dir),
        "last_ckpt": getattr(ckpt_cb, "last_model_path", None) or None,
        "best_ckpt": getattr(ckpt_cb, "best_model_path", None) or None,
    }
    if cfg.export_at_end and trainer.is_global_zero and (result["best_ckpt"] or result["last_ckpt"]):
        photos = datamodule.val_set or datamodule.train_set
        result.update(export_and_preview(result["best_ckpt"] or result["last_ckpt"], out_dir, photos.files[0]))
    log.info("finished at step %d: %s", trainer.global_step, metrics)
    log.info("checkpoints: last=%s best=%s", result["last_ckpt"], result["best_ckpt"])
    return result


def objective(result: dict[str, Any]) -> float | None:
    """What ``--multirun`` sweepers minimise: the final value of ``sweep_metric`` (default ``val/objective``).

    A run that never validated (``data.val_count=0``) falls back to ``train/objective``, with a warning.
    """
    name, metrics = result["sweep_metric"], result["metrics"]
    if name in metrics:
        return metrics[name]
    fallback = metrics.get("train/objective")
    log.warning("sweep_metric %s was not logged (logged: %s); returning train/objective %s",
                name, ", ".join(sorted(metrics)) or "nothing", fallback)  # fmt: skip
    return fallback
