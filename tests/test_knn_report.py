"""knn_report / write_knn_report: known answers on separable data, MAP@R against a numpy
reference, the accuracy-against-k curve, and the files written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fermetric.errors import DataError
from fermetric.plotting.knn import plot_accuracy_vs_k
from fermetric.evaluation.knn_report import knn_report, write_knn_report
from fermetric.retrieval import KNNClassifier

NAMES = ["calm", "glad", "sad"]


def blobs(n_per_class, spread, seed, d=8, classes=3):
    centers = np.eye(d)[:classes] * 10  # orthogonal directions: far apart in cosine
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centers[y] + spread * rng.normal(size=(len(y), d))
    return x.astype(np.float32), y


def map_at_r_reference(q, yq, g, yg):
    """MAP@R and R-precision by their definitions (Musgrave et al. 2020), in float64 numpy."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ gn.astype(np.float64).T
    aps, rps = [], []
    for i in range(len(q)):
        r = int((yg == yq[i]).sum())
        rel = (yg[np.argsort(-sims[i], kind="stable")[:r]] == yq[i]).astype(float)
        precision = np.cumsum(rel) / np.arange(1, r + 1)
        aps.append((precision * rel).sum() / r)
        rps.append(rel.mean())
    return float(np.mean(aps)), float(np.mean(rps))


