#!/usr/bin/env python
"""Evaluate a trained network against L-BFGS: ``python evaluate.py ckpt=PATH`` (Hydra overrides)."""

from nst_lightning.cli.commands import evaluate as main

if __name__ == "__main__":
    main()
