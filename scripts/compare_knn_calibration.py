"""Which calibration fits a kNN vote: none, additive smoothing, a temperature on the votes, or
both, each cross-fitted on the halves of the split (no face calibrated by a parameter its own
label chose). The numbers behind the README's kNN calibration table:

    python scripts/compare_knn_calibration.py fer2013-triplet --data fer2013-dev.csv.gz [--split val]
"""
from __future__ import annotations

import argparse

import numpy as np

import fermetric
from fermetric.evaluation.calibration import (
    apply_temperature, calibration_metrics, cross_fitted, fit_temperature, fit_vote_smoothing, smooth_votes,
)
from fermetric.scoring import split_proba


def smoothing_then_temperature(p: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list]:
    """Both, cross-fitted as `cross_fitted` does (the same halves)."""
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), 2)
    out, params = np.empty_like(p), []
    for part in parts:
        rest = np.setdiff1d(np.arange(len(y)), part)
        a = fit_vote_smoothing(p[rest], y[rest])
        t = fit_temperature(smooth_votes(p[rest], a), y[rest])
        out[part] = apply_temperature(smooth_votes(p[part], a), t)
        params.append((round(a, 4), round(t, 3)))
    return out, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="an embedding run directory or zoo name")
    ap.add_argument("--data", default=None, help="the run's data at this path (a zoo model's fer2013.csv)")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    run = fermetric.load_run(args.run, device="cpu")
    if args.data:
        run.use_data(args.data)
    y = run.load_data()[args.split].labels.numpy()
    p = split_proba(run, args.split).astype(np.float64)
    print(f"{args.run} {args.split}: {len(y)} faces, accuracy {(p.argmax(1) == y).mean() * 100:.2f} %, "
          f"{(p[np.arange(len(y)), y] == 0).mean() * 100:.1f} % with no vote for the true class")
    rows = [("none", p, "")]
    for method in ("vote_smoothing", "temperature"):
        q, params = cross_fitted(p, y, method)
        rows.append((method, q, [round(v, 4) for v in params]))
    q, params = smoothing_then_temperature(p, y)
    rows.append(("smoothing, then temperature", q, params))
    for name, q, params in rows:
        c = calibration_metrics(q, y)
        print(f"  {name:28s} ECE {c['ece'] * 100:5.2f} %  NLL {c['nll']:.4f}  Brier {c['brier']:.4f}  {params}")


if __name__ == "__main__":
    main()
