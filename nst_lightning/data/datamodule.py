"""LightningDataModules: a folder of photos (default) and COCO train2014 (downloaded on first use)."""

from __future__ import annotations

import logging
import os
import random
import zipfile
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from nst_lightning.data.datasets import ImageFolderDataset, eval_transform, train_transform, training_images
from nst_lightning.data.manifest import download_folder
from nst_lightning.data.sample import data_dir_from_env
from nst_lightning.data.sampler import ResumableDataLoader, ResumableSampler
from nst_lightning.download import download
from nst_lightning.errors import BadValue, NSTError
from nst_lightning.image import list_images

log = logging.getLogger(__name__)


def resolve_num_workers(num_workers: int | str) -> int:
    """``data.num_workers``: a number as given, or ``auto``: half the CPU cores this process may use, at least
    1 and at most 8 (the training step needs the other half on a CPU; 8 feed a GPU at batch 16, 256 px)."""
    if str(num_workers).lower() != "auto":
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise BadValue(f"data.num_workers must be a number of processes ≥ 0 or auto, got {num_workers!r}")
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // 2))


VAL_SHARE = 5  # a small folder gives validation at most one photo in this many


def spare_val_count(val_count: int, num_files: int) -> int:
    """The validation photos a folder of ``num_files`` can spare: ``val_count``, but at most one in
    :data:`VAL_SHARE` and never the last training photo (at least one when ``val_count`` asks for any)."""
    if val_count <= 0 or num_files < 2:
        return 0
    return max(1, min(val_count, num_files // VAL_SHARE))


def split_train_val(files: list[Path], val_count: int) -> tuple[list[Path], list[Path]]:
    """Hold out ``val_count`` files spread evenly over the sorted list; the rest is for training."""
    if val_count <= 0:
        return files, []
    if val_count >= len(files):
        raise NSTError(f"data.val_count={val_count} leaves no training images (only {len(files)} found)")
    step = len(files) / val_count
    val_idx = {int(i * step) for i in range(val_count)}
    train = [f for i, f in enumerate(files) if i not in val_idx]
    val = [f for i, f in enumerate(files) if i in val_idx]
    return train, val


class FolderDataModule(L.LightningDataModule):
    """Random-resized crops of the photos under ``root``; a fixed held-out set for validation.

    Args:
        root: folder tree of jpg/png/webp images.
        image_size: side of the square training crops.
        batch_size: images per step (per device under DDP).
        num_workers: data loader worker processes, or ``auto`` (:func:`resolve_num_workers`).
        val_count: images held out of ``root`` for validation (0 disables validation).
        val_size: side of the centre-cropped validation images.
        min_scale: smallest crop area fraction for the random-resized crop.
        max_upscale: None: torchvision's RandomResizedCrop; a number: square crops never magnified more than
            this (1.0: never upscaled; see :class:`~nst_lightning.data.datasets.RandomSquareCrop`).
        pin_memory: pin host memory for faster copies to the GPU.
        shuffle: shuffle the training images each epoch (turn off only for reproducibility tests).
        augment: random-resized crops and flips; when false, training uses the deterministic centre crop.
        manifest_prefix: the manifest's files under this prefix (``train/``: the training photos) are what
            ``download`` fetches; None disables downloading.
        download: when ``root`` holds no images, download the manifest's files into it first: True, False, or
            ``"auto"`` (only when ``root`` is the data folder's own ``<NST_DATA_DIR>/<manifest_prefix>``, so a
            mistyped ``data.root`` is an error that creates nothing).
        seed: seed of the training order and of the random crops (None: a random one). The position in the
            order is saved in checkpoints, so a resumed run continues with the photos it would have seen.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int | str = "auto",
        val_count: int = 8,
        val_size: int = 256,
        min_scale: float = 0.25,
        pin_memory: bool = True,
        manifest_prefix: str | None = "train/",
        shuffle: bool = True,
        augment: bool = True,
        max_upscale: float | None = None,
        seed: int | None = 0,
        download: bool | str = "auto",
    ) -> None:
        super().__init__()
        self.download = download
        self.max_upscale = max_upscale
        self._random_seed = seed is None
        self.seed = random.randrange(2**31) if seed is None else seed
        self.shuffle = shuffle
        self.augment = augment
        self.manifest_prefix = manifest_prefix
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.val_count = val_count
        self.val_size = val_size
        self.min_scale = min_scale
        self.pin_memory = pin_memory
        self.train_set: ImageFolderDataset | None = None
        self.val_set: ImageFolderDataset | None = None

    def image_root(self) -> Path:
        """Folder that holds the images (subclasses may download it first)."""
        return Path(self.root).expanduser()

    def _may_download(self, root: Path) -> bool:
        if not self.manifest_prefix or self.download is False or str(self.download).lower() == "false":
            return False
        if str(self.download).lower() == "auto":
            default_root = Path(data_dir_from_env()) / self.manifest_prefix
            return root.resolve() == default_root.resolve()
        return True

    def prepare_data(self) -> None:
        root = self.image_root()
        if list_images(root, recursive=True):
            return
        if self._may_download(root):
            log.info("no images in %s: downloading the %s photos listed in the manifest", root, self.manifest_prefix)
            download_folder(self.manifest_prefix, root)
        elif not root.exists():
            raise NSTError(
                f"data.root {root} does not exist; point data.root at a folder of photos "
                "(or add data.download=true to download the training photos into it)"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = training_images(self.image_root())
        val_count = spare_val_count(self.val_count, len(files))
        if val_count != self.val_count and self.val_count > 0:
            log.info(
                "only %d photos in %s: %d held out for validation instead of data.val_count=%d",
                len(files), self.root, val_count, self.val_count,
            )  # fmt: skip
        train, val = split_train_val(files, val_count)
        transform = (
            train_transform(self.image_size, self.min_scale, max_upscale=self.max_upscale)
            if self.augment
            else eval_transform(self.image_size)
        )
        self.train_set = ImageFolderDataset(train, transform)
        self.val_set = ImageFolderDataset(val, eval_transform(self.val_size)) if val else None
        log.info("training on %d images from %s (%d held out for validation)", len(train), self.root, len(val))

    def _sampler(self, dataset: ImageFolderDataset, shuffle: bool, drop_last: bool) -> DistributedSampler | None:
        """Validation under DDP: each rank gets a disjoint shard (training uses ResumableSampler)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return DistributedSampler(
            dataset,
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=shuffle,
            drop_last=drop_last,
        )

    def _loader(self, dataset: ImageFolderDataset, shuffle: bool, drop_last: bool) -> DataLoader:
        sampler = self._sampler(dataset, shuffle, drop_last)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """A resumable loader (see :mod:`nst_lightning.data.sampler`); under DDP each rank gets a disjoint shard."""
        assert self.train_set is not None, "call setup() first"
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if self._random_seed and world > 1:
            self.seed = trainer.strategy.broadcast(self.seed, src=0)  # all ranks must shard one permutation
        sampler = ResumableSampler(len(self.train_set), self.seed, self.shuffle, num_replicas=world, rank=rank)
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=len(sampler) >= self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            consumed_batches=self._consumed_batches,
        )

    def _consumed_batches(self) -> int:
        """Training batches of the current epoch taken by the training loop (0 outside a fit)."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_loop.batch_idx + 1 if trainer is not None else 0

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, shuffle=False, drop_last=False)


COCO_URL = "http://images.cocodataset.org/zips/train2014.zip"
COCO_MD5 = "0da8c0bd3d6becc4dcb32757491aca88"


class CocoDataModule(FolderDataModule):
    """COCO train2014 (82,783 photos, the set Johnson et al. trained on), downloaded on first use.

    ``root`` is the folder the zip is downloaded to and extracted in (``root/train2014/*.jpg``). The
    download shows a progress bar, resumes after an interruption and is verified against its MD5.
    """

    def __init__(self, root: str, url: str = COCO_URL, md5: str | None = COCO_MD5, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.url = url
        self.md5 = md5

    def prepare_data(self) -> None:
        root = Path(self.root).expanduser()
        images = root / "train2014"
        if images.is_dir() and any(images.iterdir()):
            return
        archive = download(self.url, root / Path(self.url).name, checksum=self.md5, algorithm="md5")
        log.info("extracting %s", archive)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(root)
        except zipfile.BadZipFile as exc:
            raise NSTError(f"{archive} is not a valid zip file; delete it and run again") from exc

    def image_root(self) -> Path:
        return Path(self.root).expanduser() / "train2014"
