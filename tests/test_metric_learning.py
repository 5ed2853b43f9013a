"""The metric-learning family learns on SynthFER: pure contrastive (Siamese) and pure triplet
models reach a kNN accuracy well above chance (1/7 = 14 %; always guessing the commonest class,
Happy, scores 25 %)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

LEARN = ["--model", "baseline", "--epochs", "4", "--set", "data.synth_train=2400", "--set", "data.synth_val=560",
         "--set", "data.synth_test=0", "--set", "model.width=16", "--set", "metric.m_per_class=8",
         "--set", "optim.lr=0.003", "--set", "data.synth_difficulty=0.5"]


@pytest.mark.parametrize("command", ["train-siamese", "train-triplet"])
def test_metric_models_learn_on_synthfer(command, tmp_path):
    out = tmp_path / command
    run_cli([command, *LEARN, "--out", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "embedding" and m["val"]["knn_k"] == 10
    assert m["val"]["accuracy"] >= 0.35, m["val"]["accuracy"]
    assert not m["val"]["collapsed"], m["val"]["mean_pairwise_cosine"]
