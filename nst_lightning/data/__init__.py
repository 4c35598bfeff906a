"""Datasets, data modules and downloads."""

from nst_lightning.data.datamodule import CocoDataModule, FolderDataModule

__all__ = ["CocoDataModule", "FolderDataModule"]
