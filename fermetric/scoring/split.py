"""Class probabilities of a whole data set through a classifier's scorer (used by validation
during training and by evaluation of a bare model)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fermetric.data.dataset import FERDataset
from fermetric.scoring.classifier import ClassifierScorer
from fermetric.scoring.tta import tta_scorer


def model_proba(
    model: nn.Module,
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    tta: bool | str = False,
    precision: str = "auto",
    crop_padding: int = 4,
) -> np.ndarray:
    """Softmax probabilities (N, C) of a classifier on a whole split, in eval mode, through the
    Scorer (a softmax ClassifierScorer; TTAScorer over `tta_views` with `tta`).

    With `tta` (True / "shift", or "tencrop" at the model's training `crop_padding`), the mean of
    the softmax over the 10 views of `tta_views`. The model's train/eval flags are restored
    afterwards. `precision` (auto, fp32, bf16, fp16; see utils.runtime) sets the autocast of the
    forward passes; softmax and the mean are fp32. The scores are computed where the model's
    parameters are (`device` names that place for callers that have it at hand).
    """
    scorer = ClassifierScorer(model, output="softmax", batch_size=batch_size, precision=precision)
    scorer.compile = False  # one pass over a split: a compile (40-90 s) would not repay itself
    return tta_scorer(scorer, tta, crop_padding).scores(dataset.images).numpy()
