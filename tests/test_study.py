"""`fermetric study`: a tiny study (two tiny models, SynthFER) interrupted in its second model,
then run again: finished runs reused (not retrained), the interrupted one resumed, and every
figure and table written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fermetric.errors import ConfigError, FermetricError
from fermetric.study import run_study, study_from_dict
from tests.conftest import snapshot

TINY = {
    "name": "tiny", "data": "synth", "seeds": [0],
    "set": ["data.synth_train=210", "data.synth_val=70", "data.synth_test=70", "model.width=8",
            "train.batch_size=32", "train.eval_batch_size=128", "train.epochs=1"],
    "models": {
        "cnn": {"family": "classifier", "set": ["model.name=baseline"]},
        # two epochs, so that it can be interrupted after a finished one
        "tri": {"family": "triplet", "set": ["model.name=baseline", "metric.m_per_class=4", "train.epochs=2"]},
    },
    "ensemble": ["cnn", "tri"],
    "tta": "tencrop",
    # figures of one model (each figure is a second of matplotlib); the faithfulness table has both
    "explain": {"models": ["tri"], "methods": ["saliency", "lime"], "lime_samples": 12, "faithfulness_per_class": 1,
                "filters": {"channels": 2, "steps": 2}},
}


@pytest.fixture(scope="module")
def study_dirs(tmp_path_factory):
    """The tiny study interrupted (Ctrl-C) in the second epoch of its second model, then run again."""
    from fermetric.training.metric import MetricObjective

    out = tmp_path_factory.mktemp("study") / "tiny"
    calls = {"n": 0}
    validate = MetricObjective.validate

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # tri's second epoch: its first is checkpointed
            raise KeyboardInterrupt
        return validate(self, *args, **kwargs)

    MetricObjective.validate = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(study_from_dict(TINY), out=out)
    finally:
        MetricObjective.validate = validate
    runs = out / "runs"
    after_interrupt = {"cnn": snapshot(runs / "cnn-seed0"), "tri_files": sorted(snapshot(runs / "tri-seed0"))}
    result = run_study(study_from_dict(TINY), out=out)
    return out, result, after_interrupt


def test_interrupted_study_resumes_without_retraining(study_dirs):
    out, result, before = study_dirs
    assert "metrics.json" not in before["tri_files"] and "checkpoints/last.pt" in before["tri_files"]
    status = {r.name: r.status for r in result.runs}
    assert status == {"cnn": "reused", "tri": "resumed"}
    cnn = out / "runs" / "cnn-seed0"
    now = snapshot(cnn)
    # the finished run is untouched: same weights, same metrics (outputs may only add files)
    for key in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.json", "history.csv", "config.yaml"):
        assert now[key] == before["cnn"][key], key
    tri = json.loads((out / "runs" / "tri-seed0" / "metrics.json").read_text())
    assert tri["epochs_run"] == 2
    assert len(tri["sittings"]) == 2 and tri["sittings"][-1]["end"] == "finished"


def test_tiny_study_writes_every_figure_and_table(study_dirs):
    out, result, _ = study_dirs
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"confusion_grid.png", "explain_tri.png", "lime_tri.png", "lime_all_classes_tri.png"} <= figs
    assert "neighbours_tri.png" in figs  # the embedding model's kNN decision by example
    assert "explain_cnn.png" not in figs and "neighbours_cnn.png" not in figs  # explain.models; a classifier
    assert any(f.startswith("filters_cnn_") for f in figs) and any(f.startswith("activations_cnn_") for f in figs)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == ["cnn", "tri", "ensemble (soft vote)", "ensemble (fitted)"]
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and r["seed"] == "0" and r["split"] == "test"
        assert r["f1_Angry"] != "" and int(r["parameters"]) > 0
    assert rows[0]["tta"] == "tencrop" and rows[0]["tta_accuracy"] != ""
    assert rows[1]["tta_accuracy"] == ""  # TTA is for classifiers
    cnn_metrics = json.loads((out / "runs" / "cnn-seed0" / "metrics.json").read_text())
    assert float(rows[0]["accuracy"]) == pytest.approx(cnn_metrics["test"]["accuracy"], abs=1e-6)  # 6 digits in CSV
    assert (out / "ensemble" / "seed0" / "ensemble_test.json").is_file()
    ens = json.loads((out / "ensemble" / "seed0" / "ensemble_test.json").read_text())
    assert all(0 <= float(r["ece"]) <= 1 and float(r["nll"]) > 0 for r in rows)  # every row's probabilities calibrated
    assert float(rows[2]["ece"]) == pytest.approx(ens["soft_vote"]["calibration"]["ece"], abs=1e-6)
    assert all("calibration" in m for m in ens["members"])
    md = (out / "results.md").read_text()
    assert "ECE % / NLL / Brier" in md
    assert "| cnn | classifier | 0 | test |" in md and "±" not in md
    table = json.loads((out / "explain_eval" / "explain_eval.json").read_text())
    assert table["masks"] is True  # SynthFER: mask mass and pointing game per method and model
    pairs = {(r["model"].split()[0], r["method"]) for r in table["rows"]}
    assert pairs == {(m, method) for m in ("cnn", "tri") for method in ("saliency", "lime", "similarity map")} | \
        {("tri", "neighbours (vote map)")}  # the kNN decision by example: embedding models only
    assert all(r["mask_mass_ratio"] is not None and r["pointing_game"] is not None for r in table["rows"])
    # ... and in results.md (and the report) as one table: a row per method, a column per model
    evidence = md.split("mask mass ratio / pointing game per method and model")[1].strip().splitlines()
    assert evidence[2] == "| method | cnn (baseline) | tri (baseline) |"
    by = {(r["model"].split()[0], r["method"]): r for r in table["rows"]}
    assert len(evidence) >= 8 and evidence[6].startswith("| similarity map |")
    assert evidence[7].startswith("| neighbours (vote map) | - | ")  # the classifier has no kNN vote here
    for line, method in zip(evidence[4:], ("saliency", "lime", "similarity map")):
        cells = [c.strip() for c in line.strip("| ").split("|")]
        assert cells == [method] + [f"{by[(m, method)]['mask_mass_ratio']:.2f} / {by[(m, method)]['pointing_game']:.2f}"
                                    for m in ("cnn", "tri")]
    assert "Mask mass ratio / pointing game" in (out / "explain_eval" / "explain_eval.md").read_text()
    html = (out / "report.html").read_text()
    assert "Study results" in html and "confusion_grid" in html and "| method | cnn (baseline) | tri (baseline) |" in html


def test_second_seed_adds_mean_and_std(study_dirs):
    out, _, _ = study_dirs
    res = run_study(study_from_dict(TINY), out=out, seeds=[1], only=["cnn"], explain=False, tta=False)
    assert [(r.name, r.seed, r.status) for r in res.runs] == [("cnn", 1, "trained")]
    seeds = sorted((r["model"], r["seed"]) for r in res.rows if r["model"] == "cnn")
    assert seeds == [("cnn", 0), ("cnn", 1)]  # seed 0's finished run joins the table
    md = (out / "results.md").read_text()
    assert "Mean ± sample standard deviation over seeds" in md and "| cnn | 0 1 |" in md
    summary = list(csv.DictReader((out / "results_summary.csv").open()))
    cnn = next(s for s in summary if s["model"] == "cnn")
    accs = [r["accuracy"] for r in res.rows if r["model"] == "cnn"]
    assert float(cnn["accuracy_mean"]) == pytest.approx(sum(accs) / 2, rel=1e-5)


def test_finished_run_with_another_config_is_refused_not_overwritten(study_dirs):
    out, _, _ = study_dirs
    changed = json.loads(json.dumps(TINY))
    changed["models"]["cnn"]["set"].append("model.dropout=0.1")
    before = snapshot(out / "runs" / "cnn-seed0")
    with pytest.raises(FermetricError, match=r"model.dropout.*another --out"):
        run_study(study_from_dict(changed), out=out, explain=False)
    assert snapshot(out / "runs" / "cnn-seed0") == before


@pytest.mark.parametrize("change, message", [
    ({"models": {}}, "needs `models:`"),
    ({"modles": 1}, "unknown config key modles"),
    ({"ensemble": ["cnn", "vgg"]}, "ensemble names vgg"),
    ({"explain": {"methods": ["saliency", "shap"]}}, "unknown method"),
    ({"tta": "twelvecrop"}, "unknown TTA"),
    ({"models": {"cnn": {"family": "svm"}}}, "models.cnn.family='svm'"),
])
def test_bad_study_files_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        study_from_dict({**json.loads(json.dumps(TINY)), **change})


def test_bad_override_found_before_any_training(tmp_path):
    bad = json.loads(json.dumps(TINY))
    bad["models"]["tri"]["set"].append("train.epochs=0")
    with pytest.raises(ConfigError, match="study model 'tri'.*train.epochs"):
        run_study(study_from_dict(bad), out=tmp_path / "s")
    assert not (tmp_path / "s" / "runs").exists()


def test_study_and_recipe_configs_resolve():
    from fermetric.config import load_config
    from fermetric.study import load_study
    from fermetric.study.runner import resolve_model_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    studies = sorted((configs / "study").glob("*.yaml"))
    assert {p.stem for p in studies} >= {"synth", "cpu_fer2013", "gpu_full", "zoo_fer2013"}
    for path in studies:
        study = load_study(path)
        if path.stem == "zoo_fer2013":  # the zoo's entries, trained elsewhere: nothing to resolve
            assert all(e.pretrained for e in study.models.values())
            continue
        assert list(study.models) == ["baseline", "resnet18", "vgg16", "resnet50", "senet50", "triplet", "siamese"]
        for name in study.models:
            resolve_model_config(study, name, 0, data="synth")
    # the built-in default is configs/study/synth.yaml written out
    default, synth = load_study(None), load_study(configs / "study" / "synth.yaml")
    for name in default.models:
        assert resolve_model_config(default, name, 0) == resolve_model_config(synth, name, 0)
    recipes = {p.stem: load_config(p) for p in sorted((configs / "recipes").glob("*.yaml"))}
    k = recipes["khaireddin2021_vgg"]
    assert (k.optim.name, k.optim.lr, k.optim.nesterov) == ("sgd", 0.01, True)
    assert (k.schedule.name, k.schedule.plateau_factor, k.schedule.plateau_patience, k.train.epochs) == ("plateau", 0.75, 5, 300)
    assert k.data.augment.crop_padding == 4  # ten-crop positions of a 40-px crop of a 48-px face
    assert {"pramerdorfer2016_vgg", "cs230_baseline"} <= set(recipes)


def test_a_classifier_is_not_another_run_because_of_metric_defaults():
    """A finished classifier trained before a newer fermetric changed the metric.* defaults is the
    same run for the study (a classifier never reads metric.*); an embedding run is not."""
    from fermetric.config import RunConfig
    from fermetric.study.runner import config_differences

    old, new = RunConfig(), RunConfig()
    old.metric.knn_k, new.metric.knn_k = 10, 20
    assert config_differences(old, new, family="classifier") == []
    assert config_differences(old, new, family="triplet") == ["metric.knn_k: 10 in the run, 20 in the study"]
    old.train.epochs = new.train.epochs + 1
    assert config_differences(old, new, family="classifier") == [
        f"train.epochs: {old.train.epochs} in the run, {new.train.epochs} in the study"]


@pytest.mark.parametrize("name, objective", [("cnn", "fermetric.training.classifier.ClassifierObjective"),
                                             ("tri", "fermetric.training.metric.MetricObjective")])
def test_interrupted_run_with_other_metric_values_resumes_only_if_a_classifier(tmp_path, monkeypatch, name, objective):
    """A run interrupted before a newer fermetric changed the metric.* defaults: a classifier (which
    never reads metric.*) is resumed, the new values recorded as changes; an embedding run, whose
    training they set, is refused as another configuration and left as it was."""
    import importlib

    import yaml

    from fermetric.study.runner import _DataCache, train_model

    module, cls = objective.rsplit(".", 1)
    obj = getattr(importlib.import_module(module), cls)
    validate, calls = obj.validate, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch: the first is checkpointed
            raise KeyboardInterrupt
        return validate(self, *args, **kwargs)

    spec = json.loads(json.dumps(TINY))
    spec["models"], spec["ensemble"], spec["explain"]["models"] = {name: spec["models"][name]}, [name], [name]
    spec["models"][name]["set"] = spec["models"][name]["set"] + ["train.epochs=2"]
    study = study_from_dict(spec)
    monkeypatch.setattr(obj, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_model(study, name, 0, tmp_path, _DataCache())
    monkeypatch.setattr(obj, "validate", validate)
    run = tmp_path / "runs" / f"{name}-seed0"
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.pt").is_file()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    knn_k = cfg["metric"]["knn_k"]
    cfg["metric"]["knn_k"], cfg["metric"]["margin"] = knn_k + 3, 0.5  # an older fermetric's defaults
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if name == "tri":
        before = snapshot(run)
        with pytest.raises(ConfigError, match=rf"cannot resume .*metric.knn_k is {knn_k + 3} in the run but {knn_k}"):
            train_model(study, name, 0, tmp_path, _DataCache())
        assert snapshot(run) == before
        return
    assert train_model(study, name, 0, tmp_path, _DataCache()).status == "resumed"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["sittings"][-1]["end"] == "finished"
    assert metrics["sittings"][-1]["changes"] == {"metric.knn_k": [knn_k + 3, knn_k], "metric.margin": [0.5, 0.2]}
    assert yaml.safe_load((run / "config.yaml").read_text())["metric"]["knn_k"] == knn_k


def test_demo_is_the_demo_study_run_by_the_study_runner(tmp_path):
    """`fermetric demo` (tiny: --set shrinks the data and the models) writes the study layout with
    the demo's kNN reports and UMAP maps."""
    from conftest import TINY_TRAIN_ARGS, run_cli

    out = tmp_path / "demo"
    sets = [*TINY_TRAIN_ARGS, "--set", "metric.m_per_class=4"]
    res = run_cli(["demo", "--epochs", "1", "--out", str(out), *sets])
    assert "demo finished" in res.output and (out / "report.html").is_file() and (out / "results.md").is_file()
    for name in ("classifier", "triplet"):
        run = out / "runs" / f"{name}-seed0"
        assert (run / "metrics.json").is_file() and (run / "knn_val" / "knn_report.json").is_file()
        assert (run / "figures" / "embed_umap_val.png").is_file()
    assert (out / "figures" / "confusion_grid.png").is_file() and (out / "explain_eval" / "explain_eval.json").is_file()
    assert "TTA" in (out / "results.md").read_text()  # the classifier is evaluated with TTA
    # (a second call reuses the finished runs: the study runner's reuse, tested above on the tiny study)
