"""Whether class probabilities mean what they say: expected calibration error, negative
log-likelihood, Brier score and the reliability bins behind a reliability diagram; temperature
scaling to fix an over- or under-confident model on a split that is not the one reported.

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
from fermetric.scoring.run import split_proba
import fermetric.run_layout as layout

ECE_BINS = 15
BINNING = f"{ECE_BINS} equal-width confidence bins"
# floor of a probability before its log: a kNN vote gives classes no neighbour voted for exactly 0
LOG_FLOOR = 1e-6


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


def calibration_metrics(probs: Any, y: Any, bins: int = ECE_BINS) -> dict[str, Any]:
    """{"ece", "nll", "brier", "binning", "bins": reliability_bins} of probabilities (N, C)."""
    return {"ece": expected_calibration_error(probs, y, bins), "nll": negative_log_likelihood(probs, y),
            "brier": brier_score(probs, y), "binning": f"{bins} equal-width confidence bins",
            "bins": reliability_bins(probs, y, bins)}


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


def fit_temperature(probs: Any, y: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T in `bounds` that minimises the NLL of apply_temperature(probs, T) on
    (probs, y): one parameter, fitted by a bounded scalar search over log T."""
    from scipy.optimize import minimize_scalar

    p, t = _check(probs, y)
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda s: negative_log_likelihood(apply_temperature(p, float(np.exp(s))), t),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def cross_fitted_temperature(probs: Any, y: Any, folds: int = 2, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Temperature-scaled probabilities where no image is scaled with a temperature its own label
    fitted: the split is cut in `folds` parts (a seeded shuffle), each scaled with the temperature
    fitted on the others. Returns (N, C) probabilities and the temperature of each part."""
    p, t = _check(probs, y)
    if len(t) < 2 * folds:
        raise FermetricError(f"cross-fitting a temperature needs at least {2 * folds} images, got {len(t)}")
    parts = np.array_split(np.random.default_rng(seed).permutation(len(t)), folds)
    out = np.empty_like(p)
    temps = []
    for part in parts:
        rest = np.setdiff1d(np.arange(len(t)), part)
        temp = fit_temperature(p[rest], t[rest])
        out[part] = apply_temperature(p[part], temp)
        temps.append(temp)
    return out, temps


def temperature_record(probs: Any, y: Any, seed: int = 0) -> dict[str, Any]:
    """What `fermetric calibrate` keeps: the temperature fitted on all of (probs, y) (the one to
    use on other images), and the calibration before and after, "after" cross-fitted so that the
    split's own labels never chose the temperature its images are scored with."""
    p, t = _check(probs, y)
    after, temps = cross_fitted_temperature(p, t, seed=seed)
    brief = lambda c: {k: c[k] for k in ("ece", "nll", "brier")}  # noqa: E731
    return {"temperature": fit_temperature(p, t), "n": int(len(t)), "binning": BINNING,
            "accuracy": float((p.argmax(1) == t).mean()),
            "before": brief(calibration_metrics(p, t)), "after_cross_fitted": brief(calibration_metrics(after, t)),
            "cross_fit_temperatures": temps}


TEMPERATURE_FILE = layout.TEMPERATURE


def calibrate_run(run: Any, split: str = "val", tta: Optional[str] = None) -> dict[str, Any]:
    """Fit the temperature of a classifier run's softmax (with `tta`: its TTA softmax) on `split`
    and keep it in RUN/temperature.json, stamped with the checkpoint it was fitted for (a stale
    one is ignored by `stored_temperature`). Returns the record (temperature_record + where)."""
    from fermetric.utils.io import write_json

    if run.kind != "classifier":
        raise FermetricError(f"{run.path} is a{'n' if run.kind[:1] in 'ae' else ''} {run.kind} run: temperature scaling "
                             "rescales a classifier's softmax (a kNN vote's probabilities are calibrated by its k)")
    if split == "train":
        raise FermetricError("a temperature fitted on the training split would learn the model's over-confidence on "
                             "the images it was trained on; calibrate on val")
    y = run.load_data()[split].labels.numpy()
    record = {**run.fingerprint, **temperature_record(split_proba(run, split, tta=tta or False), y, seed=run.cfg.seed),
              "fitted_on": split, "tta": tta or False, "data": str(run.cfg.data.source)}
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(layout.path_of(run.path, layout.TEMPERATURE), record)
    return record


def stored_temperature(run: Any, tta: Optional[str] = None) -> Optional[float]:
    """The temperature `calibrate` fitted for this run's current weights and this TTA, or None."""
    from fermetric.utils.io import read_json

    path = layout.path_of(run.path, layout.TEMPERATURE)
    if run.kind != "classifier" or not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not run.made_here(record) or (record.get("tta") or None) != (tta or None):
        return None
    t = record.get("temperature")
    return float(t) if isinstance(t, (int, float)) and np.isfinite(t) and t > 0 else None
