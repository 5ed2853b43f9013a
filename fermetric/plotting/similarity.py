"""Two faces and what makes them similar: each face beside its similarity map (red raises the
cosine of the two embeddings, blue lowers it), titled with the probability of the same expression."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_similarity_pair(face_a: np.ndarray, face_b: np.ndarray, map_a: np.ndarray, map_b: np.ndarray,
                         title: str = "") -> Figure:
    """face_*: (48, 48) gray faces; map_*: (48, 48) signed similarity maps (fermetric.analysis.similarity_maps)."""
    fig, axes = plt.subplots(1, 4, figsize=(7.2, 2.2))
    scale = float(max(np.abs(map_a).max(), np.abs(map_b).max(), 1e-12))
    for k, (face, m, name) in enumerate(((face_a, map_a, "A"), (face_b, map_b, "B"))):
        axes[2 * k].imshow(face, cmap="gray")
        axes[2 * k].set_title(f"face {name}", fontsize=8)
        axes[2 * k + 1].imshow(face, cmap="gray")
        axes[2 * k + 1].imshow(m, cmap="bwr", vmin=-scale, vmax=scale, alpha=0.6)
        axes[2 * k + 1].set_title(f"what makes {name} similar", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
