#!/usr/bin/env python
"""Train a style transfer network: ``python train.py style=starry_night`` (Hydra overrides)."""

from nst_lightning.cli.commands import train as main

if __name__ == "__main__":
    main()
