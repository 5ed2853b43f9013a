"""The seeds' comparison from the zoo: a study of pretrained entries (`pretrained: NAME`) trains
nothing, evaluates and explains them on the data it is given, votes its classifiers and reports
the ensemble entry as a row of its own."""
from __future__ import annotations

import pytest

from fermetric.errors import ConfigError
from fermetric.study.config import study_from_dict

ZOO_STUDY = {
    "name": "tiny-zoo",
    "models": {"clf": {"pretrained": "tiny-clf"}, "clf2": {"pretrained": "tiny-clf"},
               "tri": {"pretrained": "tiny-tri"}, "ens": {"pretrained": "tiny-ens"}},
    "explain": {"methods": ["saliency", "occlusion", "lime"], "lime_samples": 20, "faithfulness_per_class": 1,
                "models": ["clf", "ens"], "filters": {"model": "clf", "channels": 4, "steps": 5}},
}


def test_a_study_of_zoo_entries_runs_end_to_end_without_training(tiny_ensemble_zoo, monkeypatch, tmp_path):
    from fermetric.study import run_study

    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    study = study_from_dict(ZOO_STUDY)
    assert [study.models[n].family for n in study.models] == ["classifier", "classifier", "triplet", "ensemble"]
    res = run_study(study, data="synth", out=tmp_path / "study", device="cpu")
    assert res.runs == [] and not (tmp_path / "study" / "runs").exists()  # nothing trained
    rows = {r["model"]: r for r in res.rows}
    assert {"clf", "clf2", "tri", "ens", "ensemble (soft vote)"} <= set(rows)
    assert rows["clf"]["accuracy"] == rows["clf2"]["accuracy"]  # the same entry twice, the same numbers
    figures = {p.name for p in res.figures}
    assert {"confusion_grid.png", "explain_clf.png", "explain_ens.png", "lime_ens.png"} <= figures
    assert any(f.startswith("filters_clf") for f in figures)
    assert (tmp_path / "study" / "explain_eval" / "explain_eval.md").is_file()
    assert res.paths["report.html"].is_file()


def test_a_pretrained_model_takes_no_training_settings(tiny_ensemble_zoo, monkeypatch):
    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    with pytest.raises(ConfigError, match="a pretrained model is not trained"):
        study_from_dict({"models": {"clf": {"pretrained": "tiny-clf", "set": ["train.epochs=3"]}}})
    with pytest.raises(ConfigError, match="models.x.pretrained: no pretrained model named 'nope'"):
        study_from_dict({"models": {"x": {"pretrained": "nope"}}})
    with pytest.raises(ConfigError, match="family ensemble is for pretrained ensembles"):
        study_from_dict({"models": {"x": {"family": "ensemble"}}})


@pytest.mark.parametrize("order", [("tiny-clf", "tiny-tri", "tiny-ens"), ("tiny-ens", "tiny-clf", "tiny-tri")])
def test_the_zoo_ensemble_votes_with_the_studys_own_runs_of_its_members(tiny_ensemble_zoo, monkeypatch, tmp_path, order):
    """Whichever comes first, the ensemble's members are the study's runs of those entries, so a
    member's TTA pass over the split (the study's TTA row, the ensemble's vote) is computed once."""
    from fermetric.scoring.run import split_proba
    from fermetric.study.outputs import _open_pretrained

    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    shared: dict = {}
    runs = {}
    for name in order:
        runs[name] = _open_pretrained(name, "synth", "cpu", shared)
        if name == "tiny-clf":
            first = split_proba(runs[name], "val", tta="shift")
    ens = runs["tiny-ens"]
    assert [m.run for m in ens.members] == [runs["tiny-clf"], runs["tiny-tri"]]
    assert all(m.run is r for m, r in zip(ens.members, (runs["tiny-clf"], runs["tiny-tri"])))
    split_proba(ens, "val")  # the vote reads the member's cached TTA probabilities: the same array
    assert split_proba(runs["tiny-clf"], "val", tta="shift") is first
