"""`fermetric explain`, `filters`, `explain-eval` on a classifier run and on a triplet run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli


@pytest.mark.parametrize("scorer", ["auto", "knn"])
def test_explain_every_method_on_triplet(triplet_run, scorer, tmp_path):
    out = tmp_path / scorer
    res = run_cli(["explain", str(triplet_run), "--method", "all", "--per-class", "1", "--scorer", scorer, "--out", str(out)])
    info = json.loads((out / "explain_val.json").read_text())
    if scorer == "knn":  # black box: gradient methods are skipped with a reason, the others run
        assert info["methods"] == ["occlusion", "lime"] and len(info["skipped"]) == 3
        assert "needs gradients" in res.output
    else:
        assert info["methods"] == ["saliency", "smoothgrad", "occlusion", "gradcam", "lime"]
    for m in info["methods"]:
        maps = np.load(out / f"{m}_val.npy")
        assert maps.shape == (7, 48, 48) and np.isfinite(maps).all()
        assert (out / f"{m}_val.png").is_file()


def test_explain_classifier_gradcam(classifier_run, tmp_path):
    run_cli(["explain", str(classifier_run), "--method", "gradcam", "--per-class", "2", "--out", str(tmp_path)])
    info = json.loads((tmp_path / "explain_val.json").read_text())
    counts = np.bincount(info["labels"], minlength=7)
    assert counts.max() <= 2 and (counts >= 1).all()  # up to 2 per class, every class present
    assert np.load(tmp_path / "gradcam_val.npy").shape == (len(info["indices"]), 48, 48)


def test_gradient_method_on_knn_scorer_alone_fails_cleanly(triplet_run, tmp_path):
    res = run_cli(["explain", str(triplet_run), "--method", "saliency", "--scorer", "knn", "--out", str(tmp_path)], expect=2)
    assert "PrototypeScorer" in res.output and "Traceback" not in res.output


def test_filters_and_bad_layer(classifier_run, tmp_path):
    run_cli(["filters", str(classifier_run), "--num", "4", "--steps", "5", "--out", str(tmp_path)])
    assert list(tmp_path.glob("filters_*.png")) and list(tmp_path.glob("activations_*.png"))
    res = run_cli(["filters", str(classifier_run), "--layer", "nope", "--out", str(tmp_path)], expect=2)
    assert "nope" in res.output and "features" in res.output  # lists valid layers


def test_explain_eval_table(classifier_run, triplet_run, tmp_path):
    run_cli(["explain-eval", str(classifier_run), str(triplet_run), "--per-class", "1", "--methods", "saliency,occlusion",
             "--out", str(tmp_path)])
    table = json.loads((tmp_path / "explain_eval.json").read_text())
    models = {row["model"] for row in table["rows"]}
    assert len(models) == 3  # classifier, triplet prototype, triplet kNN
    assert table["masks"] is True
    assert "deletion_auc" in (tmp_path / "explain_eval.md").read_text()
    res = run_cli(["explain-eval", str(classifier_run), "--methods", "magic"], expect=2)
    assert "magic" in res.output
