#!/usr/bin/env python
"""Gatys-style per-image optimisation: ``python optimize.py content=PATH style=starry_night output=PATH``."""

from nst_lightning.cli.commands import optimize as main

if __name__ == "__main__":
    main()
