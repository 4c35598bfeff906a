"""The application layer: one module per command (train, stylize, optimize, evaluate, ...), each with
``run(cfg)`` (the logic, callable from code and tests) and ``main()`` (the Hydra entry point)."""
