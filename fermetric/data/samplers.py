"""Batch samplers for BatchLoader.

`MPerClassBatches` wraps pytorch-metric-learning's MPerClassSampler so every batch holds
`m` images of each class (the rare Disgust included) and every epoch's batches are seeded:
pml draws from the module-level `c_f.NUMPY_RANDOM`, which is swapped for a RandomState seeded
from the epoch's generator while the epoch's indices are drawn.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as c_f

from fermetric.errors import ConfigError


class MPerClassBatches:
    """Callable batch sampler: `sampler(generator)` yields index lists of `m * num_classes` images.

    Args:
        labels: (N,) class ids of the training split.
        m: images per class in each batch.
        num_batches: batches per epoch (default: about one pass over the data).
    """

    def __init__(self, labels: torch.Tensor, m: int, num_batches: int | None = None):
        labels_np = np.asarray(labels, dtype=np.int64)
        classes = np.unique(labels_np)
        if m < 2:
            raise ConfigError(f"metric.m_per_class must be at least 2 (positives are needed); got {m}")
        self.m = int(m)
        self.num_classes = len(classes)
        self.batch_size = self.m * self.num_classes
        self.num_batches = num_batches or max(1, len(labels_np) // self.batch_size)
        self.labels = labels_np

    def __call__(self, g: torch.Generator) -> Iterator[list[int]]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        sampler = MPerClassSampler(self.labels, m=self.m, batch_size=self.batch_size,
                                   length_before_new_iter=self.num_batches * self.batch_size)
        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(seed)
        try:
            flat = list(iter(sampler))
        finally:
            c_f.NUMPY_RANDOM = saved
        for start in range(0, len(flat) - self.batch_size + 1, self.batch_size):
            yield [int(i) for i in flat[start : start + self.batch_size]]
