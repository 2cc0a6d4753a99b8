"""Which samples each step sees, as a pure function of (seed, iteration, rank).

Epoch ``e`` is one permutation of the data set drawn from ``seed + e``; iteration ``t`` takes
the ``t % iters_per_epoch``-th global batch of epoch ``t // iters_per_epoch`` and each rank its
contiguous share. No sampler state has to be saved: a run resumed at iteration ``t`` sees exactly
the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import Sampler


class IterationIndices:
    def __init__(self, size: int, total_batch: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if total_batch % world_size:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={total_batch} is not divisible by the "
                             f"{world_size} processes")
        if size < total_batch:
            raise ValueError(f"data set has {size} images, fewer than one batch of {total_batch}")
        self.size, self.total_batch, self.seed = size, total_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = total_batch // world_size
        self.iters_per_epoch = size // total_batch
        # No epoch yet: epochs before 0 are real ones (the MoCo queue prefill reads them).
        self._cache: Tuple[Optional[int], torch.Tensor] = (None, torch.empty(0))

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._cache = (epoch, torch.randperm(self.size, generator=g))
        return self._cache[1]

    def batch(self, iteration: int) -> torch.Tensor:
        """This rank's sample indices at ``iteration`` (a negative one: of an epoch before 0)."""
        epoch, step = divmod(iteration, self.iters_per_epoch)
        start = step * self.total_batch + self.rank * self.local_batch
        return self._perm(epoch)[start:start + self.local_batch]


class IterationSampler(Sampler):
    """Infinite stream of ``(index, iteration)`` pairs for a per-image DataLoader, starting at
    ``start_iter``; the iteration lets the data set seed each sample's augmentation."""

    def __init__(self, indices: IterationIndices, start_iter: int = 0):
        self.indices, self.start_iter = indices, start_iter

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        it = self.start_iter
        while True:
            for i in self.indices.batch(it).tolist():
                yield i, it
            it += 1
