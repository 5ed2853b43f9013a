"""Confusion-matrix figure with class names."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def plot_confusion(
    cm: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    normalize: bool = True,
    ax: Optional[Axes] = None,
    title: Optional[str] = None,
) -> Figure:
    """Heat map of a (C, C) confusion matrix (rows = true class), annotated in every cell.

    Args:
        cm: raw counts; rows are normalised here when `normalize`.
        class_names: C names for the axes.
    """
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm
    if normalize:
        sums = cm.sum(axis=1, keepdims=True)
        shown = np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)
    if ax is None:
        size = max(4.5, 0.75 * len(class_names) + 2)
        fig, ax = plt.subplots(figsize=(size, size * 0.85))
    else:
        fig = ax.figure
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    fig.tight_layout()
    return fig
