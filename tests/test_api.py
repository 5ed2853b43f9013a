"""Every command's work is one Python call (fermetric.api, re-exported by fermetric), and the
layers above training read runs without importing the training package."""
import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import fermetric
from fermetric.analysis.methods import pick_per_class
from fermetric.runs import load_run

from conftest import hold_run_lock
from fermetric.scoring.run import split_predictions

PACKAGE = Path(fermetric.__file__).parent


def test_evaluate_run_is_one_call_and_writes_what_evaluate_writes(classifier_run, tmp_path):
    m, paths = fermetric.evaluate_run(classifier_run, split="val", out=tmp_path, device="cpu")
    assert [p.name for p in paths] == ["val.json", "val.md", "val_confusion.png", "val_reliability.png"]
    assert all(p.is_file() for p in paths)
    assert json.loads(paths[0].read_text())["accuracy"] == pytest.approx(m["accuracy"])
    run = load_run(classifier_run, device="cpu")
    labels = run.load_data()["val"].labels.numpy()
    assert m["accuracy"] == pytest.approx(float((split_predictions(run, "val") == labels).mean()))


def test_explain_run_explains_the_seeded_images_of_each_class(classifier_run, tmp_path):
    rec = fermetric.explain_run(classifier_run, "saliency", split="val", per_class=1, out=tmp_path, seed=3, device="cpu")
    labels = load_run(classifier_run, device="cpu").load_data()["val"].labels.numpy()
    assert list(rec["indices"]) == pick_per_class(labels, 1, len(set(labels.tolist())), seed=3).tolist()
    assert rec["methods"] == ["saliency"] and [p.name for p in rec["paths"]] == ["saliency_val.png"]
    assert np.load(tmp_path / "saliency_val.npy").shape == (len(rec["indices"]), 48, 48)


def test_writing_into_a_locked_run_is_refused(classifier_run, tmp_path):
    from fermetric.utils.runlock import RunLockedError

    run = tmp_path / "run"  # a copy: the killed holder leaves its lock file behind
    shutil.copytree(classifier_run, run)
    proc = hold_run_lock(run)
    try:
        with pytest.raises(RunLockedError):
            fermetric.evaluate_run(run, device="cpu")  # default out: RUN/eval
        assert not (run / "eval").exists()
    finally:
        proc.kill()
        proc.wait()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_nothing_outside_training_imports_training():
    # fermetric.train (api.train: the train-* commands call it) and a study (fermetric.study.runner) start trainings
    allowed = {PACKAGE / "api" / "train.py", PACKAGE / "study" / "runner.py"}
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "training" not in p.relative_to(PACKAGE).parts[:1] and p not in allowed
                 and any(m == "fermetric.training" or m.startswith("fermetric.training.") for m in _imports(p))]
    assert offenders == []


def test_train_is_one_call(tmp_path):
    """fermetric.train does what train-classifier does: the same run directory, from Python."""
    from conftest import TINY_TRAIN_ARGS
    from fermetric.errors import ConfigError

    overrides = [a for a, prev in zip(TINY_TRAIN_ARGS, ["", *TINY_TRAIN_ARGS]) if prev == "--set"]
    res = fermetric.train("classifier", model="baseline", epochs=1, overrides=overrides, out=str(tmp_path / "clf"),
                          quiet=True)
    assert (tmp_path / "clf" / "metrics.json").is_file() and res.metrics["epochs_run"] == 1
    with pytest.raises(ConfigError, match="--resume needs --out"):
        fermetric.train("classifier", resume=True)
    with pytest.raises(ConfigError, match="unknown training family"):
        fermetric.train("softmax")
