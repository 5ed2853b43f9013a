"""Collapse detection (fermetric.training.collapse): fires on a collapsed embedding, stays
silent on a narrow but separable cone, and stops a run with metric.stop_on_collapse."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_TRAIN_ARGS, run_cli
from fermetric.training.collapse import check_collapse, embedding_stats, majority_share


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _narrow_cone(rng, n_per=40, classes=7, d=32, width=0.015):
    """Classes at distinct small offsets around one direction: mean cosine > 0.99, yet separable."""
    axis = np.zeros(d)
    axis[0] = 1.0
    offsets = width * rng.normal(size=(classes, d))
    offsets[:, 0] = 0
    labels = np.repeat(np.arange(classes), n_per)
    emb = axis + offsets[labels] + 0.1 * width * rng.normal(size=(len(labels), d))
    return _unit(emb), labels


def test_stats_by_hand():
    # two orthogonal unit vectors: mean cosine 0, mean (1/2, 1/2): spread sqrt(1 - 1/2)
    cos, spread, rank = embedding_stats(np.eye(2))
    assert cos == pytest.approx(0.0) and spread == pytest.approx(np.sqrt(0.5))
    assert rank == pytest.approx(1.0)  # centred, the two points lie on one line
    cos, spread, rank = embedding_stats(np.ones((5, 3)))
    assert cos == pytest.approx(1.0) and spread == pytest.approx(0.0, abs=1e-7) and rank == 0.0
    assert majority_share(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 2])) == 0.5


def test_fires_on_collapse_silent_on_narrow_separable_cone():
    from fermetric.retrieval import KNNClassifier

    rng = np.random.default_rng(0)
    cone, labels = _narrow_cone(rng)
    cone_q, labels_q = _narrow_cone(np.random.default_rng(0))  # same class offsets, fresh noise below
    cone_q = _unit(cone_q + 0.002 * rng.normal(size=cone_q.shape))
    knn = KNNClassifier(k=10).fit(cone, labels)
    acc = float((knn.predict(cone_q) == labels_q).mean())
    maj = majority_share(labels, labels_q)
    assert embedding_stats(cone_q)[0] > 0.99  # the old rule (mean cosine > 0.95) called this collapse
    check = check_collapse(cone_q, acc, maj)
    assert acc > 0.9 and not check.collapsed, check

    # collapse: every image near one point, kNN at the majority share
    point = _unit(np.ones((280, 32)) + 0.01 * rng.normal(size=(280, 32)))
    check = check_collapse(point, knn_accuracy=maj, majority=maj)
    assert check.collapsed and "commonest class" in check.reason
    # one point exactly: collapsed whatever the accuracy
    assert check_collapse(np.ones((50, 8)), knn_accuracy=0.9, majority=0.2).collapsed
    # broad but unlearnt (random embeddings at chance): not collapse
    assert not check_collapse(_unit(rng.normal(size=(280, 32))), knn_accuracy=maj, majority=maj).collapsed


def test_stop_on_collapse_stops_and_says_what_to_change(tmp_path):
    # a learning rate this large drives the contrastive model to one point within an epoch
    out = tmp_path / "r"
    run_cli(["train-siamese", "--epochs", "6", "--out", str(out), *TINY_TRAIN_ARGS,
                   "--set", "metric.m_per_class=4", "--set", "optim.lr=5.0", "--set", "metric.ce_weight=0",
                   "--set", "metric.stop_on_collapse=true", "--set", "metric.collapse_patience=1"])
    m = json.loads((out / "metrics.json").read_text())
    log = (out / "train.log").read_text()
    assert m["epochs_run"] < 6 and m["stopped_early"], m["epochs_run"]
    assert "embedding collapse" in log and "optim.lr" in log and "Stopping" in log
    assert m["sittings"][-1]["end"].startswith("stopped: embedding collapse")
