#!/usr/bin/env python
"""The style transfer service and web page: ``python serve.py [host=127.0.0.1] [port=8000]``."""

from nst_lightning.cli.commands import serve as main

if __name__ == "__main__":
    main()
