"""EnsembleScorer: a weighted soft vote of scorers whose scores are probabilities."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from fermetric.errors import FermetricError, ModelError
from fermetric.scoring.base import Scorer
from fermetric.scoring.classifier import ClassifierScorer
from fermetric.scoring.knn import KNNScorer
from fermetric.scoring.tta import TTAScorer


def gives_probabilities(scorer: Scorer) -> bool:
    """Whether a scorer's scores are class probabilities (rows summing to 1): a softmax
    classifier, a kNN vote, a TTA mean of either, or a scorer that says so (`probabilities`, e.g.
    a CalibratedScorer). Logits and prototype cosines are not."""
    if getattr(scorer, "probabilities", False):
        return True
    if isinstance(scorer, TTAScorer):
        return gives_probabilities(scorer.inner)
    if isinstance(scorer, EnsembleScorer):
        return True
    if isinstance(scorer, ClassifierScorer):
        return scorer.output == "softmax"
    return isinstance(scorer, KNNScorer)


class EnsembleScorer(Scorer):
    """A weighted soft vote: the weighted mean of its members' class probabilities.

    scores(x) = sum_i w_i * p_i(x), with the weights normalised to sum to 1, so the scores of an
    ensemble are probabilities like its members'. It is a scorer like every other: evaluation,
    predict and the black-box explanations (occlusion, LIME) take it as they take one model, and
    gradient methods too when every member is differentiable (softmax classifiers; a kNN member
    makes the vote a black box).

    Args:
        members: scorers of the same classes whose scores are probabilities (see
            `gives_probabilities`), on one device.
        weights: one non-negative weight per member (default: equal); normalised to sum to 1.
        names: a label per member (for reports), default "member0", ...
    """

    kind = "ensemble"
    _compilable = False  # members compile (or not) themselves; a kNN member is outside torch

    def __init__(self, members: Sequence[Scorer], weights: Optional[Sequence[float]] = None,
                 names: Optional[Sequence[str]] = None):
        members = list(members)
        if not members:
            raise ModelError("an EnsembleScorer needs at least one member scorer")
        for i, m in enumerate(members):
            if not isinstance(m, Scorer):
                raise ModelError(f"ensemble member {i} must be a fermetric scorer; got {type(m).__name__}")
            if not gives_probabilities(m):
                raise ModelError(f"ensemble member {i} ({m!r}) scores {getattr(m, 'output', m.kind)}, not probabilities: "
                                 "vote softmax classifiers (output='softmax') and kNN scorers")
        names = [f"member{i}" for i in range(len(members))] if names is None else [str(n) for n in names]
        if len(names) != len(members):
            raise ModelError(f"{len(names)} names for {len(members)} ensemble members")
        w = np.full(len(members), 1.0 / len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(members),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ModelError(f"ensemble weights must be {len(members)} finite non-negative numbers with a positive sum; "
                             f"got {list(np.atleast_1d(w))}")
        class_sets = {m.class_names for m in members if m.class_names is not None}
        if len(class_sets) > 1:
            raise ModelError(f"ensemble members score different classes: {sorted(map(list, class_sets))}")
        devices = {str(m.device) for m in members}
        if len(devices) > 1:
            raise ModelError(f"ensemble members are on different devices ({', '.join(sorted(devices))}); load them on one")
        super().__init__(nn.ModuleList([m.model for m in members]), min(m.batch_size for m in members),
                         next(iter(class_sets), None), members[0].precision)
        self.members, self.names = members, names
        self.weights = (w / w.sum()).tolist()
        self.differentiable = all(m.differentiable for m in members)
        counts = {m._num_classes for m in members if m._num_classes is not None}
        if len(counts) > 1:
            raise ModelError(f"ensemble members score different numbers of classes: {sorted(counts)}")
        self._num_classes = next(iter(counts), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._vote([m.forward for m in self.members], x)

    def _vote(self, scores, x: torch.Tensor) -> torch.Tensor:
        out = None
        for w, score in zip(self.weights, scores):
            s = w * score(x).float()
            out = s if out is None else out + s
        return out

    def _fast_forward(self, export: bool = True):
        # each member through ONNX Runtime where it has a path, the others as they are
        fast = [m._fast_forward(export) if m.backend != "torch" else None for m in self.members]
        if all(f is None for f in fast):
            return None
        return lambda x: self._vote([f or m.forward for f, m in zip(fast, self.members)], x)

    def with_model(self, model: nn.Module) -> "EnsembleScorer":
        """The same vote over other member models: `model` is a ModuleList like `self.model`."""
        if not isinstance(model, nn.ModuleList) or len(model) != len(self.members):
            raise ModelError(f"an ensemble of {len(self.members)} members takes an nn.ModuleList of "
                             f"{len(self.members)} models; got {type(model).__name__}")
        other = super().with_model(model)
        other.members = [m.with_model(sub) for m, sub in zip(self.members, model)]
        return other

    @property
    def gradcam_layer(self) -> str:
        raise ModelError("Grad-CAM looks into one network's layer, and an ensemble has "
                         f"{len(self.members)} ({', '.join(self.names)}); explain a member, or use "
                         "saliency, occlusion or LIME on the ensemble")

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {w:.3g}" for n, w in zip(self.names, self.weights))
        return f"EnsembleScorer({parts})"


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
