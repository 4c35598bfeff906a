"""Hydra entry points (``train.py``/``nst-train`` and ``stylize.py``/``nst-stylize``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from nst_lightning.config import config_dir
from nst_lightning.errors import NSTError

log = logging.getLogger("nst_lightning")


def _report_errors(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn user errors into a one-line message and exit status 2 instead of a traceback."""

    def wrapped(cfg: DictConfig) -> Any:
        try:
            return fn(cfg)
        except NSTError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _single_log_stream() -> None:
    """Lightning installs its own console handlers; Hydra already logs to the console and to the run's
    log file, so route Lightning's records through Hydra's handlers only (each line once, also in the file)."""
    import lightning  # noqa: F401  (its import installs the handlers we replace)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@_report_errors
def train_main(cfg: DictConfig) -> None:
    """Train a style transfer network: ``python train.py style=starry_night``."""
    from nst_lightning.train import train

    _single_log_stream()
    train(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="stylize")
@_report_errors
def stylize_main(cfg: DictConfig) -> None:
    """Stylize images: ``python stylize.py ckpt=PATH input=FILE_OR_FOLDER output=PATH``."""
    from nst_lightning.stylize import stylize

    stylize(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="optimize")
@_report_errors
def optimize_main(cfg: DictConfig) -> None:
    """Per-image optimisation baseline: ``python optimize.py content=PATH style=starry_night output=PATH``."""
    from nst_lightning.baseline.cli import optimize_from_config

    optimize_from_config(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
@_report_errors
def evaluate_main(cfg: DictConfig) -> None:
    """Evaluate a network against L-BFGS: ``python evaluate.py ckpt=PATH [size=512]``."""
    from nst_lightning.evaluation.cli import evaluate_from_config

    evaluate_from_config(cfg)


def serve_run(cfg: DictConfig) -> None:
    """Load the models once and serve until interrupted (``python serve.py``)."""
    from omegaconf import OmegaConf

    from nst_lightning.serve import ServeSettings, create_app
    from nst_lightning.serve.server import serve_forever

    values = OmegaConf.to_container(cfg, resolve=True)
    log_level = str(values.pop("log_level", "info"))
    settings = ServeSettings.from_mapping(values)
    app = create_app(settings)
    log.info("serving %s on http://%s:%d/", ", ".join(sorted(app.state.styles)), settings.host, settings.port)
    serve_forever(app, settings.host, settings.port, log_level)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="serve")
@_report_errors
def serve_main(cfg: DictConfig) -> None:
    """The REST service and web page: ``python serve.py [port=8000] [cache=redis cache.url=redis://...]``."""
    serve_run(cfg)
