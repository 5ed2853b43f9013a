"""Applying a calibration that `fermetric calibrate` fitted (fermetric.evaluation.calibration fits
them): a classifier's temperature, softmax(log p / T), and a kNN vote's additive smoothing,
(p + a) / (1 + C a). Neither changes the arg-max. Each formula is written once, on tensors:
`CalibratedScorer` applies it inside a scorer (so that an ensemble votes with its members'
calibrated probabilities), and the NumPy functions apply it to probabilities already computed."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

import fermetric.run_layout as layout
from fermetric.errors import FermetricError
from fermetric.scoring.base import Scorer
from fermetric.scoring.ensemble import gives_probabilities

# floor of a probability before its log: a kNN vote gives classes no neighbour voted for exactly 0
LOG_FLOOR = 1e-6


def check_calibration(calibration: dict[str, Any]) -> tuple[str, float]:
    """(method, parameter) of a calibration record ({"method": "temperature", "temperature": T} or
    {"method": "vote_smoothing", "alpha": a}, what Run.stored_calibration gives).

    Raises:
        FermetricError: an unknown method, or a temperature <= 0 or a negative smoothing.
    """
    method = calibration.get("method", "temperature")
    if method not in layout.CALIBRATION_PARAMS:
        raise FermetricError(f"unknown calibration {method!r}; known: {', '.join(layout.CALIBRATION_PARAMS)}")
    value = float(calibration[layout.CALIBRATION_PARAMS[method]])
    if method == "temperature" and (not np.isfinite(value) or value <= 0):
        raise FermetricError(f"a temperature must be a positive number; got {value}")
    if method == "vote_smoothing" and (not np.isfinite(value) or value < 0):
        raise FermetricError(f"a vote smoothing must be a non-negative number; got {value}")
    return method, value


def temperature_of(calibration: Optional[dict[str, Any]]) -> Optional[float]:
    """The temperature of a classifier's calibration, or None (none, or a vote smoothing)."""
    if calibration is None or calibration.get("method", "temperature") != "temperature":
        return None
    return float(calibration["temperature"])


def calibrate_tensor(p: torch.Tensor, calibration: dict[str, Any]) -> torch.Tensor:
    """Probabilities (N, C) calibrated: softmax(log max(p, LOG_FLOOR) / T), or (p + a) / (1 + C a)."""
    method, value = check_calibration(calibration)
    if method == "temperature":
        return torch.softmax(torch.log(p.clamp_min(LOG_FLOOR)) / value, dim=1)
    return (p + value) / (1.0 + p.shape[1] * value)


def apply_calibration(probs: Any, calibration: Optional[dict[str, Any]]) -> np.ndarray:
    """`probs` (N, C) calibrated as `calibration` says (see `check_calibration`), in float64;
    None: as they are."""
    p = np.asarray(probs, dtype=np.float64)
    return p if calibration is None else calibrate_tensor(torch.from_numpy(p.copy()), calibration).numpy()


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """softmax(log p / T): for softmax probabilities exactly softmax(logits / T) (the row's
    log-sum-exp shift cancels); p is floored at LOG_FLOOR first. T > 1 softens, T < 1 sharpens;
    the arg-max never changes."""
    return apply_calibration(probs, {"method": "temperature", "temperature": temperature})


def smooth_votes(probs: Any, alpha: float) -> np.ndarray:
    """(p + alpha) / (1 + C alpha): every class keeps a share of the vote; the arg-max never changes."""
    return apply_calibration(probs, {"method": "vote_smoothing", "alpha": alpha})


class CalibratedScorer(Scorer):
    """A probability scorer's scores calibrated (differentiable when the scorer is).

    Args:
        scorer: a scorer whose scores are probabilities (a softmax classifier, a kNN vote, a TTA
            mean of either).
        calibration: as `check_calibration` takes it.
    """

    kind = "calibrated"
    probabilities = True  # whatever it wraps, its scores are calibrated probabilities
    _compilable = False  # the inner scorer compiles (or not) itself

    def __init__(self, scorer: Scorer, calibration: dict[str, Any]):
        if not isinstance(scorer, Scorer) or not gives_probabilities(scorer):
            raise FermetricError(f"a calibration applies to probabilities; {scorer!r} does not score probabilities")
        check_calibration(calibration)  # a bad record is refused here, not mid-vote
        super().__init__(scorer.model, scorer.batch_size, scorer.class_names, scorer.precision)
        self.inner, self.calibration = scorer, dict(calibration)
        self.differentiable = scorer.differentiable
        self.backend = scorer.backend
        self._num_classes = scorer._num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return calibrate_tensor(self.inner.forward(x).float(), self.calibration)

    def _fast_forward(self, export: bool = True):
        inner = self.inner._fast_forward(export)
        return None if inner is None else (lambda x: calibrate_tensor(inner(x).float(), self.calibration))

    def with_model(self, model) -> "CalibratedScorer":
        other = super().with_model(model)
        other.inner = self.inner.with_model(model)
        return other

    def __repr__(self) -> str:
        return f"CalibratedScorer({self.inner!r}, {self.calibration})"
