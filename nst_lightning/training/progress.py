"""Training progress counted in optimiser steps, on a terminal and in a log.

Runs here are bounded by ``trainer.max_steps`` or ``trainer.max_time``, not by epochs, so progress is the step
out of ``max_steps`` with an ETA from whichever bound comes first. On a terminal it is a bar; without one
(nohup, CI, output redirected to a file) it is one log line every ``every_seconds``, so a log shows a run is
alive and how far it has got.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, Timer
from tqdm import tqdm

log = logging.getLogger(__name__)
_SHOWN = ("objective", "content", "style", "distill_pixel", "distill_feature")  # train/* terms shown, in order


def format_duration(seconds: float) -> str:
    """``3h04m``, ``12m05s`` or ``42s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def eta_seconds(trainer: L.Trainer, steps_per_second: float) -> tuple[float | None, str]:
    """Seconds left until the first of ``max_steps`` and ``max_time`` ends the run, and which one it is."""
    candidates: list[tuple[float, str]] = []
    if trainer.max_steps and trainer.max_steps > 0 and steps_per_second > 0:
        candidates.append(((trainer.max_steps - trainer.global_step) / steps_per_second, "max_steps"))
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            remaining = callback.time_remaining()
            if remaining is not None:
                candidates.append((remaining, "max_time"))
    if not candidates:
        return None, ""
    return min(candidates)


class StepProgress(ProgressBar):
    """The step, images/s, the loss terms and the ETA: a bar on a terminal, else a log line every N seconds.

    Args:
        every_seconds: seconds between log lines when the output is not a terminal.
        terminal: draw a bar (True) or write log lines (False); None: a bar only when stderr is a terminal.
    """

    def __init__(self, every_seconds: float = 30.0, terminal: bool | None = None) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self.terminal = terminal
        self._enabled = True
        self._bar: tqdm | None = None
        self._start = self._last_line = 0.0
        self._start_step = 0
        self._images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        (self._bar.write if self._bar is not None else print)(" ".join(map(str, args)), **kwargs)

    def _on_terminal(self) -> bool:
        return sys.stderr.isatty() if self.terminal is None else self.terminal

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._start_step, self._images = trainer.global_step, 0
        if not self._enabled:
            return
        if self._on_terminal():
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            self._bar = tqdm(total=total, initial=trainer.global_step, desc="train", unit="step", dynamic_ncols=True)
        else:
            log.info("training from step %d%s", trainer.global_step, self._bound_text(trainer))

    @staticmethod
    def _bound_text(trainer: L.Trainer) -> str:
        bounds = [f"max_steps={trainer.max_steps}"] if trainer.max_steps and trainer.max_steps > 0 else []
        for cb in trainer.callbacks:
            if isinstance(cb, Timer) and cb.time_remaining() is not None:
                bounds.append(f"max_time={format_duration(cb.time_remaining() + cb.time_elapsed())}")
        return f" until {' or '.join(bounds)}" if bounds else ""

    def status(self, trainer: L.Trainer) -> dict[str, Any]:
        """The figures shown: step, images/s, the train/* terms, elapsed seconds and the ETA."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        steps = trainer.global_step - self._start_step
        metrics = trainer.callback_metrics
        terms = {name: float(metrics[f"train/{name}"]) for name in _SHOWN if f"train/{name}" in metrics}
        eta, bound = eta_seconds(trainer, steps / elapsed)
        return {"step": trainer.global_step, "images_per_s": self._images / elapsed, "terms": terms,
                "elapsed": elapsed, "eta": eta, "bound": bound}  # fmt: skip

    def line(self, trainer: L.Trainer) -> str:
        """One progress line: ``step 120/400 | 3.1 img/s | objective 12.3 ... | 4m10s elapsed, ETA 9m02s``."""
        s = self.status(trainer)
        step = f"step {s['step']}" + (f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else "")
        terms = " ".join(f"{k} {v:.4g}" for k, v in s["terms"].items())
        eta = "" if s["eta"] is None else f", ETA {format_duration(s['eta'])} ({s['bound']})"
        return f"{step} | {s['images_per_s']:.2f} img/s | {terms} | {format_duration(s['elapsed'])} elapsed{eta}"

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch) if hasattr(batch, "__len__") else 0
        if not self._enabled:
            return
        if self._bar is not None:
            s = self.status(trainer)
            self._bar.n = trainer.global_step
            self._bar.set_postfix({**{k: f"{v:.4g}" for k, v in s["terms"].items()},
                                   "img/s": f"{s['images_per_s']:.2f}"}, refresh=True)  # fmt: skip
            return
        now = time.monotonic()
        if now - self._last_line >= self.every_seconds or trainer.global_step - self._start_step == 1:
            self._last_line = now
            log.info("%s", self.line(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/objective")
        if self._enabled and value is not None and not trainer.sanity_checking:
            message = f"step {trainer.global_step}: val/objective {float(value):.4g}"
            self._bar.write(message) if self._bar is not None else log.info("%s", message)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._enabled:
            s = self.status(trainer)
            rate = s["images_per_s"]
            log.info("trained %d steps in %s (%s img/s)", trainer.global_step - self._start_step,
                     format_duration(s["elapsed"]), "n/a" if math.isnan(rate) else f"{rate:.2f}")  # fmt: skip
