"""Ensembles of anything that yields class probabilities: soft vote (mean of the members'
probabilities) and a vote weighted by each member's validation accuracy."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fermetric.errors import FermetricError


def soft_vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of (N, C) probability arrays; weights are normalised to sum to 1.

    Raises:
        FermetricError: members disagree on the shape (different splits or class sets).
    """
    if not probs:
        raise FermetricError("an ensemble needs at least one member")
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise FermetricError(f"ensemble members disagree on (images, classes): {sorted(shapes)}; "
                             "use runs trained on the same data and split")
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),) or (w < 0).any() or w.sum() <= 0:
        raise FermetricError(f"ensemble weights must be {len(probs)} non-negative numbers, not all 0; got {list(w)}")
    w = w / w.sum()
    return np.tensordot(w, np.stack(probs).astype(np.float64), axes=1)
