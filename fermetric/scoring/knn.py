"""KNNScorer: the vote of a kNN classifier over a model's embeddings (a black box)."""
from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from fermetric.data.classes import FER2013_CLASSES
from fermetric.errors import ModelError
from fermetric.scoring.base import DEFAULT_BATCH_SIZE, Scorer


class KNNScorer(Scorer):
    """Vote probabilities of a kNN classifier over embeddings (black box: no gradients).

    Args:
        embedding_model: maps images (N, 1, 48, 48) to embeddings (N, D).
        knn_classifier: fitted, with `predict_proba(embeddings (M, D) float32) -> (M, C)`
            (fermetric.retrieval.knn.KNNClassifier).
        num_classes: C (default: the classifier's `num_classes`, else found on the first call).
        class_names: names of the C classes.
        batch_size: images per forward pass.
    """

    differentiable = False
    kind = "knn"
    _compilable = False  # the FAISS search is outside torch

    def __init__(self, embedding_model: nn.Module, knn_classifier: Any, num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str = "auto"):
        if not callable(getattr(knn_classifier, "predict_proba", None)):
            raise ModelError(f"KNNScorer needs a classifier with predict_proba; got {type(knn_classifier).__name__}")
        c = num_classes
        for attr in ("num_classes_", "num_classes"):  # fitted count first, then the declared one
            if c is None and isinstance(getattr(knn_classifier, attr, None), (int, np.integer)):
                c = int(getattr(knn_classifier, attr))
        if class_names is None:
            class_names = getattr(knn_classifier, "class_names", None)
        super().__init__(embedding_model, batch_size, class_names, precision)
        self.knn = knn_classifier
        if c is not None:
            self._num_classes = int(c)
        if self.class_names is None and self.num_classes == len(FER2013_CLASSES):  # num_classes probes if unknown
            self.class_names = FER2013_CLASSES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb = self.model(x)
        return self._vote_tensor(emb).to(x.device)

    def _graph(self):
        return self.model, self._vote_tensor  # the embedding network; the FAISS vote stays outside

    def _vote_tensor(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.vote(emb.float().cpu().numpy()), dtype=torch.float32)

    def vote(self, embeddings: Any, exclude: Optional[np.ndarray] = None) -> np.ndarray:
        """(M, C) vote fractions of embeddings already computed (M, D), e.g. a run's cached split.

        Args:
            exclude: (M,) gallery index each query must not match (its own, when the queries are
                the gallery's images), or None.
        """
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        proba = self.knn.predict_proba(emb) if exclude is None else self.knn.predict_proba(emb, exclude=exclude)
        return np.asarray(proba)

    def vote_predict(self, embeddings: Any, exclude: Optional[np.ndarray] = None) -> np.ndarray:
        """(M,) class ids of embeddings already computed: the vote's arg-max with ties given to
        the class of the nearest neighbour among the tied (what knn-eval counts)."""
        return self.vote_with_predictions(embeddings, exclude)[0]

    def vote_with_predictions(self, embeddings: Any,
                              exclude: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(`vote_predict`, `vote`) of embeddings already computed, from one neighbour search."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        kw = {} if exclude is None else {"exclude": exclude}
        if not callable(getattr(self.knn, "predict_with_proba", None)):  # another classifier with predict / predict_proba
            return np.asarray(self.knn.predict(emb, **kw)), np.asarray(self.knn.predict_proba(emb, **kw))
        pred, proba = self.knn.predict_with_proba(emb, **kw)
        return np.asarray(pred), np.asarray(proba)

    def with_vote(self, k: Optional[int] = None, weighting: Optional[str] = None) -> "KNNScorer":
        """The same scorer voting with another k or weighting (the index is shared, not rebuilt)."""
        if k is None and weighting is None:
            return self
        other = copy.copy(self)
        other.knn = self.knn.with_vote(k, weighting)
        other.__dict__.pop("_compiled", None)
        return other
