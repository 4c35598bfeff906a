"""The console commands (``train.py``, ``nst-train``, ...): a Hydra app per ``conf/<name>.yaml``.

A command's module (:mod:`nst_lightning.cli.train`, ...) is imported only when the command runs, so ``--help``
and configuration errors answer without importing torch or Lightning.
"""

from __future__ import annotations

from nst_lightning.cli.app import hydra_app

train = hydra_app(
    "train",
    "nst_lightning.cli.train:run",
    summary="train a style transfer network (python train.py style=starry_night)",
    metric="nst_lightning.cli.train:objective",
)
stylize = hydra_app(
    "stylize",
    "nst_lightning.cli.stylize:run",
    summary="stylize images with a trained network (ckpt=NAME_OR_PATH input=FILE_OR_FOLDER)",
)
optimize = hydra_app(
    "optimize",
    "nst_lightning.cli.optimize:run",
    summary="per-image optimisation baseline (content=PATH style=NAME output=PATH)",
)
evaluate = hydra_app(
    "evaluate",
    "nst_lightning.cli.evaluate:run",
    summary="score a network against per-image L-BFGS on its own objective (ckpt=NAME_OR_PATH)",
)
export = hydra_app(
    "export",
    "nst_lightning.cli.export:run",
    summary="export a model: ONNX, OpenVINO, torch.export, TorchScript, .pt, web, phone formats (ckpt=... format=...)",
)
serve = hydra_app(
    "serve",
    "nst_lightning.cli.serve:run",
    summary="serve the style networks over HTTP: REST API, result cache, web page",
)
