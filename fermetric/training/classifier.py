"""The classifier objective: cross-entropy with label smoothing, class weights inverse to class
frequency (cs230's weighted cross-entropy), optional mixup, and softmax evaluation.

On FER+ (`data.ferplus`), `data.ferplus_mode` picks the training target, after the schemes
Barsoum et al. (2016) compare:

- ``majority``: the one-hot plurality label (the most-voted emotion; see fermetric.data.ferplus
  for ties). The paper's "majority voting" scheme; the label is a plurality, not a >50 % majority.
- ``probability``: probabilistic label drawing: every time an image is seen, one label is drawn
  from its vote distribution, and the loss is cross-entropy to that label.
- ``crossentropy``: cross-entropy to the whole vote distribution (soft targets).

Validation and test accuracy are always measured against the plurality label.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.loaders import BatchLoader
from fermetric.data.transforms import BatchAugment
from fermetric.errors import ConfigError
from fermetric.evaluation.metrics import classification_metrics
from fermetric.models.factory import build_model
from fermetric.scoring.split import model_proba
from fermetric.training.objective import Objective


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """w_c = N / (C * n_c), so a balanced set gets weight 1 everywhere; an absent class gets 0."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, labels.numel() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


def classifier_meta(model: nn.Module, cfg, num_classes: int) -> dict[str, Any]:
    return {
        "name": cfg.model.name,
        "num_classes": num_classes,
        "stem": cfg.model.stem,
        "width": cfg.model.width,
        "dropout": cfg.model.dropout,
        "num_features": int(getattr(model, "num_features", 0)),
    }


class ClassifierObjective(Objective):
    kind = "classifier"
    main_metric = "val_acc"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.class_weights: Optional[torch.Tensor] = None

    def build_model(self, num_classes: int) -> nn.Module:
        return build_model("classifier", self.cfg, num_classes)

    def model_meta(self, model: nn.Module, num_classes: int) -> dict[str, Any]:
        return classifier_meta(model, self.cfg, num_classes)

    def train_loader(self, train: FERDataset, seed: int, rank: int = 0, world_size: int = 1) -> BatchLoader:
        aug = BatchAugment(self.cfg.data.augment) if self.cfg.data.augment.enabled else None
        return BatchLoader(train, self.cfg.train.batch_size, shuffle=True, augment=aug, seed=seed,
                           drop_last=True, rank=rank, world_size=world_size, targets=self._targets(train))

    def _targets(self, train: FERDataset) -> Optional[torch.Tensor]:
        """The vote distributions for the soft FER+ modes; None (hard labels) for `majority`."""
        mode = self.cfg.data.ferplus_mode
        if mode == "majority":
            return None
        if train.soft_labels is None:
            raise ConfigError(
                f"data.ferplus_mode={mode} trains on FER+ vote distributions, but the train split has none; "
                "give --ferplus fer2013new.csv (with --data fer2013.csv) or set data.ferplus_mode=majority"
            )
        return train.soft_labels

    def setup(self, model: nn.Module, data: DataSplits, device: torch.device) -> None:
        if self.cfg.train.class_weights:
            self.class_weights = inverse_frequency_weights(data["train"].labels, data.num_classes).to(device)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy to class indices (B,) or to class distributions (B, C); label smoothing
        mixes either with the uniform distribution, class weights scale each class's term."""
        with torch.autocast(logits.device.type, enabled=False):  # the loss in fp32 whatever the step's autocast
            return F.cross_entropy(logits.float(), targets, weight=self.class_weights,
                                   label_smoothing=self.cfg.train.label_smoothing)

    def training_step(self, model, images, labels, generator):
        truth = labels
        if labels.dim() == 2:  # FER+ vote distributions (see _targets)
            truth = labels.argmax(1)  # the plurality label (first maximum), for the running accuracy
            if self.cfg.data.ferplus_mode == "probability":
                # one draw per image per step, from the epoch's CPU generator (deterministic)
                labels = torch.multinomial(labels.float().cpu(), 1, generator=generator).squeeze(1).to(labels.device)
        alpha = self.cfg.train.mixup_alpha
        if alpha > 0:
            # one Beta(alpha, alpha) draw per batch, from the epoch's generator (deterministic)
            lam = _beta(alpha, generator)
            perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
            mixed = lam * images + (1.0 - lam) * images[perm]
            logits = model(mixed)
            loss = lam * self._loss(logits, labels) + (1.0 - lam) * self._loss(logits, labels[perm])
            return loss, None
        logits = model(images)
        loss = self._loss(logits, labels)
        return loss, int((logits.argmax(1) == truth).sum())

    def validate(self, model, data, device):
        val = data["val"]
        probs = model_proba(model, val, self.cfg.train.eval_batch_size, device, precision=self.cfg.train.precision)
        y = val.labels.numpy()
        nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        m = classification_metrics(y, probs.argmax(1), val.class_names)
        return {"val_loss": nll, "val_acc": m["accuracy"], "val_macro_f1": m["macro_f1"]}

    def final_metrics(self, model, data, device, split):
        ds = data[split]
        probs = model_proba(model, ds, self.cfg.train.eval_batch_size, device, precision=self.cfg.train.precision)
        return classification_metrics(ds.labels.numpy(), probs.argmax(1), ds.class_names)


def _beta(alpha: float, g: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw, seeded from the epoch's torch generator (torch's own Beta
    sampler takes no generator, so the draw goes through a NumPy Generator)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
