"""A resumable training order: a sampler and a data loader whose position goes into the checkpoint.

A run killed mid-epoch and resumed from its checkpoint sees the same photos in the same order, with the
same random crops, as a run that was never interrupted:

- :class:`ResumableSampler` draws epoch ``e``'s permutation from ``(seed, e)`` alone, shards it over DDP
  ranks (dropping the remainder, so no photo is seen twice in an epoch), and yields ``(index, sample_seed)``
  pairs: the dataset seeds the random crop of that photo with ``sample_seed``, a function of
  ``(seed, epoch, index)``, so crops do not depend on worker processes or on what ran before.
- :class:`ResumableDataLoader` is a ``DataLoader`` with ``state_dict``/``load_state_dict``; Lightning stores
  them in the checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores them before the first
  batch after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from nst_lightning.errors import NSTError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the random augmentation of photo ``index`` in ``epoch`` (a 63-bit integer)."""
    return random.Random(f"{seed}/{epoch}/{index}").getrandbits(63)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffled (or sequential) ``(index, sample_seed)`` pairs of one DDP shard, resumable mid-epoch.

    Args:
        length: number of items in the dataset.
        seed: seed of the permutations and of the per-photo augmentation seeds.
        shuffle: a new permutation each epoch; when false, ``0..length-1`` in order.
        num_replicas: DDP world size (1 without DDP).
        rank: this process's rank.
        drop_last: drop the tail that does not divide evenly over the ranks (true for training).
    """

    def __init__(
        self,
        length: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
    ) -> None:
        if length <= 0:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        self.length = length
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0  # items of this rank's shard already consumed in ``epoch`` (set by a resume)

    def __len__(self) -> int:
        if self.drop_last:
            return self.length // self.num_replicas
        return -(-self.length // self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch; a resumed position is kept if the epoch is unchanged."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.start = 0

    def shard(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in order."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        total = len(self) * self.num_replicas
        order = order[:total] if self.drop_last else (order + order[: total - self.length])
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.start = 0  # a later iteration of the same epoch (a new run of it) starts from the beginning
        for index in self.shard(epoch)[start:]:
            yield index, sample_seed(self.seed, epoch, index)

    def state_dict(self, consumed: int = 0) -> dict[str, int]:
        """The position after ``consumed`` items of the current epoch (a full epoch rolls over)."""
        epoch, position = self.epoch, consumed
        if position >= len(self):
            epoch, position = epoch + 1, 0
        return {
            "seed": self.seed,
            "epoch": epoch,
            "position": position,
            "length": self.length,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["length"] != self.length or state["num_replicas"] != self.num_replicas:
            raise NSTError(
                f"the checkpoint's data order was for {state['length']} images on {state['num_replicas']} "
                f"device(s), this run has {self.length} images on {self.num_replicas}: resume with the same data "
                "and devices, or start a new run with init_from/ckpt weights"
            )
        self.seed, self.epoch, self.start = state["seed"], state["epoch"], state["position"]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` that Lightning saves and restores with the checkpoint.

    Args:
        consumed_batches: returns how many batches of the current epoch the training loop has taken so far
            (batches prefetched by the loader or its workers but not yet trained on do not count).
        Other arguments: as ``DataLoader`` (``sampler`` must be a :class:`ResumableSampler`).
    """

    def __init__(self, *args: Any, consumed_batches: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        self.consumed_batches = consumed_batches

    def state_dict(self) -> dict[str, int]:
        assert isinstance(self.sampler, ResumableSampler) and self.batch_size is not None
        return self.sampler.state_dict(consumed=self.consumed_batches() * self.batch_size)

    def load_state_dict(self, state: dict[str, int]) -> None:
        assert isinstance(self.sampler, ResumableSampler)
        self.sampler.load_state_dict(state)
