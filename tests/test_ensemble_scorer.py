"""Ensembles are scorers like every other model: the EnsembleScorer is the weighted mean of its
members' probabilities (by hand, tiny models), an ensemble zoo entry opens as a run that evaluate,
predict and explain take, and a member changed after the ensemble was measured is refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fermetric.analysis import explain
from fermetric.scoring import ClassifierScorer, EnsembleScorer, TTAScorer
from fermetric.errors import FermetricError, ModelError
from fermetric.evaluation.ensemble import soft_vote
from fermetric.runs import load_run
from fermetric.scoring.run import run_scorer, split_proba
from fermetric.retrieval.embeddings import split_embeddings


def _linear(seed: int, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, classes))


def test_ensemble_scores_are_the_weighted_mean_of_member_probabilities():
    x = torch.rand(6, 1, 48, 48)
    a, b = _linear(0), _linear(1)
    members = [ClassifierScorer(a, output="softmax", batch_size=4, precision="fp32"),
               ClassifierScorer(b, output="softmax", batch_size=4, precision="fp32")]
    ens = EnsembleScorer(members, weights=[3.0, 1.0])
    assert ens.weights == pytest.approx([0.75, 0.25])
    with torch.no_grad():  # by hand: softmax of each linear model, 3/4 and 1/4
        want = 0.75 * a(x).softmax(1) + 0.25 * b(x).softmax(1)
    got = ens.scores(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, atol=1e-6)
    # the numpy vote of fermetric ensemble gives the same numbers
    np.testing.assert_allclose(soft_vote([m.scores(x).numpy() for m in members], [3.0, 1.0]), got.numpy(), atol=1e-6)
    # equal weights by default; a TTA member is voted with its own mean over views
    tta = TTAScorer(members[1], views=lambda v: [v, v.flip(-1)])
    eq = EnsembleScorer([members[0], tta])
    np.testing.assert_allclose(eq.scores(x).numpy(), 0.5 * members[0].scores(x).numpy() + 0.5 * tta.scores(x).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_gradient_methods_explain_a_differentiable_ensemble():
    x = torch.rand(2, 1, 48, 48)
    ens = EnsembleScorer([ClassifierScorer(_linear(0), output="softmax", precision="fp32"),
                          ClassifierScorer(_linear(1), output="softmax", precision="fp32")])
    assert ens.differentiable
    maps = explain(ens, x, "saliency", target=[0, 1])
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all() and maps.max() > 0
    occ = explain(ens, x, "occlusion", target=[0, 1])
    assert occ.shape == (2, 48, 48)
    with pytest.raises(ModelError, match="Grad-CAM looks into one network"):
        explain(ens, x, "gradcam", target=[0, 1])


def test_bad_ensembles_are_refused():
    soft = ClassifierScorer(_linear(0), output="softmax")
    with pytest.raises(ModelError, match="not probabilities"):
        EnsembleScorer([soft, ClassifierScorer(_linear(1), output="logits")])
    with pytest.raises(ModelError, match="at least one member"):
        EnsembleScorer([])
    with pytest.raises(ModelError, match="non-negative"):
        EnsembleScorer([soft, soft], weights=[1.0, -1.0])
    with pytest.raises(ModelError, match="2 finite"):
        EnsembleScorer([soft, soft], weights=[1.0])
    with pytest.raises(ModelError, match="different classes"):
        EnsembleScorer([ClassifierScorer(_linear(0), output="softmax", class_names=["a", "b", "c"]),
                        ClassifierScorer(_linear(1), output="softmax", class_names=["a", "b", "d"])])


def test_ensemble_entry_is_the_weighted_vote_of_its_members(tiny_ensemble_zoo, classifier_run, triplet_run):
    from fermetric.zoo import get_entry, load_pretrained

    card = get_entry("tiny-ens", tiny_ensemble_zoo).card
    assert card["kind"] == "ensemble" and [m["name"] for m in card["members"]] == ["tiny-clf", "tiny-tri"]
    assert [m["weight"] for m in card["members"]] == pytest.approx([2 / 3, 1 / 3])
    assert card["test"]["seconds_per_face"] > 0
    ens = load_pretrained("tiny-ens", device="cpu", precision="fp32", root=tiny_ensemble_zoo)
    clf = load_pretrained("tiny-clf", device="cpu", precision="fp32", root=tiny_ensemble_zoo)
    tri = load_pretrained("tiny-tri", device="cpu", precision="fp32", root=tiny_ensemble_zoo)
    data = load_run(classifier_run, device="cpu").load_data()
    for r in (ens, clf, tri):
        r.use_data(data)
    want = (2 * split_proba(clf, "val", tta="shift") + split_proba(tri, "val")) / 3
    np.testing.assert_allclose(split_proba(ens, "val"), want, atol=1e-6)
    y = data["val"].labels.numpy()
    assert card["test"]["accuracy"] == pytest.approx(float((want.argmax(1) == y).mean()))
    # the scorer (images in) gives the split's numbers (cached embeddings and TTA probabilities)
    np.testing.assert_allclose(run_scorer(ens).scores(data["val"].images).numpy(), want, atol=1e-5)
    with pytest.raises(FermetricError, match="TTA is set per member"):
        split_proba(ens, "val", tta=True)
    with pytest.raises(FermetricError, match="no single embedding"):
        split_embeddings(ens, "val")


def test_ensemble_entry_works_where_a_run_does(tiny_ensemble_zoo, monkeypatch, tmp_path):
    """evaluate, predict and explain take the ensemble's name as they take any RUN."""
    import fermetric
    from fermetric.data.bundled import bundled_faces
    from fermetric.inference import FacePredictor
    from fermetric.zoo import load_pretrained

    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    m, paths = fermetric.evaluate_run("tiny-ens", data="synth", split="val", out=tmp_path / "eval", device="cpu")
    assert m["kind"] == "ensemble" and 0 <= m["accuracy"] <= 1 and all(p.is_file() for p in paths)
    rec = fermetric.explain_run("tiny-ens", method="all", per_class=1, data="synth", out=tmp_path / "all", device="cpu",
                                lime_samples=50)
    assert rec["scorer"] == "EnsembleScorer"
    assert {"occlusion", "lime"} <= set(rec["methods"]) and any(s.startswith("saliency") for s in rec["skipped"])  # kNN member: black box
    assert any("member(s) tiny-tri vote through a kNN index" in s for s in rec["skipped"])
    predictor = FacePredictor(load_pretrained("tiny-ens", device="cpu", root=tiny_ensemble_zoo))
    face = bundled_faces()[0]
    p = predictor.predict_proba(face.image()[None])
    assert p.shape == (1, 7) and p.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_member_changed_after_the_ensemble_was_measured_is_refused(tiny_ensemble_zoo, tmp_path):
    from fermetric.zoo import ZooError, get_entry, load_pretrained
    from fermetric.zoo.registry import write_manifest

    root = tmp_path / "zoo"
    shutil.copytree(tiny_ensemble_zoo, root)
    card_path = root / "tiny-ens" / "card.json"
    card = json.loads(card_path.read_text())
    card["members"][0]["sha256"] = "0" * 64  # as if tiny-clf had been re-exported since
    card_path.write_text(json.dumps(card))
    write_manifest(root / "tiny-ens")  # the ensemble entry itself intact: only its member differs
    with pytest.raises(ZooError, match="member 'tiny-clf' has changed since the ensemble was measured"):
        load_pretrained("tiny-ens", device="cpu", root=root)
    with pytest.raises(ZooError, match="has changed"):
        get_entry("tiny-ens", root).verify()
    (root / "tiny-ens" / "card.json").write_text(json.dumps({**card, "members": []}))
    with pytest.raises(ZooError, match="lists no members"):
        get_entry("tiny-ens", root)


