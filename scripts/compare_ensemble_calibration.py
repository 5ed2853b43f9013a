"""An ensemble's calibration before and after, on a split no calibration parameter was fitted on:
the split is cut in two halves (the seeded shuffle `cross_fitted` uses); each half is scored with
parameters fitted on the other half only. Rows:

- none: the members' raw probabilities (softmax with the member's TTA, kNN vote fractions), voted;
- members calibrated: each member calibrated as `fermetric calibrate` would (temperature for a
  classifier's softmax, additive smoothing for a kNN vote), then voted: what an ensemble of
  calibrated members gives (`CalibratedScorer` members);
- a temperature on the vote: the raw vote, then one temperature;
- both: calibrated members, then a temperature on their vote.

The numbers behind the README's ensemble calibration table:

    python scripts/compare_ensemble_calibration.py fer2013-ensemble --data fer2013-dev.csv.gz [--split val]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fermetric
from fermetric.evaluation.calibration import (
    CALIBRATIONS, apply_temperature, calibration_metrics, fit_temperature,
)
from fermetric.runs.ensemble import EnsembleRun
from fermetric.scoring import split_proba
from fermetric.scoring.ensemble import soft_vote


def member_method(member) -> str:
    return "temperature" if member.scorer == "classifier" else "vote_smoothing"


def halves(n: int, seed: int = 0) -> list[np.ndarray]:
    """The two parts `fermetric.evaluation.calibration.cross_fitted` cuts (same shuffle)."""
    return np.array_split(np.random.default_rng(seed).permutation(n), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble", help="an ensemble zoo name (e.g. fer2013-ensemble)")
    ap.add_argument("--data", default=None, help="the members' data at this path (the zoo's fer2013.csv)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=0, help="the halves' shuffle")
    args = ap.parse_args()
    t0 = time.perf_counter()
    run = fermetric.load_run(args.ensemble, device="cpu", precision="fp32")
    if not isinstance(run, EnsembleRun):
        raise SystemExit(f"error: {args.ensemble} is a {run.kind} run, not an ensemble")
    if args.data:
        run.use_data(args.data)
    y = run.load_data()[args.split].labels.numpy()
    raw = [split_proba(m.run, args.split, m.tta or False).astype(np.float64) for m in run.members]
    parts = halves(len(y), args.seed)
    calibrated = [np.empty_like(p) for p in raw]
    fitted: list[list[float]] = [[] for _ in raw]
    for part in parts:
        rest = np.setdiff1d(np.arange(len(y)), part)
        for i, (m, p) in enumerate(zip(run.members, raw)):
            _, fit, apply = CALIBRATIONS[member_method(m)]
            value = fit(p[rest], y[rest])
            calibrated[i][part] = apply(p[part], value)
            fitted[i].append(round(float(value), 4))
    vote_raw = soft_vote(raw, run.weights)
    vote_cal = soft_vote(calibrated, run.weights)

    def then_temperature(vote: np.ndarray) -> tuple[np.ndarray, list[float]]:
        out, ts = np.empty_like(vote), []
        for part in parts:
            rest = np.setdiff1d(np.arange(len(y)), part)
            t = fit_temperature(vote[rest], y[rest])
            out[part] = apply_temperature(vote[part], t)
            ts.append(round(float(t), 3))
        return out, ts

    rows = [("none", vote_raw, ""), ("members calibrated", vote_cal, "")]
    rows.append(("a temperature on the vote", *then_temperature(vote_raw)))
    rows.append(("members calibrated, then a temperature", *then_temperature(vote_cal)))
    print(f"{args.ensemble} on {args.split}: {len(y)} faces, {len(run.members)} members, weights "
          f"{[round(w, 3) for w in run.weights]}; halves' parameters in brackets")
    for m, p, f in zip(run.members, raw, fitted):
        c = calibration_metrics(p, y)
        print(f"  member {m.label or m.run.name} ({m.scorer}{', TTA ' + m.tta if m.tta else ''}): accuracy "
              f"{(p.argmax(1) == y).mean() * 100:.2f} %, ECE {c['ece'] * 100:.2f} %, {member_method(m)} {f}")
    for name, p, params in rows:
        c = calibration_metrics(p, y)
        print(f"  {name:40s} accuracy {(p.argmax(1) == y).mean() * 100:.2f} %  ECE {c['ece'] * 100:5.2f} %  "
              f"NLL {c['nll']:.4f}  Brier {c['brier']:.4f}  {params}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
