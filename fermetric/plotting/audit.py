"""Duplicate pairs of a data audit side by side, with their splits, labels and Hamming distance."""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fermetric.data.dataset import DataSplits  # noqa: E402


def plot_duplicate_pairs(duplicates: Sequence[dict[str, Any]], splits: DataSplits, per_row: int = 8,
                         title: str = "") -> Figure:
    """Each duplicate pair ({a, i, b, j, distance, exact, label_a, label_b}, as
    fermetric.data.audit lists them) as two faces side by side, `per_row` pairs a row; a pair
    whose labels differ is titled in red."""
    n = max(len(duplicates), 1)
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 0.9, rows * 1.15 + 0.4), squeeze=False)
    names = splits.class_names
    for ax in axes.ravel():
        ax.axis("off")
    for k, d in enumerate(duplicates):
        r, c = divmod(k, per_row)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.imshow(splits[d["a"]].images[d["i"], 0].numpy(), cmap="gray", vmin=0, vmax=255)
        right.imshow(splits[d["b"]].images[d["j"], 0].numpy(), cmap="gray", vmin=0, vmax=255)
        colour = "black" if d["label_a"] == d["label_b"] else "red"
        left.set_title(f"{d['a']} {names[d['label_a']]}", fontsize=6, color=colour)
        right.set_title(f"{d['b']} {names[d['label_b']]} · d{d['distance']}", fontsize=6, color=colour)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
