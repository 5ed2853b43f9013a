"""Whether class probabilities mean what they say: expected calibration error, negative
log-likelihood, Brier score and the reliability bins behind a reliability diagram; temperature
scaling to fix an over- or under-confident classifier, and additive smoothing of a kNN vote, each
fitted on a split that is not the one reported.

A kNN vote's probabilities are step functions of its k neighbours: a class no neighbour voted for
gets exactly 0, and the face is then scored as impossible. Measured on FER2013 PublicTest with
`fer2013-triplet` (scripts/compare_knn_calibration.py), temperature scaling of the (floored) votes made them worse
(ECE 7.74 % -> 12.57 %), while additive smoothing, p' = (p + a) / (1 + C a), halved the ECE
(-> 3.64 %) and cut the NLL by a third; a temperature on top of the smoothing fitted T ~ 1 and
changed nothing that matters. So a kNN vote is calibrated by one fitted `a` ("vote_smoothing").

ECE follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"): the top-class
confidence of each image is put in one of 15 equal-width bins over [0, 1], and ECE is the
image-weighted mean gap |accuracy - mean confidence| over the bins. Equal-width bins are what the
FER and calibration papers report; a kNN vote's confidences are multiples of 1/k (or of its
distance weights), so some bins stay empty: they weigh nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fermetric.errors import FermetricError
from fermetric.scoring.calibration import LOG_FLOOR, apply_temperature, smooth_votes, temperature_of
from fermetric.scoring.run import split_proba
import fermetric.run_layout as layout

ECE_BINS = 15
BINNING = f"{ECE_BINS} equal-width confidence bins"


def _check(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y, dtype=np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise FermetricError(f"calibration needs probabilities (N, C) and N labels; got {p.shape} and {t.shape}")
    if p.shape[0] == 0:
        raise FermetricError("calibration needs at least one image")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise FermetricError(f"labels must lie in [0, {p.shape[1]}); got {t.min()}..{t.max()}")
    return p, t


def reliability_bins(probs: Any, y: Any, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its edges, the number of images, their mean top-class
    confidence and their accuracy (NaN in an empty bin)."""
    p, t = _check(probs, y)
    conf, correct = p.max(1), (p.argmax(1) == t)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        sel = which == i
        n = int(sel.sum())
        out.append({"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": n,
                    "confidence": float(conf[sel].mean()) if n else float("nan"),
                    "accuracy": float(correct[sel].mean()) if n else float("nan")})
    return out


