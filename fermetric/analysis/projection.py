"""2-D projections of embeddings (UMAP by default; PCA and t-SNE as options) for plots."""
from __future__ import annotations

import numpy as np

from fermetric.errors import ConfigError

PROJECTIONS = ("umap", "pca", "tsne")


def project_2d(embeddings: np.ndarray, method: str = "umap", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """(N, D) embeddings -> (N, 2) coordinates.

    UMAP uses the cosine metric (embeddings are compared by cosine everywhere in fermetric) and a
    fixed random_state, so the same seed gives the same picture.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need (N, D) embeddings with N >= 3 to project; got shape {x.shape}")
    method = method.lower()
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity, metric="cosine").fit_transform(x)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba / n_jobs chatter with a fixed random_state
            reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine",
                                random_state=seed, min_dist=0.1)
            return reducer.fit_transform(x)
    raise ConfigError(f"unknown projection {method!r}; valid: {', '.join(PROJECTIONS)}")
