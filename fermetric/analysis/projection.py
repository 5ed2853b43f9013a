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

        cache_umap_kernels()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba / n_jobs chatter with a fixed random_state
            reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine",
                                random_state=seed, min_dist=0.1)
            return reducer.fit_transform(x)
    raise ConfigError(f"unknown projection {method!r}; valid: {', '.join(PROJECTIONS)}")


def cache_umap_kernels() -> int:
    """Have numba keep umap's compiled kernels on disk (beside umap's modules, else in numba's user
    cache folder). umap compiles its ~120 numba functions without `cache=True`, so every new
    process paid the compile again: 15 s of a first UMAP on a 2-core EPYC (Zen 4), ~50 s on the
    AVX2-only one, where a cached kernel loads in ~1 s. Returns how many kernels were switched on
    (0 where numba or umap changed and this no longer applies: then UMAP compiles as before)."""
    import sys

    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return 0
    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "umap" or name.startswith("umap.")):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, CPUDispatcher) and not getattr(obj, "_cache_enabled_by_fermetric", False):
                try:
                    obj.enable_caching()
                    obj._cache_enabled_by_fermetric = True
                    switched += 1
                except Exception:  # noqa: BLE001 - a kernel numba cannot cache compiles as before
                    pass
    return switched
