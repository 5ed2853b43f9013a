"""Trainer.fit's stop conditions (training/trainer.py `_stop_condition`): a run stops after the
epoch that meets one, says so in the log, and records it in history, last.pt, the sitting and
metrics.json."""
from __future__ import annotations

import json
import logging

import torch

from fermetric.config import load_config
from fermetric.data.sources import load_data
from fermetric.training import classifier as clf
from fermetric.training.trainer import Trainer

TINY = ["device=cpu", "data.synth_train=64", "data.synth_val=16", "data.synth_test=0", "model.width=4",
        "train.batch_size=16", "train.max_steps_per_epoch=1", "train.epochs=3", "train.compile=false"]


def _fit(tmp_path, overrides):
    cfg = load_config(None, TINY + overrides)
    data = load_data(None, cfg.data, seed=cfg.seed)
    logger = logging.getLogger("fermetric")
    level = logger.level
    logger.setLevel(logging.INFO)  # as the CLI sets it: train.log gets the INFO lines
    try:
        result = Trainer(cfg, clf.ClassifierObjective(cfg), data, tmp_path / "run", quiet=True).fit()
    finally:
        logger.setLevel(level)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    return result, last, metrics, (tmp_path / "run" / "train.log").read_text()


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, monkeypatch):
    real_validate = clf.ClassifierObjective.validate
    scores = iter([0.5, 0.4, 0.9])  # best at epoch 1, then worse: patience 1 stops after epoch 2

    def validate(self, model, data, device):
        return {**real_validate(self, model, data, device), self.main_metric: next(scores)}

    monkeypatch.setattr(clf.ClassifierObjective, "validate", validate)
    result, last, metrics, log_text = _fit(tmp_path, ["train.early_stopping_patience=1"])
    assert result.stopped_early and metrics["stopped_early"] is True
    assert [row["epoch"] for row in result.history] == [1, 2] and last["epoch"] == 2
    assert last["best"]["epoch"] == 1 and metrics["best_epoch"] == 1
    assert last["sittings"][-1]["end"] == "stopped: early stopping"
    assert metrics["sittings"][-1]["end"] == "stopped: early stopping"
    assert "early stopping: no improvement of val_acc for 1 epochs" in log_text


def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path):
    result, last, metrics, log_text = _fit(tmp_path, ["train.time_budget_minutes=1e-6"])
    assert result.stopped_early and [row["epoch"] for row in result.history] == [1]
    assert last["sittings"][-1]["end"] == metrics["sittings"][-1]["end"] == "stopped: time budget"
    assert "time budget of 0.0 min reached after epoch 1" in log_text


def test_no_condition_runs_every_epoch_and_finishes(tmp_path):
    result, last, metrics, _ = _fit(tmp_path, [])
    assert not result.stopped_early and metrics["stopped_early"] is False
    assert len(result.history) == 3 and last["epoch"] == 3
    assert last["sittings"][-1]["end"] == "finished"
