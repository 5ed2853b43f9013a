"""Nothing derived from a run's weights outlives them, and nothing wrong is reported as right:
the kNN index and the embedding cache are keyed to the checkpoint, knn-eval and evaluate read
the same index, NaN or foreign checkpoints are refused, train queries do not match themselves,
and ensemble weights are never fitted on the images they score."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from fermetric.errors import CheckpointError
from fermetric.retrieval import KNNClassifier
from fermetric.runs import load_run
from fermetric.retrieval.embeddings import split_embeddings
from fermetric.retrieval.index import build_run_index
from fermetric.retrieval.index import run_knn


def copy_run(src: Path, dst: Path, keep_index: bool = False) -> Path:
    shutil.copytree(src, dst)
    for derived in ("index", "embeddings", "eval") if not keep_index else ("eval",):
        shutil.rmtree(dst / derived, ignore_errors=True)
    return dst


def retrain(run: Path, scale: float = 1.5) -> None:
    """New weights in best.pt, as --resume or a retraining into the same run leaves them."""
    path = run / "checkpoints" / "best.pt"
    ck = torch.load(path, weights_only=True)
    ck["state_dict"] = {k: v * scale if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    ck["epoch"] = ck.get("epoch", 0) + 1
    torch.save(ck, path)


# ------------------------------------------------------------------ item 1: stale index and cache

def test_stale_index_is_refused_everywhere_until_rebuilt(triplet_run: Path, tmp_path: Path):
    run = copy_run(triplet_run, tmp_path / "tri")
    run_cli(["build-index", str(run), "--index", "hnsw", "-k", "5"])
    retrain(run)
    for args in (["evaluate", str(run)], ["knn-eval", str(run)], ["ensemble", str(run), "--out", str(tmp_path / "ens")],
                 ["explain", str(run), "--method", "occlusion", "--scorer", "knn", "--out", str(tmp_path / "x")]):
        res = run_cli(args, expect=2)
        assert "stale" in res.output and f"fermetric build-index {run} --index hnsw -k 5" in res.output, res.output
        assert "Traceback" not in res.output
    assert not (run / "eval").exists() and not (tmp_path / "ens").exists() and not (tmp_path / "x").exists()
    with pytest.raises(CheckpointError, match="stale"):
        from fermetric.inference.predictor import FacePredictor

        FacePredictor.from_run_dir(run).predict_proba(np.zeros((1, 48, 48), np.uint8))
    run_cli(["build-index", str(run), "--index", "hnsw", "-k", "5"])
    run_cli(["evaluate", str(run)])
    meta = json.loads((run / "index" / "meta.json").read_text())
    assert meta["source"]["checkpoint_sha256"] == load_run(run).checkpoint_sha256


def test_index_of_another_run_is_refused(triplet_run: Path, classifier_run: Path, tmp_path: Path):
    run = copy_run(classifier_run, tmp_path / "clf")
    other = copy_run(triplet_run, tmp_path / "tri")
    build_run_index(load_run(other))
    shutil.copytree(other / "index", run / "index")
    with pytest.raises(CheckpointError, match=f"stale: its gallery was embedded by best.pt .* of run {other}"):
        run_knn(load_run(run))


def test_embedding_cache_is_keyed_to_the_checkpoint(triplet_run: Path, tmp_path: Path):
    run = copy_run(triplet_run, tmp_path / "tri")
    first = split_embeddings(load_run(run), "val")[0]
    assert json.loads((run / "embeddings" / "val.json").read_text())["shape"] == list(first.shape)
    retrain(run)
    # the old cache is newer than the checkpoint (as after copying runs around): mtimes cannot tell
    for f in (run / "embeddings").iterdir():
        f.touch()
    fresh = load_run(run)
    again = split_embeddings(fresh, "val")[0]
    assert not np.allclose(again, first)
    from fermetric.retrieval.embeddings import embed_dataset

    np.testing.assert_allclose(again, embed_dataset(fresh.model, fresh.load_data()["val"]), rtol=1e-5, atol=1e-6)
    assert json.loads((run / "embeddings" / "val.json").read_text())["checkpoint_sha256"] == fresh.checkpoint_sha256


@pytest.mark.parametrize("index, weighting", [("flat", "majority"), ("hnsw", "distance")])
def test_knn_eval_uses_the_built_index_and_agrees_with_evaluate(triplet_run: Path, tmp_path: Path, index, weighting):
    run = copy_run(triplet_run, tmp_path / "tri")
    # k and weighting other than the config's (10, distance): knn-eval must use the index's
    run_cli(["build-index", str(run), "--index", index, "-k", "3", "--weighting", weighting])
    res = run_cli(["knn-eval", str(run), "--split", "test"])
    rep = json.loads((run / "knn_test" / "knn_report.json").read_text())
    assert (rep["k"], rep["weighting"], rep["index"]) == (3, weighting, index)
    assert rep["index_source"] == str(run / "index") and str(run / "index") in res.output
    run_cli(["evaluate", str(run), "--split", "test"])
    ev = json.loads((run / "eval" / "test.json").read_text())
    assert ev["accuracy"] == pytest.approx(rep["accuracy"]) and ev["macro_f1"] == pytest.approx(rep["macro_f1"])
    assert ev["knn"]["index"] == index and ev["knn"]["k"] == 3


# ------------------------------------------------------------------ item 2: NaN and foreign weights

_OPENED: list[str] = []  # files opened while a test listens (an audit hook cannot be removed: it stays, idle)
_LISTEN = {"on": False}


def _audit(event, args):
    if _LISTEN["on"] and event == "open" and isinstance(args[0], (str, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def test_load_run_reads_the_checkpoint_once_and_fingerprints_those_bytes(classifier_run: Path):
    """best.pt is read once: loaded and hashed from the same bytes (a second read could hash a
    file replaced meanwhile, and doubles the disk reads of a large checkpoint)."""
    import hashlib

    best = classifier_run / "checkpoints" / "best.pt"
    _OPENED.clear()
    _LISTEN["on"] = True
    try:
        run = load_run(classifier_run, device="cpu")
    finally:
        _LISTEN["on"] = False
    assert [p for p in _OPENED if Path(p).resolve() == best.resolve()] == [str(best)]
    assert run.checkpoint_sha256 == hashlib.sha256(best.read_bytes()).hexdigest()
    assert run.checkpoint["epoch"] == torch.load(best, weights_only=True)["epoch"]


def test_nan_checkpoint_is_refused(classifier_run: Path, tmp_path: Path):
    run = copy_run(classifier_run, tmp_path / "clf")
    path = run / "checkpoints" / "best.pt"
    ck = torch.load(path, weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ck["state_dict"][name].view(-1)[1] = float("nan")
    torch.save(ck, path)
    res = run_cli(["evaluate", str(run)], expect=2)
    assert str(path) in res.output and repr(name) in res.output and "lower learning rate" in res.output
    assert not (run / "eval").exists()


def test_foreign_checkpoint_is_refused(classifier_run: Path, triplet_run: Path, tmp_path: Path):
    run = copy_run(classifier_run, tmp_path / "clf")
    shutil.copy(triplet_run / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    res = run_cli(["evaluate", str(run)], expect=2)
    assert "embedding checkpoint" in res.output and "classifier run" in res.output and "metrics.json" in res.output


def test_checkpoint_of_another_architecture_is_refused(classifier_run: Path, tmp_path: Path):
    run = copy_run(classifier_run, tmp_path / "clf")
    path = run / "checkpoints" / "best.pt"
    ck = torch.load(path, weights_only=True)
    ck["config"]["model"]["stem"] = "imagenet"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=r"model.stem is 'imagenet' in the checkpoint but 'small' in config.yaml"):
        load_run(run)


# ------------------------------------------------------------------ item 3: leaks

def test_exclude_drops_each_querys_own_entry_by_index():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 8)).astype(np.float32)
    g[7] = g[3]  # an exact duplicate: must still count as a neighbour of 3 (and 3 of 7)
    y = rng.integers(0, 4, 40)
    clf = KNNClassifier(k=4, weighting="majority").fit(g, y)
    sims, idx = clf.kneighbors(g, exclude=np.arange(40))
    assert not (idx == np.arange(40)[:, None]).any()
    assert idx[3, 0] == 7 and idx[7, 0] == 3
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    brute = gn @ gn.T
    np.fill_diagonal(brute, -np.inf)
    # the same similarities as a brute-force search without the diagonal (which of two equal
    # vectors fills the last place is FAISS's choice)
    np.testing.assert_allclose(sims, -np.sort(-brute, axis=1)[:, :4], atol=1e-5)


def test_evaluate_on_the_gallery_split_excludes_self_matches(triplet_run: Path, tmp_path: Path):
    run = copy_run(triplet_run, tmp_path / "tri")
    run_cli(["evaluate", str(run), "--split", "train"])
    got = json.loads((run / "eval" / "train.json").read_text())
    r = load_run(run)
    emb, y = split_embeddings(r, "train")
    knn = KNNClassifier(k=r.cfg.metric.knn_k + 1, weighting=r.cfg.metric.knn_weighting).fit(emb, y)
    sims, idx = knn.kneighbors(emb)
    assert (idx[:, 0] == np.arange(len(y))).mean() > 0.9  # without exclusion each image finds itself first
    keep = idx != np.arange(len(y))[:, None]
    keep[~(~keep).any(1), -1] = False
    idx, sims = idx[keep].reshape(len(y), -1), sims[keep].reshape(len(y), -1)
    from fermetric.retrieval.knn import break_ties, vote

    labels = y[idx]
    want = break_ties(vote(labels, sims, len(r.class_names), r.cfg.metric.knn_weighting), labels)
    assert got["accuracy"] == pytest.approx(float((want == y).mean()))
    assert got["knn"]["self_matches_excluded"] is True


def test_cross_fitted_weights_never_see_the_labels_they_score():
    from fermetric.evaluation.ensemble import cross_fitted_vote

    y = np.array([0, 1] * 10)
    good, bad = np.eye(2)[y], np.eye(2)[1 - y]
    # member A is right on the first 10 images only, member B on the last 10 only
    a = np.concatenate([good[:10], bad[10:]])
    b = np.concatenate([bad[:10], good[10:]])
    ens, weights = cross_fitted_vote([a, b], y, folds=2, seed=0)
    parts = np.array_split(np.random.default_rng(0).permutation(20), 2)
    for part, w in zip(parts, weights):
        rest = np.setdiff1d(np.arange(20), part)
        assert w == [float((a[rest].argmax(1) == y[rest]).mean()), float((b[rest].argmax(1) == y[rest]).mean())]
    assert ens.shape == (20, 2) and np.allclose(ens.sum(1), 1)


@pytest.mark.parametrize("split, fitted", [("val", "cross-fitted"), ("test", "val")])
def test_ensemble_says_where_its_weights_were_fitted(classifier_run: Path, triplet_run: Path, tmp_path: Path, split, fitted):
    clf, tri = copy_run(classifier_run, tmp_path / "clf"), copy_run(triplet_run, tmp_path / "tri")
    res = run_cli(["ensemble", str(clf), str(tri), "--split", split, "--out", str(tmp_path / "ens")])
    out = json.loads((tmp_path / "ens" / f"ensemble_{split}.json").read_text())
    assert fitted in out["weights_fitted_on"] and f"weights fitted on {out['weights_fitted_on']}" in res.output
    assert len(out["val_weighted_vote"]["weights"]) == (2 if split == "val" else 1)
    if split == "test":
        val_acc = [m["val_acc"] for m in out["members"]]
        assert out["val_weighted_vote"]["weights"][0] == pytest.approx(val_acc)
