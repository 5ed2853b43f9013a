"""umap's numba kernels are kept on disk (issue 26: the demo's first UMAP compiled for 15-50 s in
every new process)."""
from __future__ import annotations

import sys

import pytest


def test_umap_kernels_are_cached_once():
    pytest.importorskip("umap")
    import umap  # noqa: F401  (loads the modules whose kernels are checked)
    from numba.core.registry import CPUDispatcher

    from fermetric.analysis.projection import cache_umap_kernels

    cache_umap_kernels()  # (earlier tests in this process may have switched them on already)
    kernels = [obj for name, mod in list(sys.modules.items()) if mod is not None and name.split(".")[0] == "umap"
               for obj in vars(mod).values() if isinstance(obj, CPUDispatcher)]
    assert len(kernels) > 50, "umap's kernels are no longer numba CPUDispatchers: revisit cache_umap_kernels"
    assert all(k._cache_enabled_by_fermetric and k._cache.__class__.__name__ != "NullCache" for k in kernels)
    assert cache_umap_kernels() == 0  # nothing left to switch on
