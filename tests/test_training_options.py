"""Training options each run end to end on a tiny SynthFER run: optimisers, schedules, class
weights, label smoothing, mixup, other pytorch-metric-learning losses and miners, joint
cross-entropy; plus the collapse detector and the class-weight formula."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN_ARGS, run_cli


@pytest.mark.parametrize("sets", [
    ["optim.name=adamw", "schedule.name=plateau", "schedule.plateau_patience=0"],
    ["train.class_weights=true", "train.label_smoothing=0.1", "train.mixup_alpha=0.4", "train.grad_clip=1.0"],
    ["schedule.name=none", "schedule.warmup_epochs=0", "train.early_stopping_patience=1"],
])
def test_classifier_options_train(tmp_path, sets):
    out = tmp_path / "run"
    run_cli(["train-classifier", "--epochs", "2", "--out", str(out), *TINY_TRAIN_ARGS,
             "--set", "train.max_steps_per_epoch=3", *[x for s in sets for x in ("--set", s)]])
    m = json.loads((out / "metrics.json").read_text())
    rows = (out / "history.csv").read_text().splitlines()
    assert m["epochs_run"] == len(rows) - 1 >= 1
    assert np.isfinite(m["val"]["accuracy"])


@pytest.mark.parametrize("sets", [
    ["metric.loss=MultiSimilarityLoss", "metric.miner=multisimilarity"],
    ["metric.loss=ArcFaceLoss", "metric.miner=null"],  # a loss with its own trained parameters
    ["metric.loss=SupConLoss", "metric.miner=null", "metric.ce_weight=0.5"],
    ["metric.miner=semihard", "metric.knn_weighting=majority", "model.embedding_dim=32"],
])
def test_metric_losses_and_miners_train(tmp_path, sets):
    out = tmp_path / "run"
    run_cli(["train-triplet", "--epochs", "1", "--out", str(out), *TINY_TRAIN_ARGS, "--set", "metric.m_per_class=4",
             "--set", "train.max_steps_per_epoch=3", *[x for s in sets for x in ("--set", s)]])
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    if "metric.loss=ArcFaceLoss" in sets:
        assert ck["extra_state_dicts"] and "W" in ck["extra_state_dicts"][0]  # ArcFace's class centres saved
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "embedding" and 0 <= m["val"]["accuracy"] <= 1


def test_unknown_miner_lists_valid_ones(tmp_path):
    res = run_cli(["train-triplet", "--out", str(tmp_path / "r"), *TINY_TRAIN_ARGS, "--set", "metric.miner=lucky"], expect=2)
    assert "lucky" in res.output and "semihard" in res.output and "TripletMarginMiner" in res.output


def test_inverse_frequency_weights_by_hand():
    from fermetric.training.classifier import inverse_frequency_weights

    w = inverse_frequency_weights(torch.tensor([0, 0, 0, 1]), 3)
    # N / (C * n_c): 4 / (3 * 3), 4 / (3 * 1), absent class 0
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