def test_separable_classes_score_perfectly():
    g, yg = blobs(30, 0.3, seed=0)
    q, yq = blobs(10, 0.3, seed=1)
    rep = knn_report(q, yq, g, yg, NAMES, k=5, ks=(1, 5, 25, 1000))
    assert rep["accuracy"] == 1.0 and rep["macro_f1"] == 1.0
    assert rep["precision_at_1"] == pytest.approx(1.0)
    assert rep["r_precision"] == pytest.approx(1.0)
    assert rep["mean_average_precision_at_r"] == pytest.approx(1.0)
    assert rep["confusion"] == [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    assert rep["confusion_normalized"] == np.eye(3).tolist()
    assert rep["accuracy_vs_k"]["k"] == [1, 5, 25]  # 1000 > gallery size is dropped
    assert rep["accuracy_vs_k"]["accuracy"] == [1.0, 1.0, 1.0]
    assert set(rep["per_class"]) == set(NAMES)
    assert rep["per_class"]["glad"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 10}
    assert (rep["n_query"], rep["n_gallery"], rep["dimension"], rep["n_queries_scored"]) == (30, 90, 8, 30)


def test_overlapping_classes_match_references():
    g, yg = blobs(60, 6.0, seed=2)
    q, yq = blobs(25, 6.0, seed=3)
    rep = knn_report(torch.from_numpy(q), torch.from_numpy(yq), g, yg, NAMES, k=7, ks=(1, 3, 7, 15),
                     weighting="majority")
    map_r, r_prec = map_at_r_reference(q, yq, g, yg)
    assert 0.3 < map_r < 0.95  # the data really is hard: the check below is not trivial
    assert rep["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-6)
    assert rep["r_precision"] == pytest.approx(r_prec, abs=1e-6)
    for kk, acc in zip(rep["accuracy_vs_k"]["k"], rep["accuracy_vs_k"]["accuracy"]):
        assert acc == pytest.approx(KNNClassifier(k=kk, weighting="majority", num_classes=3).fit(g, yg).score(q, yq))
    assert rep["accuracy"] == rep["accuracy_vs_k"]["accuracy"][2]
    p1 = KNNClassifier(k=1, num_classes=3).fit(g, yg).score(q, yq)
    assert rep["precision_at_1"] == pytest.approx(p1)
    cm = np.array(rep["confusion"])
    assert cm.sum() == 75 and np.trace(cm) == round(rep["accuracy"] * 75)


def test_retrieval_metrics_chunked_equal_unchunked(monkeypatch):
    import fermetric.evaluation.knn_report as report_mod

    g, yg = blobs(50, 5.0, seed=4)
    q, yq = blobs(20, 5.0, seed=5)
    whole = knn_report(q, yq, g, yg, NAMES)
    monkeypatch.setattr(report_mod, "_RETRIEVAL_CHUNK_ELEMENTS", 7 * 50)  # 7 queries a chunk
    chunked = knn_report(q, yq, g, yg, NAMES)
    for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert chunked[key] == pytest.approx(whole[key], abs=1e-9)


def test_query_class_absent_from_gallery_is_not_scored_for_retrieval():
    g, yg = blobs(20, 0.3, seed=6, classes=2)
    q, yq = blobs(5, 0.3, seed=7, classes=3)
    rep = knn_report(q, yq, g, yg, NAMES, k=3)
    assert rep["n_queries_scored"] == 10
    assert rep["mean_average_precision_at_r"] == pytest.approx(1.0)
    assert rep["per_class"]["sad"]["recall"] == 0.0 and rep["accuracy"] == pytest.approx(10 / 15)


def test_bad_inputs():
    g, yg = blobs(5, 0.3, seed=0)
    with pytest.raises(DataError, match="query has 4 dims; the gallery has 8"):
        knn_report(g[:, :4], yg, g, yg, NAMES)
    with pytest.raises(DataError, match="k=20 is more than the 15"):
        knn_report(g, yg, g, yg, NAMES, k=20)
    with pytest.raises(DataError, match="out of range for 3 classes"):
        knn_report(g, yg + 1, g, yg, NAMES, k=3)


def test_write_knn_report(tmp_path):
    g, yg = blobs(30, 4.0, seed=8)
    q, yq = blobs(10, 4.0, seed=9)
    rep = knn_report(q, yq, g, yg, NAMES, k=5)
    paths = write_knn_report(rep, tmp_path / "knn")
    assert [p.name for p in paths] == ["knn_report.json", "knn_report.md", "knn_accuracy_vs_k.png", "knn_confusion.png"]
    loaded = json.loads(paths[0].read_text())
    assert loaded["accuracy"] == rep["accuracy"] and loaded["accuracy_vs_k"] == rep["accuracy_vs_k"]
    md = paths[1].read_text()
    assert "| MAP@R |" in md and "| k | accuracy | macro-F1 |" in md and "| glad |" in md
    assert f"{rep['accuracy'] * 100:.2f} %" in md
    for png in paths[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_accuracy_vs_k_on_given_axes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    out = plot_accuracy_vs_k([1, 5, 10], [0.5, 0.6, 0.55], [0.4, 0.5, 0.45], ax=ax, chosen_k=5)
    assert out is fig and len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [50, 60, 55])
    with pytest.raises(ValueError, match="shape"):
        plot_accuracy_vs_k([1, 5], [0.5])
    plt.close("all")


@pytest.mark.parametrize("index, kw", [("hnsw", {"hnsw_m": 4, "ef_search": 8}), ("ivf", {"nlist": 4, "nprobe": 1})])
def test_report_through_a_given_classifier_scores_what_it_predicts(index, kw):
    g, yg = blobs(40, 6.0, seed=0)
    q, yq = blobs(30, 6.0, seed=1)
    clf = KNNClassifier(k=5, weighting="majority", index=index, class_names=NAMES, **kw).fit(g, yg)
    rep = knn_report(q, yq, g, yg, NAMES, k=5, weighting="majority", ks=(1, 5, 50), classifier=clf)
    assert rep["index"] == index and rep["search_params"] == clf.search_params
    assert rep["accuracy"] == pytest.approx(clf.score(q, yq))
    assert clf.search_params == KNNClassifier(k=5, index=index, **kw).fit(g, yg).search_params  # left as found
    with pytest.raises(DataError, match="rebuild the index"):
        knn_report(q, yq, g[:-1], yg[:-1], NAMES, classifier=clf)
