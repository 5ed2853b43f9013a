"""The study's results tables: one row per model and seed (results.csv, results.md), and the
mean ± standard deviation over seeds when a model was trained with more than one."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fermetric.utils.io import atomic_write_text

LEAD_COLUMNS = ("model", "family", "backbone", "seed", "data", "split", "accuracy", "macro_f1", "ece", "nll", "brier",
                "val_accuracy", "tta", "tta_accuracy", "parameters", "train_seconds", "epochs_run", "best_epoch", "run")


def result_row(name: str, family: str, backbone: str, seed: int, data: str, split: str, metrics: dict[str, Any],
               val_metrics: Optional[dict[str, Any]] = None, tta: Optional[str] = None,
               tta_metrics: Optional[dict[str, Any]] = None, parameters: Optional[int] = None,
               train_seconds: Optional[float] = None, epochs_run: Any = None, best_epoch: Any = None,
               run: str = "", calibration: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One row: headline numbers of `split` (with `calibration`: ECE / NLL / Brier of its
    probabilities), then the F1 of every class (f1_<class>)."""
    row: dict[str, Any] = {
        "model": name, "family": family, "backbone": backbone, "seed": seed, "data": data, "split": split,
        "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
        **{k: (calibration or {}).get(k) for k in ("ece", "nll", "brier")},
        "val_accuracy": (val_metrics or {}).get("accuracy"), "tta": tta or "",
        "tta_accuracy": (tta_metrics or {}).get("accuracy"), "parameters": parameters,
        "train_seconds": train_seconds, "epochs_run": epochs_run, "best_epoch": best_epoch, "run": run,
    }
    for cls, v in (metrics.get("per_class") or {}).items():
        row[f"f1_{cls}"] = v.get("f1")
    return row


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols = list(LEAD_COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def rows_to_csv(rows: Sequence[dict[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """CSV text of `rows`; columns: LEAD_COLUMNS then any other key, unless given."""
    columns = _columns(rows) if columns is None else columns
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    return buf.getvalue()


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v) * 100:.2f}"


def _params(v: Any) -> str:
    return "–" if v is None else (f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.1f} k")


def _secs(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min"


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (in first-seen order): mean and sample standard deviation over its seeds of
    accuracy, macro-F1 and each class's F1 ("<key>_mean", "<key>_std", "n_seeds")."""
    order: list[str] = []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["model"] not in by:
            order.append(r["model"])
        by.setdefault(r["model"], []).append(r)
    keys = ["accuracy", "macro_f1", "tta_accuracy"] + [k for k in _columns(rows) if k.startswith("f1_")]
    out = []
    for name in order:
        rs = by[name]
        s: dict[str, Any] = {"model": name, "family": rs[0]["family"], "split": rs[0]["split"], "n_seeds": len(rs),
                             "seeds": " ".join(str(r["seed"]) for r in rs)}
        for k in keys:
            vals = np.array([r[k] for r in rs if r.get(k) is not None], dtype=float)
            s[f"{k}_mean"] = float(vals.mean()) if vals.size else None
            s[f"{k}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else None
        out.append(s)
    return out


def rows_to_markdown(rows: Sequence[dict[str, Any]], class_names: Sequence[str],
                     explanations: Optional[dict[str, Any]] = None) -> str:
    """results.md: the per-run table, then (several seeds) mean ± std per model, then (data with
    evidence masks) the mask mass ratio and pointing game of every method on every model.

    Args:
        explanations: the study's faithfulness table (explain_eval.json: split, n_images,
            masks, rows), or None.
    """
    has_tta = any(r.get("tta_accuracy") is not None for r in rows)
    has_cal = any(r.get("ece") is not None for r in rows)
    head = ["model", "family", "seed", "split", "accuracy %", "macro-F1 %"] + (["ECE % / NLL / Brier"] if has_cal else []) \
        + (["TTA acc. %"] if has_tta else []) \
        + [f"F1 {c}" for c in class_names] + ["parameters", "train time", "epochs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("model", "family", "split") else "---:" for h in head) + "|"]
    for r in rows:
        cells = [r["model"], r["family"], str(r["seed"]), r["split"], _pct(r["accuracy"]), _pct(r["macro_f1"])]
        if has_cal:
            cells.append("–" if r.get("ece") is None else f"{_pct(r['ece'])} / {r['nll']:.3f} / {r['brier']:.3f}")
        if has_tta:
            cells.append(_pct(r.get("tta_accuracy")) + (f" ({r['tta']})" if r.get("tta_accuracy") is not None else ""))
        cells += ["–" if r.get(f"f1_{c}") is None else f"{r[f'f1_{c}']:.3f}" for c in class_names]
        cells += [_params(r.get("parameters")), _secs(r.get("train_seconds")), str(r.get("epochs_run") or "–")]
        lines.append("| " + " | ".join(cells) + " |")
    data = sorted({str(r["data"]) for r in rows})
    text = f"Data: {', '.join(data)}. Accuracy, macro-F1 and per-class F1 on the split named in each row " \
           f"(the best epoch, selected on val)" + ("; ECE (15 equal-width bins), NLL and Brier score of the probabilities the row's "
           "accuracy comes from (softmax, kNN vote or the ensemble's vote)" if has_cal else "") + ".\n\n" + "\n".join(lines) + "\n"
    summary = summarize(rows)
    if any(s["n_seeds"] > 1 for s in summary):
        def pm(s: dict[str, Any], k: str) -> str:
            m, sd = s.get(f"{k}_mean"), s.get(f"{k}_std")
            return "–" if m is None else (f"{m * 100:.2f} ± {sd * 100:.2f}" if sd is not None else f"{m * 100:.2f}")

        head = ["model", "seeds", "accuracy %", "macro-F1 %"] + (["TTA acc. %"] if has_tta else [])
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        for s in summary:
            lines.append("| " + " | ".join([s["model"], s["seeds"], pm(s, "accuracy"), pm(s, "macro_f1")]
                                             + ([pm(s, "tta_accuracy")] if has_tta else [])) + " |")
        text += "\nMean ± sample standard deviation over seeds:\n\n" + "\n".join(lines) + "\n"
    if explanations:
        from fermetric.analysis import evidence_table_markdown

        evidence = evidence_table_markdown(explanations["rows"])
        if evidence:
            text += (f"\nExplanations against the data's evidence masks ({explanations['n_images']} {explanations['split']} "
                     "images, the true class explained): mask mass ratio / pointing game per method and model. "
                     "Mask mass ratio: share of positive attribution inside the mask over the mask's share of "
                     "the image (1 = no better than uniform); pointing game: share of maps whose top pixel "
                     "lies in the mask (2-pixel tolerance). Deletion / insertion AUCs: explain_eval/explain_eval.md.\n\n"
                     + evidence)
    return text


def write_results(out: Path, rows: Sequence[dict[str, Any]], class_names: Sequence[str],
                  explanations: Optional[dict[str, Any]] = None) -> dict[str, Path]:
    """results.csv, results.md and (several seeds of a model) results_summary.csv;
    `explanations`: see `rows_to_markdown`."""
    paths = {"results.csv": atomic_write_text(out / "results.csv", rows_to_csv(rows)),
             "results.md": atomic_write_text(out / "results.md", rows_to_markdown(rows, class_names, explanations))}
    summary = summarize(rows)
    if any(s["n_seeds"] > 1 for s in summary):
        paths["results_summary.csv"] = atomic_write_text(out / "results_summary.csv", rows_to_csv(summary, list(summary[0])))
    return paths

