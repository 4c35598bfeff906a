#!/usr/bin/env python
"""Export a model: ``python export.py ckpt=PATH_OR_NAME format=torchscript|torch_export|onnx output=PATH``."""

from nst_lightning.cli.commands import export as main

if __name__ == "__main__":
    main()
