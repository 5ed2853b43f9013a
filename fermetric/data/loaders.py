"""Seeded batch iteration over an in-memory FERDataset.

No torch DataLoader and no per-item __getitem__: a batch is one index into the uint8 tensor,
one conversion to float and one batched augmentation. The order and the augmentation of epoch
`e` depend only on (seed, e), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from fermetric.data.dataset import FERDataset
from fermetric.utils.checks import check_int
from fermetric.utils.seeding import make_generator

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# A batch sampler yields lists of dataset indices for one epoch, given that epoch's Generator.
BatchSampler = Callable[[torch.Generator], Iterator[list[int]]]


class BatchLoader:
    """Iterate over (images, labels, indices) batches.

    Args:
        dataset: the split to iterate.
        batch_size: images per batch.
        shuffle: a new seeded permutation every epoch.
        augment: a batched augmentation (e.g. BatchAugment), applied to float images.
        seed: base seed; epoch `e` uses seed * 1_000_003 + e.
        drop_last: drop a last, smaller batch (training).
        batch_sampler: yields index lists instead of the shuffled ranges (e.g. m-per-class batches).
        rank, world_size: shard every epoch's batches across processes (DistributedDataParallel).
        targets: what to yield in place of the labels, one row per image (e.g. FER+ vote
            distributions (N, C) float32 for soft-target training); default `dataset.labels`.

    Yields:
        images (B, 1, 48, 48) float32 in [0, 1], labels (B,) int64 (or targets[idx]), indices (B,) int64.
    """

    def __init__(
        self,
        dataset: FERDataset,
        batch_size: int,
        shuffle: bool = False,
        augment: Optional[Augment] = None,
        seed: int = 0,
        drop_last: bool = False,
        batch_sampler: Optional[BatchSampler] = None,
        rank: int = 0,
        world_size: int = 1,
        targets: Optional[torch.Tensor] = None,
    ):
        batch_size = check_int("batch_size", batch_size, 1)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size; got rank {rank}, world_size {world_size}")
        if targets is not None and targets.shape[0] != len(dataset):
            raise ValueError(f"targets must have one row per image ({len(dataset)}); got shape {tuple(targets.shape)}")
        self.dataset = dataset
        self.targets = dataset.labels if targets is None else targets
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.batch_sampler = batch_sampler
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return make_generator(self.seed * 1_000_003 + self.epoch)

    def _index_batches(self, g: torch.Generator) -> list[torch.Tensor]:
        if self.batch_sampler is not None:
            batches = [torch.as_tensor(b, dtype=torch.long) for b in self.batch_sampler(g)]
        else:
            n = len(self.dataset)
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            batches = list(order.split(self.batch_size))
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches = batches[:-1]
        if self.world_size > 1:
            # every rank gets the same number of batches: drop the tail that does not divide
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[self.rank:usable:self.world_size]
        return batches

    def __len__(self) -> int:
        return len(self._index_batches(self._generator()))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        g = self._generator()
        for idx in self._index_batches(g):
            x = self.dataset.float_images(idx)
            if self.augment is not None:
                x = self.augment(x, g)
            yield x, self.targets[idx], idx
