#!/usr/bin/env python
"""Evaluate a trained network against L-BFGS: ``python evaluate.py ckpt=PATH`` (Hydra overrides)."""

from nst_lightning.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
