"""ClassifierScorer: a classifier's logits or softmax probabilities."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from fermetric.data.classes import FER2013_CLASSES
from fermetric.errors import ConfigError, ModelError
from fermetric.scoring.base import DEFAULT_BATCH_SIZE, Scorer


class ClassifierScorer(Scorer):
    """A classifier's logits or softmax probabilities (differentiable).

    Args:
        model: maps (N, 1, 48, 48) [0, 1] images to logits (N, C) (a fermetric FERModel or any
            module); for an EmbeddingModel built with num_classes, its cosine-classifier logits.
        output: "logits" or "softmax".
        class_names: names of the C classes; default: the model's `class_names`, or FER2013's
            when the model has 7 classes.
        batch_size: images per forward pass.
    """

    kind = "classifier"

    def __init__(self, model: nn.Module, output: str = "logits", class_names: Optional[Sequence[str]] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto"):
        if output not in ("logits", "softmax"):
            raise ConfigError(f"ClassifierScorer output must be 'logits' or 'softmax'; got {output!r}")
        # An embedding model's forward returns embeddings, not logits: use its cosine classifier.
        self._use_logits_method = hasattr(model, "embedding_dim") and callable(getattr(model, "forward_logits", None))
        if self._use_logits_method and getattr(model, "classifier", None) is None:
            raise ModelError(
                f"{type(model).__name__} returns embeddings and has no classifier head; "
                "use PrototypeScorer (cosine to class centroids) or KNNScorer (kNN vote) for it"
            )
        n = getattr(model, "num_classes", None)
        if class_names is None:
            class_names = getattr(model, "class_names", None)
        if class_names is None and n == len(FER2013_CLASSES):
            class_names = FER2013_CLASSES
        super().__init__(model, batch_size, class_names, precision)
        self.output = output
        if isinstance(n, int):
            self._num_classes = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_logits(x) if self._use_logits_method else self.model(x)
        return self._finish(out)

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1) if self.output == "softmax" else logits

    def _graph(self):
        # the logits network is exported; the softmax stays here, so one graph serves both outputs
        return (_Logits(self.model) if self._use_logits_method else self.model), self._finish


class _Logits(nn.Module):
    """An embedding model's cosine-classifier logits as a network's forward (for the export)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(x)
