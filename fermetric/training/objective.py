"""The objective interface the shared training loop calls (template method, after
pytorch-metric-learning's BaseMetricLossFunction): one class per family decides how a batch
becomes a loss and how a split is evaluated; the loop does everything else."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from fermetric.config import RunConfig
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.loaders import BatchLoader


class Objective:
    kind: str = ""  # "classifier" or "embedding": written into checkpoints and run directories
    main_metric: str = "val_acc"  # history column that selects the best checkpoint (higher is better)
    loss_scale: float = 1.0  # the returned loss is this many times the logged one (pml's distributed wrapper)

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    # --- set-up -------------------------------------------------------------------------------
    def build_model(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def model_meta(self, model: nn.Module, num_classes: int) -> dict[str, Any]:
        """What a checkpoint records to rebuild the model (name, num_classes, ...)."""
        raise NotImplementedError

    def train_loader(self, train: FERDataset, seed: int, rank: int = 0, world_size: int = 1) -> BatchLoader:
        raise NotImplementedError

    def setup(self, model: nn.Module, data: DataSplits, device: torch.device) -> None:
        """Called once before training (e.g. class weights from the train split)."""

    def distribute(self, world_size: int) -> None:
        """Called once under DistributedDataParallel (e.g. wrap losses to mine across processes)."""

    def extra_modules(self) -> list[nn.Module]:
        """Modules besides the model whose parameters the optimiser trains (e.g. ArcFace's)."""
        return []

    # --- per batch ----------------------------------------------------------------------------
    def training_step(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, Optional[int]]:
        """Returns (loss, number of correct predictions in the batch or None)."""
        raise NotImplementedError

    # --- evaluation ---------------------------------------------------------------------------
    def validate(self, model: nn.Module, data: DataSplits, device: torch.device) -> dict[str, float]:
        """History columns after an epoch, e.g. {"val_loss": ..., "val_acc": ..., "val_macro_f1": ...}."""
        raise NotImplementedError

    def final_metrics(self, model: nn.Module, data: DataSplits, device: torch.device, split: str) -> dict[str, Any]:
        """Full metrics (evaluation.metrics.classification_metrics form) of the best model on a split."""
        raise NotImplementedError

    def epoch_notes(self, model: nn.Module, data: DataSplits, device: torch.device) -> dict[str, Any]:
        """Extra per-epoch facts to log and keep in metrics.json (e.g. embedding collapse)."""
        return {}

    def stop_reason(self) -> str:
        """A reason to stop training after this epoch (e.g. embedding collapse), or ""."""
        return ""
