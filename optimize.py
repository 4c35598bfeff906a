#!/usr/bin/env python
"""Gatys-style per-image optimisation: ``python optimize.py content=PATH style=starry_night output=PATH``."""

from nst_lightning.cli.optimize import main

if __name__ == "__main__":
    main()
