"""The shared training loop and the commands that read runs back, on tiny SynthFER runs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_TRAIN_ARGS as TINY, run_cli


def test_run_directory_complete(classifier_run: Path):
    for rel in ("config.yaml", "history.csv", "metrics.json", "train.log", "checkpoints/best.pt",
                "checkpoints/last.pt", "figures/curves.png", "figures/confusion_val.png", "figures/confusion_test.png"):
        assert (classifier_run / rel).is_file(), rel
    rows = list(csv.DictReader(open(classifier_run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    m = json.loads((classifier_run / "metrics.json").read_text())
    assert {"val", "test", "best_epoch", "train_seconds"} <= set(m)
    assert 0.0 <= m["val"]["accuracy"] <= 1.0 and len(m["val"]["confusion"]) == 7
    assert not list(classifier_run.rglob("*.tmp"))


def test_resume_matches_uninterrupted(tmp_path):
    """1 epoch + resume to 2 epochs ends exactly where a straight 2-epoch run does (CPU, same seed)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["train-classifier", "--model", "baseline", "--seed", "3", *TINY, "--set", "train.max_steps_per_epoch=4"]
    run_cli([*args, "--epochs", "2", "--out", str(straight)])
    run_cli([*args, "--epochs", "1", "--out", str(split)])
    run_cli(["train-classifier", "--resume", "--epochs", "2", "--out", str(split)])
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ma = json.loads((straight / "metrics.json").read_text())
    mb = json.loads((split / "metrics.json").read_text())
    assert ma["val"] == mb["val"]


def test_existing_run_needs_resume(classifier_run: Path):
    res = run_cli(["train-classifier", "--out", str(classifier_run), *TINY, "--epochs", "1"], expect=2)
    assert "--resume" in res.output


@pytest.mark.parametrize("args, fragment", [
    (["--model", "resnet7"], "unknown model 'resnet7'"),
    (["--set", "train.epoch=3"], "unknown config key train.epoch"),
    (["--set", "optim.name=adam"], "unknown optim.name 'adam'"),
    (["--data", "/no/such/file.csv"], "does not exist"),
])
def test_bad_training_inputs(tmp_path, args, fragment):
    res = run_cli(["train-classifier", "--out", str(tmp_path / "r"), "--epochs", "1", *TINY, *args], expect=2)
    assert fragment in res.output and "Traceback" not in res.output


def test_resume_with_other_architecture_is_refused(classifier_run: Path, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(classifier_run, copy)
    cfg = (copy / "config.yaml").read_text().replace("name: baseline", "name: resnet18")
    (copy / "config.yaml").write_text(cfg)
    res = run_cli(["train-classifier", "--resume", "--out", str(copy), "--epochs", "3"], expect=2)
    assert "name is 'baseline' there but 'resnet18' here" in res.output


def test_nan_loss_stops_with_epoch_and_step(tmp_path, monkeypatch):
    from fermetric.training import classifier as clf

    real = clf.ClassifierObjective.training_step
    calls = {"n": 0}

    def poisoned(self, model, images, labels, g):
        calls["n"] += 1
        loss, correct = real(self, model, images, labels, g)
        return (loss * float("nan") if calls["n"] == 6 else loss), correct

    monkeypatch.setattr(clf.ClassifierObjective, "training_step", poisoned)
    out = tmp_path / "nan"
    res = run_cli(["train-classifier", "--out", str(out), "--epochs", "3", *TINY, "--set", "train.max_steps_per_epoch=4"], expect=2)
    assert "epoch 2, step 2" in res.output
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1  # the last good checkpoint is kept


def test_evaluate_tta_and_ensemble(classifier_run: Path, triplet_run: Path, tmp_path):
    # on copies: the session runs are shared, and tests of untouched runs must not depend on the order
    classifier_run = Path(shutil.copytree(classifier_run, tmp_path / "clf"))
    run_cli(["evaluate", str(classifier_run), "--split", "test", "--tta"])
    m = json.loads((classifier_run / "eval" / "test_tta.json").read_text())
    assert m["tta"] == "shift" and m["n"] == 70  # the TTA mode (shift or tencrop), false without
    res = run_cli(["ensemble", str(classifier_run), str(triplet_run), "--out", str(tmp_path / "ens")])
    out = json.loads((tmp_path / "ens" / "ensemble_val.json").read_text())
    assert len(out["members"]) == 2 and {"soft_vote", "val_weighted_vote"} <= set(out)
    assert "soft vote" in res.output
    # every vote is compared image by image with the more accurate member
    best = max(out["members"], key=lambda r: r["val_acc"])
    assert out["best_member"] == best["member"]
    for vote in ("soft_vote", "val_weighted_vote", "fitted_vote"):
        cmp = out[vote]["vs_best_member"]
        assert cmp["n"] == 70 and cmp["accuracy_a"] == pytest.approx(best["val_acc"])
        assert cmp["accuracy_b"] == pytest.approx(out[vote]["accuracy"])
    assert "McNemar p" in res.output
    # how much room the vote had: the two members' agreement and the oracle, from their predictions
    div = out["diversity"]
    assert div["agreement"][0][0] == 1.0 and div["agreement"][0][1] == div["agreement"][1][0]
    assert max(r["val_acc"] for r in out["members"]) <= div["oracle_accuracy"] <= 1.0
    assert div["all_right"] <= min(r["val_acc"] for r in out["members"])
    assert f"at least one is right on {div['oracle_accuracy'] * 100:.2f} %" in res.output  # the line under the table


def test_retrieval_commands_on_both_families(classifier_run: Path, triplet_run: Path, tmp_path):
    classifier_run = Path(shutil.copytree(classifier_run, tmp_path / "clf"))
    triplet_run = Path(shutil.copytree(triplet_run, tmp_path / "tri"))
    for run in (triplet_run, classifier_run):
        run_cli(["build-index", str(run)])
        assert (run / "index" / "meta.json").is_file()
        run_cli(["knn-eval", str(run), "--split", "val"])
        rep = json.loads((run / "knn_val" / "knn_report.json").read_text())
        assert {"accuracy", "mean_average_precision_at_r", "precision_at_1"} <= set(rep)
    run_cli(["embed-plot", str(triplet_run), "--method", "pca"])
    assert (triplet_run / "figures" / "embed_pca_val.png").is_file()
    assert (triplet_run / "embeddings" / "val.npy").is_file()


def test_triplet_metrics_and_collapse_note(triplet_run: Path):
    m = json.loads((triplet_run / "metrics.json").read_text())
    assert m["kind"] == "embedding"
    assert "mean_pairwise_cosine" in m["val"] and isinstance(m["val"]["collapsed"], bool)
