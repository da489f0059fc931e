"""A DDP-aware sampler over clips: each rank gets whole clips, the same number on every rank."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def distributed_context(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(num_replicas, rank): the given values, else torch.distributed's when initialised, else (1, 0)."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return int(num_replicas), int(rank)


class ClipSampler(Sampler):
    """Indices of clips for one rank.

    The epoch's order is a permutation drawn from ``seed + epoch`` (or 0..n-1 without shuffle), the same
    on every rank; rank r takes positions r, r + R, r + 2R, ... With ``drop_last`` the order is cut to a
    multiple of R (ranks disjoint, a few clips skipped per epoch); without it, it is padded by repeating
    its head (every clip seen, up to R-1 repeated). Lightning must keep it: pass it as ``sampler=`` and set
    ``Trainer(use_distributed_sampler=False)``; Lightning calls ``set_epoch`` each epoch.
    ``with_epoch=True`` yields ``(index, epoch)`` keys, so that the dataset's random augmentation can
    depend on the epoch even inside DataLoader workers (``ClipDataset`` accepts both key forms).
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None, drop_last: bool = False, with_epoch: bool = False) -> None:
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas, self.rank = distributed_context(num_replicas, rank)
        self.drop_last = bool(drop_last)
        self.with_epoch = bool(with_epoch)
        self.epoch = 0
        self._skip: tuple[int, int] | None = None
        n = len(dataset)
        if self.drop_last:
            self.num_samples = n // self.num_replicas
            if self.num_samples == 0:
                raise ValueError(f"ClipSampler: {n} clips cannot give every one of {self.num_replicas} ranks "
                                 f"a clip with drop_last=True")
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_clips(self, epoch: int, clips: int) -> None:
        """Leave out this rank's first ``clips`` clips of ``epoch``, once: a run resumed inside an epoch
        (``detector.preemption``) goes on with the clips an uninterrupted run would see next. ``len``
        stays the whole epoch's, as the trainer counts the batches already done."""
        self._skip = (int(epoch), int(clips))

    def order(self) -> list[int]:
        """The epoch's full order over all ranks (after padding or dropping)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.total_size <= n:
            return order[:self.total_size]
        pad = self.total_size - n
        return order + (order * math.ceil(pad / n))[:pad]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        mine = self.order()[self.rank:self.total_size:self.num_replicas]
        if self._skip is not None and self._skip[0] == self.epoch:
            mine = mine[self._skip[1]:]
            self._skip = None
        return iter([(i, self.epoch) for i in mine] if self.with_epoch else mine)

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["ClipSampler", "distributed_context"]
