"""A row per query face: the face (its label and the kNN's prediction) and its nearest training
faces, each titled with its label, similarity and vote weight; neighbours that voted for the
prediction are framed green, the others red."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_neighbours(queries: np.ndarray, query_labels: Sequence[int], neighbours, gallery_images: Optional[np.ndarray],
                    class_names: Sequence[str], show: int = 8, title: str = "") -> Figure:
    """Args:
        queries: (M, 48, 48) uint8 or float query faces.
        neighbours: a fermetric.analysis.neighbours.Neighbours of those queries.
        gallery_images: (N, 48, 48) training faces, or None (a pretrained model without its data:
            the cells then show only the neighbour's label, similarity and weight).
        show: neighbours drawn per row (the first `show` of k; the row title gives the weight they carry).
    """
    m = len(queries)
    show = min(show, neighbours.index.shape[1])
    fig, axes = plt.subplots(m, show + 1, figsize=(1.25 * (show + 1), 1.45 * m + 0.3), squeeze=False)
    for q in range(m):
        pred = int(neighbours.predicted[q])
        ax = axes[q, 0]
        ax.imshow(queries[q], cmap="gray")
        ax.set_title(f"{class_names[int(query_labels[q])]} -> {class_names[pred]}\n"
                     f"p {neighbours.proba[q, pred]:.2f}", fontsize=6.5,
                     color="black" if int(query_labels[q]) == pred else "red")
        for j in range(show):
            ax = axes[q, j + 1]
            i, lab = int(neighbours.index[q, j]), int(neighbours.labels[q, j])
            if gallery_images is not None and i >= 0:
                ax.imshow(gallery_images[i], cmap="gray")
            else:
                ax.set_facecolor("0.9")
            colour = "green" if lab == pred else "red"
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(2)
            name = class_names[lab] if lab >= 0 else "-"
            ax.set_title(f"{name}\ns {neighbours.similarity[q, j]:.2f} w {neighbours.weight[q, j]:.2f}", fontsize=6,
                         color=colour)
        for ax in axes[q]:
            ax.set_xticks([])
            ax.set_yticks([])
        shown = neighbours.weight[q, :show].sum()
        axes[q, -1].text(1.05, 0.5, f"{shown * 100:.0f} % of\nthe vote", transform=axes[q, -1].transAxes,
                         fontsize=6, va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
