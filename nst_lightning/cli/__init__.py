"""The application layer: one module per command (train, stylize, optimize, evaluate, ...), each with
``run(cfg)`` (the logic, callable from code and tests); :mod:`nst_lightning.cli.commands` holds the Hydra entry
points, which import a command's module only when it runs."""
