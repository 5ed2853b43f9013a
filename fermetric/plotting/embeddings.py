"""Scatter plot of 2-D embedding projections coloured by class, with class centroids."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def plot_embedding_2d(
    coords: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    title: Optional[str] = None,
    ax: Optional[Axes] = None,
    max_points: int = 20000,
    seed: int = 0,
) -> Figure:
    """coords (N, 2), labels (N,): one colour per class, a legend, and each class centroid as a
    labelled marker. At most `max_points` points are drawn (a seeded subsample)."""
    coords, labels = np.asarray(coords), np.asarray(labels)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
    else:
        fig = ax.figure
    idx = np.arange(len(coords))
    if len(idx) > max_points:
        idx = np.random.default_rng(seed).choice(idx, max_points, replace=False)
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        sel = idx[labels[idx] == c]
        if len(sel) == 0:
            continue
        ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.55, color=cmap(c % 10), label=f"{name} ({int((labels == c).sum())})")
    for c, name in enumerate(class_names):
        pts = coords[labels == c]
        if len(pts):
            cx, cy = pts.mean(0)
            ax.scatter([cx], [cy], s=160, marker="X", color=cmap(c % 10), edgecolor="black", linewidth=1.2, zorder=5)
            ax.annotate(name, (cx, cy), xytext=(6, 6), textcoords="offset points", fontsize=9, weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, markerscale=2.5, title="class (n)")
    ax.set_title(title or "embedding projection (X = class centroid)")
    fig.tight_layout()
    return fig
