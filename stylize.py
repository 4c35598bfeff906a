#!/usr/bin/env python
"""Stylize images: ``python stylize.py ckpt=PATH input=FILE_OR_FOLDER output=PATH``."""

from nst_lightning.cli import stylize_main

if __name__ == "__main__":
    stylize_main()
