"""What an explanation method is asked: the class to explain per image, and whether the scorer
can give gradients."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from fermetric.errors import ConfigError, ModelError
from fermetric.scoring import EnsembleScorer, Scorer


def resolve_targets(scorer: Scorer, images: torch.Tensor, target: Any = None, batch_size: Optional[int] = None) -> torch.Tensor:
    """Class ids (N,) int64 to explain.

    Args:
        scorer: gives the number of classes and, for target=None, the predictions.
        images: (N, 1, 48, 48) float batch (already checked).
        target: None (the predicted class), an int or class name for every image, or a sequence /
            array / tensor of N ints or names.
    """
    n = images.shape[0]
    if target is None:
        return scorer.predict(images, batch_size)
    c = scorer.num_classes
    valid = f"valid: 0..{c - 1}" + (f" ({', '.join(scorer.class_names)})" if scorer.class_names else "")

    def one(t: Any) -> int:
        if isinstance(t, str):
            names = [s.lower() for s in (scorer.class_names or ())]
            if t.lower() not in names:
                raise ConfigError(f"unknown class name {t!r}; {valid}")
            return names.index(t.lower())
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise ConfigError(f"target class must be an int or class name; got {t!r}; {valid}")
        if not 0 <= int(t) < c:
            raise ConfigError(f"target class {int(t)} is out of range; {valid}")
        return int(t)

    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    if isinstance(target, (str, int, np.integer)) and not isinstance(target, bool):
        return torch.full((n,), one(target), dtype=torch.long)
    seq = list(np.asarray(target, dtype=object).ravel()) if not isinstance(target, (list, tuple)) else list(target)
    if len(seq) != n:
        raise ConfigError(f"target must be one class for all images or one per image ({n}); got {len(seq)} values")
    return torch.tensor([one(t.item() if isinstance(t, np.generic) else t) for t in seq], dtype=torch.long)


def require_differentiable(scorer: Scorer, method: str) -> None:
    """ModelError for gradient methods on a black-box scorer, saying what to use instead."""
    if not isinstance(scorer, Scorer):
        raise ModelError(f"method {method!r} needs a fermetric scorer (ClassifierScorer, PrototypeScorer, KNNScorer); got {type(scorer).__name__}")
    if not getattr(scorer, "differentiable", False):
        if isinstance(scorer, EnsembleScorer):
            black = [n for n, m in zip(scorer.names, scorer.members) if not m.differentiable]
            raise ModelError(
                f"method {method!r} needs gradients, but this EnsembleScorer is a black box: its member(s) "
                f"{', '.join(black)} vote through a kNN index. Use a black-box method on the ensemble (occlusion, "
                "lime), or a gradient method on one member")
        raise ModelError(
            f"method {method!r} needs gradients, but {type(scorer).__name__} is a black box (kNN vote through FAISS). "
            "Use PrototypeScorer (cosine to class centroids, differentiable) for gradient methods, "
            "or a black-box method: occlusion, lime"
        )
