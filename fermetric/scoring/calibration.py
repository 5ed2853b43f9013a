"""Applying a calibration that `fermetric calibrate` fitted (fermetric.evaluation.calibration fits
them): a classifier's temperature, softmax(log p / T), and a kNN vote's additive smoothing,
(p + a) / (1 + C a). Neither changes the arg-max. `CalibratedScorer` applies one to a scorer's
probabilities, so that an ensemble votes with its members' calibrated probabilities."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from fermetric.errors import FermetricError
from fermetric.scoring.base import Scorer
from fermetric.scoring.ensemble import gives_probabilities

# floor of a probability before its log: a kNN vote gives classes no neighbour voted for exactly 0
LOG_FLOOR = 1e-6


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """softmax(log p / T): for softmax probabilities exactly softmax(logits / T) (the row's
    log-sum-exp shift cancels); p is floored at LOG_FLOOR first. T > 1 softens, T < 1 sharpens;
    the arg-max never changes."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise FermetricError(f"a temperature must be a positive number; got {temperature}")
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), LOG_FLOOR, None)) / float(temperature)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def smooth_votes(probs: Any, alpha: float) -> np.ndarray:
    """(p + alpha) / (1 + C alpha): every class keeps a share of the vote; the arg-max never changes."""
    if not np.isfinite(alpha) or alpha < 0:
        raise FermetricError(f"a vote smoothing must be a non-negative number; got {alpha}")
    p = np.asarray(probs, dtype=np.float64)
    return (p + float(alpha)) / (1.0 + p.shape[1] * float(alpha))


def apply_calibration(probs: Any, calibration: Optional[dict[str, Any]]) -> np.ndarray:
    """`probs` calibrated as `calibration` ({"method": "temperature", "temperature": T} or
    {"method": "vote_smoothing", "alpha": a}, what Run.stored_calibration gives) says; None: as they are."""
    if calibration is None:
        return np.asarray(probs, dtype=np.float64)
    if calibration.get("method", "temperature") == "temperature":
        return apply_temperature(probs, float(calibration["temperature"]))
    if calibration["method"] == "vote_smoothing":
        return smooth_votes(probs, float(calibration["alpha"]))
    raise FermetricError(f"unknown calibration {calibration.get('method')!r}; known: temperature, vote_smoothing")


class CalibratedScorer(Scorer):
    """A probability scorer's scores calibrated (differentiable when the scorer is).

    Args:
        scorer: a scorer whose scores are probabilities (a softmax classifier, a kNN vote, a TTA
            mean of either).
        calibration: as `apply_calibration` takes it.
    """

    kind = "calibrated"
    probabilities = True  # whatever it wraps, its scores are calibrated probabilities
    _compilable = False  # the inner scorer compiles (or not) itself

    def __init__(self, scorer: Scorer, calibration: dict[str, Any]):
        if not isinstance(scorer, Scorer) or not gives_probabilities(scorer):
            raise FermetricError(f"a calibration applies to probabilities; {scorer!r} does not score probabilities")
        apply_calibration(np.full((1, 2), 0.5), calibration)  # a bad record is refused here, not mid-vote
        super().__init__(scorer.model, scorer.batch_size, scorer.class_names, scorer.precision)
        self.inner, self.calibration = scorer, dict(calibration)
        self.differentiable = scorer.differentiable
        self._num_classes = scorer._num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.inner.forward(x).float()
        if self.calibration.get("method", "temperature") == "temperature":
            return torch.softmax(torch.log(p.clamp_min(LOG_FLOOR)) / float(self.calibration["temperature"]), dim=1)
        a = float(self.calibration["alpha"])
        return (p + a) / (1.0 + p.shape[1] * a)

    def with_model(self, model) -> "CalibratedScorer":
        other = super().with_model(model)
        other.inner = self.inner.with_model(model)
        return other

    def __repr__(self) -> str:
        return f"CalibratedScorer({self.inner!r}, {self.calibration})"
