"""Classification metrics: accuracy, macro-F1, per-class precision / recall / F1, confusion
matrices (raw and row-normalised). Computed with scikit-learn; returned as plain JSON-ready dicts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Metrics of predicted class ids against true ones.

    Args:
        y_true, y_pred: (N,) class ids in [0, len(class_names)).
        class_names: names of the C classes.

    Returns:
        {"n", "accuracy", "macro_f1", "per_class": {name: {precision, recall, f1, support}},
         "confusion": (C, C) list (rows = true class), "confusion_normalized": rows sum to 1
         (a class with no images has a row of zeros), "class_names"}.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} entries but y_pred has {y_pred.shape[0]}")
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    row_sums = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=np.float64), where=row_sums > 0)
    present = support > 0  # macro-F1 over classes that occur, as sklearn's default does
    return {
        "n": int(y_true.size),
        "accuracy": float((y_true == y_pred).mean()) if y_true.size else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": cm.tolist(),
        "confusion_normalized": np.round(cm_norm, 6).tolist(),
        "class_names": list(class_names),
    }


def metrics_to_markdown(metrics: dict[str, Any], title: str = "") -> str:
    """A markdown summary: headline numbers and the per-class table."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"accuracy **{metrics['accuracy'] * 100:.2f} %**, macro-F1 **{metrics['macro_f1'] * 100:.2f} %** (n = {metrics['n']})",
        "",
    ]
    cal = metrics.get("calibration")
    if cal:
        lines += [f"calibration of the probabilities: ECE {cal['ece'] * 100:.2f} % ({cal['binning']}), "
                  f"NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}", ""]
    lines += [
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    return "\n".join(lines) + "\n"


def write_metrics(out_dir: str | Path, name: str, metrics: dict[str, Any], title: str) -> list[Path]:
    """Write OUT/<name>.json, <name>.md (metrics_to_markdown), <name>_confusion.png (row-normalised
    confusion matrix) and, when the metrics carry "calibration", <name>_reliability.png (reliability
    diagram) of `classification_metrics` output; returns the paths written."""
    from fermetric.plotting import save_figure
    from fermetric.plotting.confusion import plot_confusion
    from fermetric.utils.io import atomic_write_text, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / f"{name}.json", metrics)]
    paths.append(atomic_write_text(out / f"{name}.md", metrics_to_markdown(metrics, title)))
    fig = plot_confusion(metrics["confusion"], metrics["class_names"], normalize=True, title=title)
    paths.append(save_figure(fig, out / f"{name}_confusion.png"))
    cal = metrics.get("calibration")
    if cal:
        from fermetric.plotting.calibration import plot_reliability

        paths.append(save_figure(plot_reliability(cal["bins"], title=title, ece=cal["ece"]), out / f"{name}_reliability.png"))
    return paths