def test_report_takes_zoo_names_an_ensemble_included(tiny_ensemble_zoo, monkeypatch, tmp_path):
    """`fermetric report NAME`: the card's numbers and what commands wrote into the entry's cache."""
    import fermetric
    from conftest import run_cli

    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    fermetric.evaluate_run("tiny-ens", device="cpu", data="synth", split="val")  # into the cache's eval/
    out = tmp_path / "r.html"
    run_cli(["report", "tiny-clf", "tiny-ens", "--out", str(out)])
    html = out.read_text()
    for text in ("tiny-clf", "tiny-ens", "pretrained model tiny-ens: numbers from its card", "eval/synth_val"):
        assert text in html, text
    res = run_cli(["report", "no-such-model", "--out", str(tmp_path / "x.html")], expect=2)
    assert "no pretrained model of that name" in res.output and not (tmp_path / "x.html").exists()


@pytest.mark.parametrize("text, match", [
    ("members: []\n", "expected 'members:'"),
    ("members:\n  - {name: a, scorer: prototype}\n", "scorer 'prototype'"),
    ("members:\n  - {name: a, tta: sideways}\n", "tta 'sideways'"),
    ("members:\n  - {name: a, weight: -1}\n", "weight -1"),
    ("members:\n  - {name: a, wieght: 1}\n", r"members\[0\]: expected a mapping"),
    ("memebers:\n  - {name: a}\n", "an ensemble spec has the keys"),
])
def test_bad_ensemble_specs_are_refused(tmp_path, text, match):
    from fermetric.zoo import ZooError
    from fermetric.zoo.export import read_ensemble_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    with pytest.raises(ZooError, match=match):
        read_ensemble_spec(spec)


