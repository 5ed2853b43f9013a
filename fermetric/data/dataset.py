"""In-memory data containers.

Images live as uint8 tensors of shape (N, 1, 48, 48) (FER2013 is 83 MB this way); the batch
loader turns them into float [0, 1] batches and applies batched augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class FERDataset:
    """One split of a data set.

    Attributes:
        images: (N, 1, 48, 48) uint8.
        labels: (N,) int64 class ids in [0, len(class_names)).
        class_names: names of the class ids.
        masks: (N, 48, 48) bool ground-truth evidence masks (SynthFER), or None.
        soft_labels: (N, C) float32 vote distributions (FER+), or None.
        sources: one identifier per image (file name, or "file:line"), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    masks: Optional[torch.Tensor] = None
    soft_labels: Optional[torch.Tensor] = None
    sources: Optional[list[str]] = None

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names)
        imgs, labels = self.images, self.labels
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[1] != 1 or tuple(imgs.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"images must be a uint8 tensor of shape (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}); got {imgs.dtype} {tuple(imgs.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != imgs.shape[0]:
            raise DataError(f"labels must have shape ({imgs.shape[0]},); got {tuple(labels.shape)}")
        self.labels = labels.long()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
            raise DataError(f"labels must lie in 0..{len(self.class_names) - 1}; got {int(labels.min())}..{int(labels.max())}")
        if self.masks is not None and tuple(self.masks.shape) != (imgs.shape[0], IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"masks must have shape ({imgs.shape[0]}, {IMAGE_SIZE}, {IMAGE_SIZE}); got {tuple(self.masks.shape)}")
        if self.soft_labels is not None and tuple(self.soft_labels.shape) != (imgs.shape[0], len(self.class_names)):
            raise DataError(f"soft_labels must have shape ({imgs.shape[0]}, {len(self.class_names)}); got {tuple(self.soft_labels.shape)}")
        if self.sources is not None and len(self.sources) != imgs.shape[0]:
            raise DataError(f"sources must have {imgs.shape[0]} entries; got {len(self.sources)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """SHA-256 of the images' and labels' bytes (and the class names): two runs whose split has
        the same fingerprint were shown the same faces with the same labels."""
        import hashlib

        h = hashlib.sha256("\x1f".join(self.class_names).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index: torch.Tensor | Sequence[int]) -> "FERDataset":
        idx = torch.as_tensor(index, dtype=torch.long)
        return FERDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            masks=None if self.masks is None else self.masks[idx],
            soft_labels=None if self.soft_labels is None else self.soft_labels[idx],
            sources=None if self.sources is None else [self.sources[i] for i in idx.tolist()],
        )

    def float_images(self, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images as float32 in [0, 1], shape (N, 1, 48, 48): what models take."""
        imgs = self.images if index is None else self.images[index]
        return imgs.float().div_(255.0)


@dataclass
class DataSplits:
    """A data set's splits (`train`, `val`, and `test` where the data has one).

    Attributes:
        name: a short description ("SynthFER(seed=0)", "fer2013.csv", ...).
        splits: split name -> FERDataset.
        info: loader facts worth reporting (source path, skipped rows, dropped FER+ rows, ...).
    """

    name: str
    splits: dict[str, FERDataset]
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, split: str) -> FERDataset:
        if split not in self.splits:
            raise DataError(f"data set {self.name} has no split {split!r}; available: {', '.join(self.splits)}")
        return self.splits[split]

    def __contains__(self, split: str) -> bool:
        return split in self.splits

    @property
    def class_names(self) -> tuple[str, ...]:
        return next(iter(self.splits.values())).class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def count_table(self) -> dict[str, list[int]]:
        """split -> per-class counts."""
        return {name: ds.class_counts() for name, ds in self.splits.items()}


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) with `fraction` of every class held out (at least one per class
    that has two or more images), seeded.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"val fraction must lie strictly between 0 and 1; got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        else:
            n_held = 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
