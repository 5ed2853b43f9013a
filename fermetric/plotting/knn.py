"""kNN evaluation figures: accuracy (and macro-F1) against k. The confusion matrix of a kNN
report is drawn by fermetric.plotting.confusion.plot_confusion."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def plot_accuracy_vs_k(
    ks: Sequence[int],
    accuracy: Sequence[float],
    macro_f1: Optional[Sequence[float]] = None,
    ax: Optional[Axes] = None,
    title: Optional[str] = None,
    chosen_k: Optional[int] = None,
) -> Figure:
    """Line plot of kNN accuracy (and optionally macro-F1) for each number of neighbours k.

    Args:
        ks: (K,) neighbour counts, increasing.
        accuracy: (K,) accuracies in [0, 1].
        macro_f1: (K,) macro-F1 in [0, 1], or None.
        ax: axes to draw on; a new figure when None.
        title: figure title.
        chosen_k: k used for the report's headline numbers; marked with a dashed line.
    """
    ks = np.asarray(ks)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if ks.shape != accuracy.shape:
        raise ValueError(f"ks has shape {ks.shape} but accuracy has shape {accuracy.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
    else:
        fig = ax.figure
    ax.plot(ks, accuracy * 100, marker="o", label="accuracy")
    if macro_f1 is not None:
        macro_f1 = np.asarray(macro_f1, dtype=np.float64)
        if macro_f1.shape != ks.shape:
            raise ValueError(f"ks has shape {ks.shape} but macro_f1 has shape {macro_f1.shape}")
        ax.plot(ks, macro_f1 * 100, marker="s", label="macro-F1")
    if chosen_k is not None:
        ax.axvline(chosen_k, color="grey", linestyle="--", linewidth=1, label=f"k = {chosen_k}")
    if ks.size and ks.max() / max(ks.min(), 1) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(ks, labels=[str(int(k)) for k in ks])
    ax.minorticks_off()
    shown = np.concatenate([accuracy, macro_f1 if macro_f1 is not None else []]) * 100
    if shown.size:  # a flat curve at 100 % would otherwise get an axis running past 100
        ax.set_ylim(max(0.0, shown.min() - 5), min(100.0, shown.max() + 5) + 1)
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "kNN accuracy against k")
    fig.tight_layout()
    return fig
