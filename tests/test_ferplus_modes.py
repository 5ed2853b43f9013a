"""FER+ training targets (data.ferplus_mode): the objective reads the vote distributions, with
label smoothing and mixup, and the CLI trains in every mode (Barsoum et al. 2016's schemes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import run_cli
from fermetric.config import load_config
from fermetric.data.classes import FERPLUS_CLASSES
from fermetric.data.dataset import FERDataset
from fermetric.errors import ConfigError
from fermetric.training.classifier import ClassifierObjective
from test_data_ferplus import write_fer_csv, write_ferplus


class Fixed(torch.nn.Module):
    """A 'model' that returns fixed logits, so losses can be worked out by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


def _objective(*overrides):
    return ClassifierObjective(load_config(None, ["data.ferplus=fp.csv", "train.batch_size=6", *overrides]))


def _dataset(n=6):
    soft = torch.tensor([[0.6, 0.4, 0, 0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0, 0, 0]] * (n // 2))
    return FERDataset(torch.zeros(n, 1, 48, 48, dtype=torch.uint8), soft.argmax(1), FERPLUS_CLASSES, soft_labels=soft)


LOGITS = torch.tensor([[2.0, 0.5, 0, 0, 0, 0, 0, -1], [0.1, 0.2, 1.5, 0, 0, 0, 0, 0]] * 3)


def test_crossentropy_mode_is_soft_target_cross_entropy():
    obj = _objective("data.ferplus_mode=crossentropy", "data.augment.enabled=false")
    ds = _dataset()
    x, y, _ = next(iter(obj.train_loader(ds, seed=0)))
    assert y.shape == (6, 8) and y.dtype == torch.float32  # the loader carries the vote distributions
    loss, correct = obj.training_step(Fixed(LOGITS), x, ds.soft_labels, torch.Generator().manual_seed(0))
    want = -(ds.soft_labels * F.log_softmax(LOGITS, 1)).sum(1).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert correct == 6  # against the plurality label


def test_label_smoothing_and_mixup_with_soft_targets():
    obj = _objective("data.ferplus_mode=crossentropy", "train.label_smoothing=0.2", "train.mixup_alpha=0.4")
    ds = _dataset()
    g = torch.Generator().manual_seed(3)
    loss, _ = obj.training_step(Fixed(LOGITS), torch.zeros(6, 1, 48, 48), ds.soft_labels, g)
    # the same draws by hand: lambda, then the permutation
    g = torch.Generator().manual_seed(3)
    from fermetric.training.classifier import _beta

    lam = _beta(0.4, g)
    perm = torch.randperm(6, generator=g)
    t = ds.soft_labels
    mixed = lam * t + (1 - lam) * t[perm]
    smooth = mixed * 0.8 + 0.2 / 8
    want = -(smooth * F.log_softmax(LOGITS, 1)).sum(1).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_probability_mode_draws_labels_from_the_votes():
    obj = _objective("data.ferplus_mode=probability")
    n = 4000
    soft = torch.tensor([[0.7, 0.3, 0, 0, 0, 0, 0, 0]]).repeat(n, 1)
    logits = torch.tensor([[1.0, -1.0, 0, 0, 0, 0, 0, 0]]).repeat(n, 1)
    loss, correct = obj.training_step(Fixed(logits), torch.zeros(n, 1, 48, 48), soft, torch.Generator().manual_seed(0))
    logp = F.log_softmax(logits[0], 0)
    # about 70 % of the drawn labels are class 0: the loss is near the expected cross-entropy
    expected = -(0.7 * logp[0] + 0.3 * logp[1]).item()
    assert loss.item() == pytest.approx(expected, abs=0.05)
    assert abs(loss.item() + logp[0].item()) > 0.2  # not the hard plurality label's loss
    assert correct == n  # the running accuracy is against the plurality label


def test_majority_mode_keeps_hard_labels():
    obj = _objective()
    ds = _dataset()
    _, y, _ = next(iter(obj.train_loader(ds, seed=0)))
    assert y.dtype == torch.int64 and y.dim() == 1


def test_soft_modes_need_ferplus():
    with pytest.raises(ConfigError, match="data.ferplus_mode=crossentropy.*--ferplus"):
        load_config(None, ["data.ferplus_mode=crossentropy"])
    obj = _objective("data.ferplus_mode=crossentropy")
    no_votes = FERDataset(torch.zeros(2, 1, 48, 48, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ("a", "b"))
    with pytest.raises(ConfigError, match="train split has none"):
        obj.train_loader(no_votes, seed=0)


@pytest.mark.parametrize("mode", ["majority", "probability", "crossentropy"])
def test_cli_trains_in_every_ferplus_mode(tmp_path, mode):
    rng = np.random.default_rng(0)
    usages = ["Training"] * 48 + ["PublicTest"] * 16
    votes = np.zeros((64, 10), dtype=int)
    votes[np.arange(64), rng.integers(0, 8, 64)] = 6
    votes[np.arange(64), rng.integers(0, 8, 64)] += 4
    fp = write_ferplus(tmp_path / "fer2013new.csv", usages, votes.tolist())
    data = write_fer_csv(tmp_path / "fer2013.csv", usages)
    run_cli(["train-classifier", "--data", str(data), "--ferplus", str(fp), "--out", str(tmp_path / "run"),
             "--epochs", "1", "--set", "model.width=4", "--set", "train.batch_size=16",
             "--set", f"data.ferplus_mode={mode}"])
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["data"]["ferplus_mode"] == mode
