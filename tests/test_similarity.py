"""Same-expression probability (fermetric similarity, retrieval.similarity): calibrated on val
pairs, a probability in [0, 1], verification metrics in the kNN report, clean refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fermetric.errors import DataError
from fermetric.inference.faces import one_face
from fermetric.runs import load_run
from fermetric.retrieval.similarity import (
    fit_calibration, pair_similarities, same_expression_probability, sample_pairs, verification_metrics,
)


def test_pairs_and_calibration_by_hand():
    i, j = sample_pairs(np.arange(4))
    assert len(i) == 6 and (i != j).all()  # all 4 * 3 / 2 pairs when few
    i, j = sample_pairs(np.arange(1000), max_pairs=500, seed=1)
    assert len(i) == 500 and (i != j).all()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    emb = np.eye(3)[labels] + 0.3 * rng.normal(size=(300, 3))
    sims, same = pair_similarities(emb, labels)
    cal = fit_calibration(sims, same)
    assert cal.a > 0  # more similar, more likely the same
    m = verification_metrics(sims, same, cal)
    assert m["roc_auc"] > 0.9 and m["accuracy"] > 1 - m["same_share"]
    # calibrated: the mean probability matches the share of same pairs (a property of logistic fits)
    assert abs(cal.probability(sims).mean() - same.mean()) < 0.01
    with pytest.raises(DataError, match="both kinds"):
        fit_calibration(sims, np.zeros_like(same))


def _face(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48), dtype=np.uint8)).save(path)
    return path


def test_similarity_cli_and_function(triplet_run, tmp_path):
    a, b = _face(tmp_path / "a.png", 0), _face(tmp_path / "b.png", 1)
    res = same_expression_probability(load_run(triplet_run, device="cpu"), one_face(a), one_face(b), str(a), str(b))
    assert 0.0 <= res.probability <= 1.0 and -1.0 <= res.cosine <= 1.0
    assert res.calibration["split"] == "val" and (triplet_run / "similarity.json").is_file()
    out = run_cli(["similarity", str(triplet_run), str(a), str(b), "--json"]).output
    assert json.loads(out[out.index("{"):])["probability"] == pytest.approx(res.probability)

    res = run_cli(["similarity", str(triplet_run), str(a), str(tmp_path / "missing.png")], expect=2)
    assert "missing.png" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.png").write_text("not an image")
    res = run_cli(["similarity", str(triplet_run), str(tmp_path / "bad.png"), str(a)], expect=2)
    assert "not an image" in res.output


def test_knn_report_has_verification(classifier_run, tmp_path):
    out = tmp_path / "knn"
    run_cli(["knn-eval", str(classifier_run), "--split", "val", "--out", str(out)])
    rep = json.loads((out / "knn_report.json").read_text())
    ver = rep["verification"]
    assert 0 <= ver["roc_auc"] <= 1 and ver["n_pairs"] > 0 and "val" in ver["calibrated_on"]
    assert "Verification" in (out / "knn_report.md").read_text()
    # the vote's probabilities are calibrated like every other probability the package reports
    from fermetric.evaluation.calibration import calibration_metrics
    from fermetric.retrieval.embeddings import split_embeddings
    from fermetric.runs import load_run
    from fermetric.scoring.run import run_scorer

    run = load_run(classifier_run, device="cpu")
    emb, y = split_embeddings(run, "val")
    want = calibration_metrics(run_scorer(run, "knn").vote(emb), y)
    assert rep["calibration"]["ece"] == pytest.approx(want["ece"]) and rep["calibration"]["nll"] == pytest.approx(want["nll"])
    assert "| ECE (15 equal-width confidence bins) |" in (out / "knn_report.md").read_text()
