"""PrototypeScorer: cosine of an embedding to the class centroids of a gallery."""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.data.classes import FER2013_CLASSES
from fermetric.errors import DataError
from fermetric.models.layers import eval_mode
from fermetric.scoring.base import DEFAULT_BATCH_SIZE, Scorer, model_device
from fermetric.utils import runtime

log = logging.getLogger(__name__)


class PrototypeScorer(Scorer):
    """Cosine similarity of the embedding to each class centroid of a gallery (differentiable).

    score_c(x) = <e(x)/|e(x)|, m_c/|m_c|>, m_c the mean gallery embedding of class c. Classes
    absent from the gallery score -1 (the lowest cosine) and a warning is logged.

    Args:
        embedding_model: maps images (N, 1, 48, 48) to embeddings (N, D).
        gallery_embeddings: (G, D) embeddings of the training gallery (tensor or array).
        gallery_labels: (G,) class ids.
        num_classes: C (default: max label + 1).
        class_names: names of the C classes (default FER2013's when C is 7).
        batch_size: images per forward pass.
    """

    kind = "prototype"

    def __init__(self, embedding_model: nn.Module, gallery_embeddings: Any, gallery_labels: Any,
                 num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto"):
        emb = torch.as_tensor(np.asarray(gallery_embeddings) if not isinstance(gallery_embeddings, torch.Tensor) else gallery_embeddings)
        lab = torch.as_tensor(np.asarray(gallery_labels) if not isinstance(gallery_labels, torch.Tensor) else gallery_labels)
        emb = emb.detach().float().cpu()
        lab = lab.detach().long().cpu()
        if emb.dim() != 2 or lab.dim() != 1 or emb.shape[0] != lab.shape[0] or emb.shape[0] == 0:
            raise DataError(
                f"gallery embeddings must be (G, D) and labels (G,) with G > 0; got {tuple(emb.shape)} and {tuple(lab.shape)}"
            )
        if int(lab.min()) < 0:
            raise DataError(f"gallery labels must be class ids >= 0; got min {int(lab.min())}")
        c = int(lab.max()) + 1 if num_classes is None else int(num_classes)
        if int(lab.max()) >= c:
            raise DataError(f"gallery labels must lie in 0..{c - 1} for num_classes={c}; got max {int(lab.max())}")
        if class_names is None and c == len(FER2013_CLASSES):
            class_names = FER2013_CLASSES
        super().__init__(embedding_model, batch_size, class_names, precision)
        sums = torch.zeros(c, emb.shape[1]).index_add_(0, lab, F.normalize(emb, dim=1))
        counts = torch.bincount(lab, minlength=c)
        self.present = counts > 0
        if not bool(self.present.all()):
            missing = [self.class_name(i) for i in torch.nonzero(~self.present).flatten().tolist()]
            log.warning("PrototypeScorer: no gallery embedding for class(es) %s; they score -1", ", ".join(missing))
        self.centroids = F.normalize(sums, dim=1)  # (C, D); zero rows for absent classes
        self.embedding_dim = int(emb.shape[1])
        self._num_classes = c

    @classmethod
    def from_dataset(cls, embedding_model: nn.Module, dataset, batch_size: int = DEFAULT_BATCH_SIZE, **kwargs) -> "PrototypeScorer":
        """Embed a FERDataset (the training gallery) in batches and build the scorer from it."""
        model_dev = model_device(embedding_model)
        prec = runtime.resolve_precision(kwargs.get("precision", "auto"), model_dev)
        x = dataset.images
        chunks = []
        with eval_mode(embedding_model), runtime.inference(model_dev, prec):
            for i in range(0, x.shape[0], batch_size):
                chunks.append(embedding_model(x[i:i + batch_size].float().div(255.0).to(model_dev)).float().cpu())
        kwargs.setdefault("num_classes", dataset.num_classes)
        kwargs.setdefault("class_names", dataset.class_names)
        return cls(embedding_model, torch.cat(chunks), dataset.labels, batch_size=batch_size, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_embedding(self.model(x))

    def _graph(self):
        return self.model, self._from_embedding

    def _from_embedding(self, emb: torch.Tensor) -> torch.Tensor:
        e = F.normalize(emb.float(), dim=1)  # cosines in fp32 under any autocast
        cent = self.centroids.to(device=e.device, dtype=e.dtype)
        s = e @ cent.T
        if not bool(self.present.all()):
            s = torch.where(self.present.to(e.device)[None, :], s, torch.full_like(s, -1.0))
        return s
