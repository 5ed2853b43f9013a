"""KNNClassifier: votes against a brute-force numpy reference, ties, persistence, errors, threads."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from fermetric.errors import CheckpointError, ConfigError, DataError
from fermetric.retrieval import KNNClassifier, faiss_threads
from fermetric.retrieval.knn import default_nlist, default_nprobe, default_pq_m


# ---------------------------------------------------------------- reference implementation
def brute_force(gallery, labels, queries, k, weighting, num_classes, temperature=0.1):
    """Cosine kNN in float64 numpy: neighbours by (-similarity, index); votes; ties to the
    class of the best-ranked neighbour among the tied classes."""
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ g.astype(np.float64).T
    proba = np.zeros((len(q), num_classes))
    pred = np.zeros(len(q), dtype=np.int64)
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-sims[i, j], j))[:k]
        s = sims[i, order]
        w = np.ones(k) if weighting == "majority" else np.exp((s - s.max()) / temperature)
        for lab, wj in zip(labels[order], w):
            proba[i, lab] += wj
        proba[i] /= proba[i].sum()
        tied = [c for c in range(num_classes) if proba[i, c] >= proba[i].max() - 1e-6]
        pred[i] = next(int(lab) for lab in labels[order] if lab in tied)
    return proba, pred


def clustered(n, d=16, classes=4, spread=0.6, seed=0, centers_seed=100):
    centers = np.random.default_rng(centers_seed).normal(size=(classes, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = centers[y] + spread * rng.normal(size=(n, d))
    return x.astype(np.float32), y


@pytest.mark.parametrize("weighting", ["majority", "distance"])
@pytest.mark.parametrize("k", [1, 4, 7, 16])
def test_matches_brute_force(weighting, k):
    rng = np.random.default_rng(k)
    g = rng.normal(size=(150, 8)).astype(np.float32)
    y = rng.integers(0, 5, 150)
    q = rng.normal(size=(40, 8)).astype(np.float32)
    clf = KNNClassifier(k=k, weighting=weighting, num_classes=5).fit(g, y)
    ref_proba, ref_pred = brute_force(g, y, q, k, weighting, 5)
    np.testing.assert_allclose(clf.predict_proba(q), ref_proba, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(q), ref_pred)


def test_kneighbors_sorted_and_exact():
    g, y = clustered(200)
    q, _ = clustered(30, seed=1)
    clf = KNNClassifier(k=5).fit(g, y)
    sims, idx = clf.kneighbors(q, k=8)
    assert sims.shape == idx.shape == (30, 8) and sims.dtype == np.float32 and idx.dtype == np.int64
    assert (np.diff(sims, axis=1) <= 0).all()
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    full = qn @ gn.T
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, 1), atol=1e-5)
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :8], atol=1e-5)


def test_majority_tie_goes_to_nearest_neighbour():
    # query at angle 0; neighbours at angles 0.1 (class 1), 0.2 (0), 0.3 (0), 0.4 (1): votes 2-2
    angles = np.array([0.1, 0.2, 0.3, 0.4, 2.5])
    g = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    clf = KNNClassifier(k=4, weighting="majority", num_classes=2).fit(g, [1, 0, 0, 1, 0])
    np.testing.assert_allclose(clf.predict_proba(q), [[0.5, 0.5]])
    assert clf.predict(q).tolist() == [1]
    clf = KNNClassifier(k=4, weighting="majority", num_classes=2).fit(g, [0, 1, 1, 0, 1])
    assert clf.predict(q).tolist() == [0]


@pytest.mark.parametrize("weighting", ["majority", "distance"])
def test_equal_similarities_ranked_by_gallery_index(weighting):
    v = np.array([[0.6, 0.8]], np.float32)
    far = np.array([[-1.0, 0.0]], np.float32)
    g = np.concatenate([far, v, v])  # two identical vectors with different labels
    q = np.array([[0.8, 0.6]], np.float32)
    for labels, expected in (([0, 2, 1], 2), ([0, 1, 2], 1)):
        clf = KNNClassifier(k=2, weighting=weighting, num_classes=3).fit(g, labels)
        sims, idx = clf.kneighbors(q)
        assert idx.tolist() == [[1, 2]] and sims[0, 0] == sims[0, 1]
        np.testing.assert_allclose(clf.predict_proba(q)[0, 1:], [0.5, 0.5])
        assert clf.predict(q).tolist() == [expected]


def test_proba_rows_sum_to_one_and_cover_all_classes():
    g, y = clustered(300, classes=3)
    q, _ = clustered(50, seed=1, classes=3)
    names = ["a", "b", "c", "never-seen"]
    for weighting in ("majority", "distance"):
        clf = KNNClassifier(k=9, weighting=weighting, class_names=names).fit(g, y)
        p = clf.predict_proba(q)
        assert p.shape == (50, 4)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
        assert (p[:, 3] == 0).all() and (p >= 0).all()
        if weighting == "majority":  # fractions of k
            np.testing.assert_allclose(p * 9, np.round(p * 9), atol=1e-9)


def test_inputs_numpy_torch_and_dtypes_agree_and_are_not_modified():
    g, y = clustered(200)
    q, _ = clustered(25, seed=3)
    g_copy, q_copy = g.copy(), q.copy()
    ref = KNNClassifier(k=5).fit(g, y).predict_proba(q)
    np.testing.assert_array_equal(g, g_copy)
    np.testing.assert_array_equal(q, q_copy)
    for conv in (torch.from_numpy, lambda a: torch.from_numpy(a).double(), lambda a: a.astype(np.float64),
                 lambda a: np.asfortranarray(a)):
        clf = KNNClassifier(k=5).fit(conv(g), torch.from_numpy(y))
        np.testing.assert_allclose(clf.predict_proba(conv(q)), ref, atol=1e-6)
    # half precision changes similarities slightly; predictions on clustered data stay the same
    clf = KNNClassifier(k=5).fit(torch.from_numpy(g).half(), y)
    assert (clf.predict(torch.from_numpy(q).bfloat16()) == np.argmax(ref, 1)).mean() > 0.9
    assert KNNClassifier(k=5).fit(g, y).predict(q[:0]).shape == (0,)


def test_normalize_false_uses_raw_inner_product():
    g = np.array([[1.0, 0.0], [10.0, 10.0]], np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    assert KNNClassifier(k=1, num_classes=2).fit(g, [0, 1]).predict(q).tolist() == [0]  # cosine
    assert KNNClassifier(k=1, num_classes=2, normalize=False).fit(g, [0, 1]).predict(q).tolist() == [1]


# ---------------------------------------------------------------- approximate indexes
@pytest.mark.parametrize("index,kw", [("ivf", {}), ("hnsw", {}), ("ivfpq", {})])
def test_approximate_indexes_agree_with_flat(index, kw):
    g, y = clustered(3000, d=32, classes=7, spread=0.5)
    q, _ = clustered(300, d=32, classes=7, spread=0.5, seed=1)
    exact = KNNClassifier(k=10).fit(g, y).predict(q)
    approx = KNNClassifier(k=10, index=index, **kw).fit(g, y).predict(q)
    assert (approx == exact).mean() >= (0.95 if index == "ivfpq" else 0.98)


def test_ivf_defaults_and_missing_neighbours():
    g, y = clustered(800)
    clf = KNNClassifier(k=5, index="ivf").fit(g, y)
    assert clf.nlist_ == default_nlist(800) == 20 and clf.nlist is None
    assert clf.search_params == {"nprobe": default_nprobe(20)} and default_nprobe(20) == 13
    assert clf.fit(g[:400], y[:400]).nlist_ == default_nlist(400) == 10  # refit derives it anew
    assert default_pq_m(128) == 32 and default_pq_m(30) == 6
    # one cell searched, k larger than some cells: missing neighbours (-1) get no vote
    clf = KNNClassifier(k=300, index="ivf", nlist=20, nprobe=1, weighting="majority").fit(g, y)
    q, _ = clustered(40, seed=2)
    sims, idx = clf.kneighbors(q)
    assert (idx == -1).any()
    p = clf.predict_proba(q)
    np.testing.assert_allclose(p.sum(1), 1.0)
    valid = idx >= 0
    counts = np.stack([((y[np.maximum(idx, 0)] == c) & valid).sum(1) for c in range(4)], 1)
    np.testing.assert_allclose(p, counts / valid.sum(1, keepdims=True))


# ---------------------------------------------------------------- persistence
@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw", "ivfpq"])
def test_save_load_round_trip(tmp_path, index):
    g, y = clustered(1000, d=16)
    q, _ = clustered(60, d=16, seed=4)
    clf = KNNClassifier(k=7, index=index, weighting="majority", class_names=list("abcd"), nprobe=3).fit(g, y)
    out = clf.save(tmp_path / "knn")
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "labels.npy", "meta.json"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dimension"] == 16 and meta["count"] == 1000 and meta["index_type"] == index
    assert meta["class_names"] == list("abcd") and meta["format_version"] == 1 and "fermetric_version" in meta
    loaded = KNNClassifier.load(out)
    assert (loaded.k, loaded.weighting, loaded.index_type, loaded.class_names) == (7, "majority", index, list("abcd"))
    np.testing.assert_array_equal(loaded.kneighbors(q)[1], clf.kneighbors(q)[1])
    np.testing.assert_array_equal(loaded.predict_proba(q), clf.predict_proba(q))
    np.testing.assert_array_equal(loaded.predict(q), clf.predict(q))
    assert loaded.search_params == clf.search_params
    if index in ("ivf", "ivfpq"):
        assert loaded.search_params == {"nprobe": 3}


def test_search_params_changed_after_fit_are_saved(tmp_path):
    g, y = clustered(600, d=16)
    clf = KNNClassifier(k=5, index="hnsw").fit(g, y).set_search_params(ef_search=77)
    assert clf.index_.hnsw.efSearch == 77
    assert KNNClassifier.load(clf.save(tmp_path / "h")).search_params == {"ef_search": 77}
    clf = KNNClassifier(k=5, index="ivf").fit(g, y).set_search_params(nprobe=4)
    assert KNNClassifier.load(clf.save(tmp_path / "i")).search_params == {"nprobe": 4}


@pytest.fixture
def saved(tmp_path):
    g, y = clustered(200, d=16)
    return KNNClassifier(k=3).fit(g, y).save(tmp_path / "a"), tmp_path


def test_load_missing_files_are_listed(saved):
    path, _ = saved
    (path / "labels.npy").unlink()
    (path / "index.faiss").unlink()
    with pytest.raises(CheckpointError, match="missing index.faiss, labels.npy"):
        KNNClassifier.load(path)
    with pytest.raises(CheckpointError, match="not a directory"):
        KNNClassifier.load(path / "nope")


def test_load_mismatched_dimension_names_index_file(saved):
    path, tmp = saved
    g, y = clustered(200, d=8)
    other = KNNClassifier(k=3).fit(g, y).save(tmp / "b")
    (path / "index.faiss").write_bytes((other / "index.faiss").read_bytes())
    with pytest.raises(CheckpointError, match=r"index.faiss has dimension 8 but .*meta.json says 16"):
        KNNClassifier.load(path)


def test_load_mismatched_labels_names_labels_file(saved):
    path, _ = saved
    np.save(path / "labels.npy", np.zeros(150, dtype=np.int64))
    with pytest.raises(CheckpointError, match=r"labels.npy has 150 labels but .*meta.json says the index holds 200"):
        KNNClassifier.load(path)


def test_load_same_shape_other_content_fails_checksum(saved):
    path, _ = saved
    labels = np.load(path / "labels.npy")
    np.save(path / "labels.npy", (labels + 1) % 4)
    with pytest.raises(CheckpointError, match="labels.npy does not match the SHA-256"):
        KNNClassifier.load(path)


def test_load_truncated_index(saved):
    path, _ = saved
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="index.faiss: FAISS could not read it"):
        KNNClassifier.load(path)


def test_load_bad_meta(saved):
    path, _ = saved
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json: not valid JSON"):
        KNNClassifier.load(path)
    (path / "meta.json").write_text(json.dumps({"format": "fermetric.knn", "format_version": 99}))
    with pytest.raises(CheckpointError, match="newer"):
        KNNClassifier.load(path)


# ---------------------------------------------------------------- errors
def test_bad_inputs():
    g, y = clustered(50, d=128)
    clf = KNNClassifier(k=3)
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict(g)
    clf.fit(g, y)
    with pytest.raises(DataError, match="query has 64 dims; the index was built on 128"):
        clf.predict(np.zeros((2, 64), np.float32))
    with pytest.raises(DataError, match="labels has 49 entries but embeddings has 50 rows"):
        KNNClassifier(k=3).fit(g, y[:49])
    with pytest.raises(DataError, match="k=51 is more than the 50 gallery vectors"):
        KNNClassifier(k=51).fit(g, y)
    with pytest.raises(DataError, match="k=60 is more than the 50"):
        clf.kneighbors(g, k=60)
    bad = g.copy()
    bad[[3, 7], 5] = np.nan
    with pytest.raises(DataError, match=r"NaN or inf in 2 row\(s\), first \[3, 7\]"):
        KNNClassifier(k=3).fit(bad, y)
    with pytest.raises(DataError, match="NaN"):
        clf.predict(bad)
    with pytest.raises(DataError, match="2-D"):
        clf.predict(g[0])
    with pytest.raises(DataError, match="out of range for 2 classes"):
        KNNClassifier(k=3, num_classes=2).fit(g, y)
    with pytest.raises(DataError, match="integer class ids"):
        KNNClassifier(k=3).fit(g, y.astype(float))
    with pytest.raises(ConfigError, match="unknown weighting"):
        KNNClassifier(weighting="inverse")
    with pytest.raises(ConfigError, match="unknown index type"):
        KNNClassifier(index="lsh")
    with pytest.raises(ConfigError, match="num_classes=3 but 2 class_names"):
        KNNClassifier(num_classes=3, class_names=["a", "b"])


# ---------------------------------------------------------------- threads
def test_faiss_and_torch_threads_in_one_process():
    """FAISS and torch use separate OpenMP runtimes; both working in one process, interleaved,
    with their own thread settings, give the same answers as single-threaded runs."""
    g, y = clustered(4000, d=64)
    q, _ = clustered(500, d=64, seed=5)
    before_faiss, before_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    block = faiss.cvar.distance_compute_blas_database_bs
    with faiss_threads(1):
        ref = KNNClassifier(k=10).fit(g, y).kneighbors(q)[1]
    assert faiss.omp_get_max_threads() == before_faiss  # restored
    torch.set_num_threads(2)
    try:
        tg, tq = torch.from_numpy(g), torch.from_numpy(q)
        for _ in range(3):
            prod = (tq @ tg.T).numpy()  # torch OpenMP work
            clf = KNNClassifier(k=10, num_threads=2).fit(g, y)  # faiss OpenMP work
            np.testing.assert_array_equal(clf.kneighbors(q)[1], ref)
            assert prod.shape == (500, 4000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before_torch)
    assert faiss.omp_get_max_threads() == before_faiss
    assert faiss.cvar.distance_compute_blas_database_bs == block  # the search-time tweak is undone
    with pytest.raises(ConfigError):
        with faiss_threads(0):
            pass
