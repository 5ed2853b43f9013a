"""Reproducible explanations (issue 24): every sampled method takes a seed, and the same seed gives
the same map bit for bit on CPU (a new seed, another map)."""
from __future__ import annotations

import numpy as np
import pytest

from fermetric.analysis import explain
from fermetric.runs import load_run


@pytest.mark.parametrize("method, options", [("lime", {"num_samples": 60}), ("smoothgrad", {})])
def test_same_seed_same_map_bit_for_bit(method: str, options: dict, classifier_run):
    run = load_run(classifier_run, device="cpu", precision="fp32")
    sc = run.scorer("classifier", compile=False)
    images = run.load_data()["val"].float_images(np.arange(3))
    a = explain(sc, images, method, seed=7, **options)
    b = explain(sc, images, method, seed=7, **options)
    c = explain(sc, images, method, seed=8, **options)
    assert a.dtype == np.float32 and a.shape == (3, 48, 48)
    assert np.array_equal(a, b), f"{method}: the same seed gave another map"
    assert not np.array_equal(a, c), f"{method}: another seed gave the same map (is the seed used?)"
