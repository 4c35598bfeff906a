#!/usr/bin/env python
"""Gatys-style per-image optimisation: ``python optimize.py content=PATH style=starry_night output=PATH``."""

from nst_lightning.cli import optimize_main

if __name__ == "__main__":
    optimize_main()
