"""TensorBoard with its HPARAMS tab: each run's hyper-parameters against the metric a sweep optimises."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary


def flatten_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested hyper-parameters as ``{"a/b": value}`` with values TensorBoard shows (lists and None as text)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(list(value) if isinstance(value, Sequence) else value)
    return flat


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger whose hyper-parameters appear in the HPARAMS tab against ``hp_metrics``.

    Lightning logs the module's hyper-parameters once, when fitting starts, with no metric values: with
    ``default_hp_metric=False`` the stock logger then writes only ``hparams.yaml``. This one also writes the
    HPARAMS session, declaring ``hp_metrics`` (default ``val/objective``) as its metrics; TensorBoard reads their
    values from the run's scalars of the same name, so no placeholder value is ever logged.
    """

    def __init__(self, *args: Any, hp_metrics: Sequence[str] = ("val/objective",), **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)
        self.hp_metrics = list(hp_metrics)

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | None = None, step: int | None = None
    ) -> None:
        super().log_hyperparams(params, metrics, step)  # hparams.yaml (and the session, when metrics are given)
        if metrics is not None or not self.hp_metrics:
            return
        plain = vars(params) if isinstance(params, Namespace) else dict(params)
        flat = flatten_hparams(plain)
        for summary in hparams_summary(flat, dict.fromkeys(self.hp_metrics, 0.0)):
            self.experiment.file_writer.add_summary(summary, step)
