"""Class probabilities of a whole split (through the Scorer, fermetric.analysis.scorers), the
views of test-time augmentation (TTA), and batched embedding of a split."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.data.dataset import FERDataset
from fermetric.utils import runtime

# TTA views: identity and shifted crops (the "crops" of a padded image), each also flipped.
TTA_SHIFTS = ((0, 0), (-2, -2), (-2, 2), (2, -2), (2, 2))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """A crop of the zero-padded image at offset (dy, dx): the image moved by (-dy, -dx)."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p + dy : p + dy + h, p + dx : p + dx + w]


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 10 TTA views of a batch (N, 1, H, W): 5 crops x {as is, flipped}."""
    views = []
    for dy, dx in TTA_SHIFTS:
        v = _shift(x, dy, dx)
        views += [v, v.flip(-1)]
    return views


def predict_proba(
    model: nn.Module,
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    tta: bool = False,
    precision: str = "auto",
) -> np.ndarray:
    """Softmax probabilities (N, C) of a classifier on a whole split, in eval mode, through the
    Scorer (a softmax ClassifierScorer; TTAScorer over `tta_views` with `tta`).

    With `tta`, the mean of the softmax over the 10 views of `tta_views`. The model's train/eval
    flags are restored afterwards. `precision` (auto, fp32, bf16, fp16; see utils.runtime) sets the
    autocast of the forward passes; softmax and the mean are fp32. The scores are computed where
    the model's parameters are (`device` names that place for callers that have it at hand).
    """
    from fermetric.analysis.scorers import ClassifierScorer, TTAScorer

    scorer = ClassifierScorer(model, output="softmax", batch_size=batch_size, precision=precision)
    scorer.compile = False  # one pass over a split: a compile (40-90 s) would not repay itself
    if tta:
        scorer = TTAScorer(scorer)
    return scorer.scores(dataset.images).numpy()


def embed_dataset(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> np.ndarray:
    """Apply `embed` (images -> (B, D)) to a whole split in batches; returns float32 (N, D).

    `precision` as in `predict_proba`; the embeddings come back fp32.
    """
    prec = runtime.resolve_precision(precision, device)
    cl = runtime.use_channels_last(device, prec)
    out = []
    with runtime.inference(device, prec):
        for start in range(0, len(dataset), batch_size):
            x = dataset.float_images(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
            out.append(embed(runtime.to_memory_format(x, cl)).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)
