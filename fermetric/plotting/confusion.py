"""Confusion-matrix figures with class names: one matrix, or a grid of models side by side."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fermetric.errors import DataError


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Rows divided by their sums (a class with no images keeps a row of zeros)."""
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm, dtype=np.float64), where=sums > 0)


def _draw(ax: Axes, cm: np.ndarray, class_names: Sequence[str], normalize: bool, fontsize: float = 8,
          labels: bool = True):
    """The heat map with a number in every cell; returns the image (for a colour bar)."""
    shown = row_normalize(cm) if normalize else cm
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names) if labels else [], rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(ticks, labels=list(class_names) if labels else [], fontsize=fontsize)
    # white text on dark cells: half the colour scale (fixed at 0.5 for rates)
    threshold = 0.5 if normalize else (shown.max() / 2 if shown.size else 0)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize - 1,
                    color="white" if shown[i, j] > threshold else "black")
    return im


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
    if ax is None:
        size = max(4.5, 0.75 * len(class_names) + 2)
        fig, ax = plt.subplots(figsize=(size, size * 0.85))
    else:
        fig = ax.figure
    im = _draw(ax, cm, class_names, normalize)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    fig.tight_layout()
    return fig


def plot_confusion_grid(
    panels: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    ncols: Optional[int] = None,
    title: Optional[str] = None,
) -> Figure:
    """Row-normalised confusion matrices of several models side by side (the studies' six-matrix
    figure), each panel titled with its name and accuracy, one shared colour bar.

    Args:
        panels: one mapping per model with "name", "confusion" ((C, C) counts, rows = true
            class) and "accuracy" (a fraction; shown as a percentage).
        class_names: the C class names every panel shares.
        ncols: panels per row (default: 3 for up to 6 panels, else 4).
        title: figure title.
    """
    if not panels:
        raise DataError("plot_confusion_grid needs at least one panel")
    c = len(class_names)
    mats = []
    for p in panels:
        cm = np.asarray(p["confusion"], dtype=np.float64)
        if cm.shape != (c, c):
            raise DataError(f"confusion matrix of {p.get('name')!r} has shape {cm.shape}; expected ({c}, {c}) "
                            "for the class names given")
        mats.append(cm)
    n = len(panels)
    ncols = int(ncols or (min(n, 3) if n <= 6 else 4))
    nrows = math.ceil(n / ncols)
    cell = max(3.0, 0.42 * c + 1.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + 0.8, cell * nrows + (0.5 if title else 0.1)),
                             squeeze=False)
    im = None
    for k, (p, cm) in enumerate(zip(panels, mats)):
        ax = axes[k // ncols, k % ncols]
        im = _draw(ax, cm, class_names, True, fontsize=7, labels=True)
        acc = p.get("accuracy")
        acc_text = f" ({float(acc) * 100:.1f} %)" if acc is not None and np.isfinite(float(acc)) else ""
        ax.set_title(f"{p['name']}{acc_text}", fontsize=9)
        if k % ncols == 0:
            ax.set_ylabel("true", fontsize=8)
        if k // ncols == nrows - 1 or k + ncols >= n:
            ax.set_xlabel("predicted", fontsize=8)
    for k in range(n, nrows * ncols):
        axes[k // ncols, k % ncols].axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if im is not None:  # one colour bar in the margin tight_layout left free
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.2, 0.015, 0.6)), label="fraction of true class")
    return fig
