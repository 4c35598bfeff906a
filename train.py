#!/usr/bin/env python
"""Train a style transfer network: ``python train.py style=starry_night`` (Hydra overrides)."""

from nst_lightning.cli.train import main

if __name__ == "__main__":
    main()
