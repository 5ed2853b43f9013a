"""Reliability diagram: accuracy against confidence per bin, with the bins' image counts."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def plot_reliability(bins: Sequence[dict[str, Any]], title: str = "", ece: Optional[float] = None) -> Figure:
    """Bars of each bin's accuracy at its confidence range, the diagonal of perfect calibration,
    and below them the number of images per bin (empty bins drawn as gaps).

    Args:
        bins: fermetric.evaluation.calibration.reliability_bins output (lower, upper, count,
            confidence, accuracy).
        ece: the expected calibration error, shown in the title when given.
    """
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else np.nan for b in bins])
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.2, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(lower, acc, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.scatter(conf, acc, s=10, color="#dd8452", zorder=3, label="mean confidence")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    head = title + (f"\nECE {ece * 100:.2f} %" if ece is not None else "")
    ax.set_title(head, fontsize=9)
    ax_n.bar(lower, counts, width=width, align="edge", color="#8c8c8c", edgecolor="white")
    ax_n.set_ylabel("images", fontsize=8)
    ax_n.set_xlabel("confidence (top-class probability)")
    ax_n.set_xlim(0, 1)
    fig.tight_layout()
    return fig
