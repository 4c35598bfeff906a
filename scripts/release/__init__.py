"""The phases of a GPU release (``scripts/gpu_release.py`` runs them in order), one module each.

``profiles`` (how big everything is, the gates), ``session`` (deadline, records, subprocesses), ``manifest``
(what ships), ``plan`` (throughput, the training waves), ``pick`` (the recipe ablation and its rule), ``train``,
``check`` (figures against L-BFGS and the gates), ``measure`` (throughput, transfer and multi-style benchmarks),
``ship`` (the files that come back), ``prepare`` (the carried bundle).
"""
