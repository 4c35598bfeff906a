#!/usr/bin/env python
"""Stylize images: ``python stylize.py ckpt=PATH input=FILE_OR_FOLDER output=PATH``."""

from nst_lightning.cli.commands import stylize as main

if __name__ == "__main__":
    main()
