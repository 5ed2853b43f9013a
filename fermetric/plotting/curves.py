"""Training curves from history.csv rows."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_history(rows: Sequence[dict], title: Optional[str] = None) -> Figure:
    """Loss (left) and accuracy (right) per epoch, train and val, from history rows
    (keys epoch, train_loss, val_loss, train_acc, val_acc; missing keys are skipped)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [float(r["epoch"]) for r in rows]

    def series(key: str) -> Optional[list[float]]:
        vals = [r.get(key) for r in rows]
        if not vals or any(v in (None, "") for v in vals):
            return None
        return [float(v) for v in vals]

    for ax, keys, label in ((ax_loss, ("train_loss", "val_loss"), "loss"), (ax_acc, ("train_acc", "val_acc"), "accuracy")):
        for key in keys:
            ys = series(key)
            if ys is not None:
                ax.plot(epochs, ys, marker="o", ms=3, label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