def expected_calibration_error(probs: Any, y: Any, bins: int = ECE_BINS) -> float:
    """sum over bins of (images in the bin / N) * |accuracy - mean confidence|, in [0, 1]."""
    rows = reliability_bins(probs, y, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


def negative_log_likelihood(probs: Any, y: Any) -> float:
    """Mean -log p(true class), with p floored at LOG_FLOOR (a zero vote would make it infinite)."""
    p, t = _check(probs, y)
    return float(-np.log(np.clip(p[np.arange(len(t)), t], LOG_FLOOR, None)).mean())


def brier_score(probs: Any, y: Any) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot label
    (the multi-class Brier score of Brier 1950, in [0, 2])."""
    p, t = _check(probs, y)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), t] = 1.0
    return float(((p - onehot) ** 2).sum(1).mean())


def brief_calibration(probs: Any, y: Any) -> dict[str, float]:
    """ECE / NLL / Brier of probabilities (`calibration_metrics` without the bins)."""
    c = calibration_metrics(probs, y)
    return {"ece": c["ece"], "nll": c["nll"], "brier": c["brier"]}


def calibration_metrics(probs: Any, y: Any, bins: int = ECE_BINS) -> dict[str, Any]:
    """{"ece", "nll", "brier", "binning", "bins": reliability_bins} of probabilities (N, C)."""
    return {"ece": expected_calibration_error(probs, y, bins), "nll": negative_log_likelihood(probs, y),
            "brier": brier_score(probs, y), "binning": f"{bins} equal-width confidence bins",
            "bins": reliability_bins(probs, y, bins)}


def _fit_by_nll(probs: Any, y: Any, apply: Any, bounds: tuple[float, float]) -> float:
    """The parameter in `bounds` that minimises the NLL of apply(probs, parameter) on (probs, y):
    a bounded scalar search over its log."""
    from scipy.optimize import minimize_scalar

    p, t = _check(probs, y)
    res = minimize_scalar(lambda s: negative_log_likelihood(apply(p, float(np.exp(s))), t),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_temperature(probs: Any, y: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T in `bounds` that minimises the NLL of apply_temperature(probs, T) on (probs, y)."""
    return _fit_by_nll(probs, y, apply_temperature, bounds)


def cross_fitted_temperature(probs: Any, y: Any, folds: int = 2, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """`cross_fitted` temperature scaling: (N, C) probabilities and the temperature of each part."""
    return cross_fitted(probs, y, "temperature", folds, seed)


def fit_vote_smoothing(probs: Any, y: Any, bounds: tuple[float, float] = (1e-5, 1.0)) -> float:
    """The smoothing `alpha` in `bounds` that minimises the NLL of smooth_votes(probs, alpha) on (probs, y)."""
    return _fit_by_nll(probs, y, smooth_votes, bounds)


# how each kind of probability is calibrated: the parameter's name (run_layout: what
# temperature.json records), its fit and its application
CALIBRATIONS = {
    method: (layout.CALIBRATION_PARAMS[method], fit, apply)
    for method, fit, apply in (("temperature", fit_temperature, apply_temperature),
                               ("vote_smoothing", fit_vote_smoothing, smooth_votes))
}


def cross_fitted(probs: Any, y: Any, method: str = "temperature", folds: int = 2,
                 seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Calibrated probabilities where no image is calibrated by a parameter its own label fitted:
    the split is cut in `folds` parts (a seeded shuffle), each calibrated with the parameter fitted
    on the others. Returns (N, C) probabilities and the parameter of each part."""
    _, fit, apply = CALIBRATIONS[method]
    p, t = _check(probs, y)
    if len(t) < 2 * folds:
        raise FermetricError(f"cross-fitting a calibration needs at least {2 * folds} images, got {len(t)}")
    parts = np.array_split(np.random.default_rng(seed).permutation(len(t)), folds)
    out = np.empty_like(p)
    params = []
    for part in parts:
        rest = np.setdiff1d(np.arange(len(t)), part)
        value = fit(p[rest], t[rest])
        out[part] = apply(p[part], value)
        params.append(value)
    return out, params


def calibration_record(probs: Any, y: Any, method: str = "temperature", seed: int = 0) -> dict[str, Any]:
    """What `fermetric calibrate` keeps: the parameter of `method` fitted on all of (probs, y) (the
    one to use on other images), and the calibration before and after, "after" cross-fitted so
    that the split's own labels never chose the parameter its images are calibrated with."""
    key, fit, _ = CALIBRATIONS[method]
    p, t = _check(probs, y)
    after, params = cross_fitted(p, t, method, seed=seed)
    return {"method": method, key: fit(p, t), "n": int(len(t)), "binning": BINNING,
            "accuracy": float((p.argmax(1) == t).mean()),
            "before": brief_calibration(p, t), "after_cross_fitted": brief_calibration(after, t),
            f"cross_fit_{key}s": params}


def temperature_record(probs: Any, y: Any, seed: int = 0) -> dict[str, Any]:
    """`calibration_record` of temperature scaling (a classifier's softmax)."""
    return calibration_record(probs, y, "temperature", seed)


TEMPERATURE_FILE = layout.TEMPERATURE


def calibrate_run(run: Any, split: str = "val", tta: Optional[str] = None) -> dict[str, Any]:
    """Calibrate a run's probabilities on `split` and keep the fit in RUN/temperature.json, stamped
    with the checkpoint it was fitted for (a stale one is ignored by `Run.stored_calibration`): the
    temperature of a classifier's softmax (with `tta`: its TTA softmax), the vote smoothing of an
    embedding run's kNN vote. Returns the record (calibration_record + where)."""
    from fermetric.utils.io import write_json

    if run.kind not in ("classifier", "embedding"):
        raise FermetricError(f"{run.path} is an {run.kind}: calibrate its members, each on its own")
    if split == "train":
        raise FermetricError("a calibration fitted on the training split would learn the model's over-confidence on "
                             "the images it was trained on; calibrate on val")
    if tta and run.kind != "classifier":
        raise FermetricError("TTA is for classifier runs; an embedding run's kNN vote is calibrated without it")
    method = "temperature" if run.kind == "classifier" else "vote_smoothing"
    y = run.load_data()[split].labels.numpy()
    record = {**run.fingerprint, **calibration_record(split_proba(run, split, tta=tta or False), y, method, seed=run.cfg.seed),
              "fitted_on": split, "tta": tta or False, "data": str(run.cfg.data.source)}
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(layout.path_of(run.path, layout.TEMPERATURE), record)
    return record


def stored_temperature(run: Any, tta: Optional[str] = None) -> Optional[float]:
    """The temperature `calibrate` fitted for this classifier run and this TTA, or None."""
    return temperature_of(run.stored_calibration(tta))
