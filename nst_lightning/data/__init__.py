"""Datasets, data modules and downloads.

The Lightning data modules live in :mod:`nst_lightning.data.datamodule`; importing this package (for
downloads or manifests) does not import Lightning.
"""
