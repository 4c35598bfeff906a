"""Style transfer networks shipped with the package (``stylize.py ckpt=<name>``)."""
