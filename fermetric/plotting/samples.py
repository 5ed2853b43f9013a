"""A grid of sample images: one row per class, labelled with the class name and its count."""
from __future__ import annotations

from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fermetric.data.dataset import FERDataset  # noqa: E402
from fermetric.utils.checks import check_int  # noqa: E402


def sample_grid(
    dataset: FERDataset,
    per_class: int = 8,
    seed: int = 0,
    masks: bool = False,
    title: Optional[str] = None,
) -> Figure:
    """Random images of every class, a row per class.

    Args:
        dataset: images (N, 1, 48, 48) uint8 with labels; masks (N, 48, 48) used when `masks`.
        per_class: images per row (fewer where a class has fewer; empty cells stay blank).
        seed: picks the images.
        masks: overlay the evidence masks in red (ignored when the dataset has none).
        title: figure title.

    Returns:
        The Figure (the caller saves or closes it).
    """
    check_int("per_class", per_class, 1)
    n_cls = dataset.num_classes
    show_masks = bool(masks) and dataset.masks is not None
    g = torch.Generator().manual_seed(int(seed))
    counts = dataset.class_counts()
    # Fixed margins in inches (1 inch per image, 1.2 for the class labels, 0.3 for the title):
    # subplots_adjust is far cheaper than tight_layout on dozens of axes.
    width, height = 1.0 * per_class + 1.2, 1.0 * n_cls + (0.3 if title else 0.0) + 0.1
    fig, axes = plt.subplots(n_cls, per_class, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=1.2 / width, right=1 - 0.05 / width, bottom=0.05 / height,
                        top=1 - ((0.3 if title else 0.0) + 0.05) / height, wspace=0.05, hspace=0.05)
    for c in range(n_cls):
        idx = torch.nonzero(dataset.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                i = int(idx[j])
                ax.imshow(dataset.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                if show_masks:
                    m = dataset.masks[i].numpy()
                    overlay = np.zeros((*m.shape, 4), dtype=np.float32)
                    overlay[m] = (1.0, 0.1, 0.1, 0.45)
                    ax.imshow(overlay, interpolation="nearest")
        axes[c, 0].set_ylabel(f"{dataset.class_names[c]}\n({counts[c]:,})", rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.04 / height, va="top")
    return fig