def test_an_ensemble_votes_with_its_members_calibrations(classifier_run, triplet_run, tmp_path):
    """A member that `fermetric calibrate` fitted votes with its calibrated probabilities, on a
    split and through the scorer alike; the fingerprint records it."""
    import shutil

    import fermetric
    from fermetric.runs.ensemble import EnsembleRun, Member
    from fermetric.scoring.calibration import apply_temperature, smooth_votes

    clf_dir, tri_dir = tmp_path / "clf", tmp_path / "tri"
    shutil.copytree(classifier_run, clf_dir)
    shutil.copytree(triplet_run, tri_dir)

    def ensemble():
        clf, tri = load_run(clf_dir, device="cpu", precision="fp32"), load_run(tri_dir, device="cpu", precision="fp32")
        return EnsembleRun(path=tmp_path / "ens", members=[Member(clf, "classifier", "shift", 2.0, "clf"),
                                                           Member(tri, "knn", None, 1.0, "tri")]), clf, tri

    plain, clf, tri = ensemble()
    p_clf, p_tri = split_proba(clf, "val", tta="shift"), split_proba(tri, "val")
    np.testing.assert_allclose(split_proba(plain, "val"), (2 * p_clf + p_tri) / 3, atol=1e-6)
    t = fermetric.calibrate(clf_dir, split="val", tta="shift", device="cpu")["temperature"]
    a = fermetric.calibrate(tri_dir, split="val", device="cpu")["alpha"]
    ens, _, _ = ensemble()
    want = (2 * apply_temperature(p_clf, t) + smooth_votes(p_tri, a)) / 3
    assert np.abs(want - (2 * p_clf + p_tri) / 3).max() > 1e-3  # the calibrations change the vote
    np.testing.assert_allclose(split_proba(ens, "val"), want, atol=1e-6)
    images = load_run(clf_dir, device="cpu").load_data()["val"].images
    np.testing.assert_allclose(run_scorer(ens).scores(images).numpy(), want, atol=1e-5)
    assert [m["calibration"]["method"] for m in ens.fingerprint["members"]] == ["temperature", "vote_smoothing"]
