"""Reading a run directory back: its config, its model (from best.pt), its data, and the
class probabilities or embeddings of any split. Every command that takes RUN goes through here,
for classifier and embedding runs alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from fermetric.config import RunConfig, load_config
from fermetric.data.dataset import DataSplits
from fermetric.data.sources import load_data
from fermetric.errors import CheckpointError, FermetricError
from fermetric.training.checkpoint import check_compatible, load_checkpoint, load_state_dict_checked
from fermetric.utils.device import resolve_device
from fermetric.utils.io import read_json


def build_model_for(kind: str, cfg: RunConfig, num_classes: int) -> nn.Module:
    """The untrained model a run of `kind` trains (same code path as training)."""
    if kind == "classifier":
        from fermetric.training.classifier import build_classifier

        return build_classifier(cfg, num_classes)
    if kind == "embedding":
        from fermetric.training.metric import build_embedding_model

        return build_embedding_model(cfg, num_classes)
    raise CheckpointError(f"unknown run kind {kind!r}; expected 'classifier' or 'embedding'")


@dataclass
class Run:
    path: Path
    cfg: RunConfig
    kind: str
    class_names: tuple[str, ...]
    model: nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    _data: Optional[DataSplits] = field(default=None, repr=False)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return read_json(p) if p.is_file() else {}

    def load_data(self, source: Optional[str] = None) -> DataSplits:
        """The run's data (SynthFER is regenerated from the run's seed: the same images)."""
        if source is not None:
            return load_data(source, self.cfg.data, seed=self.cfg.seed)
        if self._data is None:
            self._data = load_data(None, self.cfg.data, seed=self.cfg.seed)
            if tuple(self._data.class_names) != tuple(self.class_names):
                raise FermetricError(
                    f"run {self.path} was trained on classes {list(self.class_names)} but its data now has "
                    f"{list(self._data.class_names)}"
                )
        return self._data

    def embed(self, split: str, batch_size: int = 512) -> np.ndarray:
        """(N, D) float32: embeddings (embedding runs) or pre-logit features (classifiers)."""
        key = f"embed:{split}"
        if key not in self._cache:
            from fermetric.evaluation.predict import embed_dataset

            self.model.eval()
            fn = self.model.embed if hasattr(self.model, "embed") else self.model
            self._cache[key] = embed_dataset(fn, self.load_data()[split], batch_size, self.device)
        return self._cache[key]

    def predict_proba(self, split: str, tta: bool = False, batch_size: int = 512) -> np.ndarray:
        """(N, C) class probabilities: softmax for classifiers, kNN vote fractions (gallery = the
        train split) for embedding runs."""
        key = f"proba:{split}:{tta}"
        if key in self._cache:
            return self._cache[key]
        data = self.load_data()
        if self.kind == "classifier":
            from fermetric.evaluation.predict import predict_proba

            probs = predict_proba(self.model, data[split], batch_size, self.device, tta=tta)
        else:
            if tta:
                raise FermetricError("TTA is for classifier runs; embedding runs vote through the kNN index")
            knn = self.knn()
            probs = knn.predict_proba(self.embed(split, batch_size))
        self._cache[key] = probs
        return probs

    def scorer(self, kind: str = "auto", output: str = "softmax", batch_size: int = 256):
        """The run as a Scorer (images -> class scores), for every analysis method.

        Args:
            kind: "auto" (classifier runs: "classifier"; embedding runs: "prototype"),
                "classifier", "prototype" (cosine to train-class centroids, differentiable) or
                "knn" (kNN vote fractions through the FAISS index, black box).
            output: classifier scores as "softmax" probabilities or raw "logits".
        """
        from fermetric.analysis import ClassifierScorer, KNNScorer, PrototypeScorer

        kinds = ("auto", "classifier", "prototype", "knn")
        if kind not in kinds:
            raise FermetricError(f"unknown scorer {kind!r}; valid: {', '.join(kinds)}")
        if kind == "auto":
            kind = "classifier" if self.kind == "classifier" else "prototype"
        if kind == "classifier":
            if self.kind != "classifier":
                raise FermetricError(f"{self.path} is an embedding run; use the 'prototype' or 'knn' scorer")
            return ClassifierScorer(self.model, output=output, class_names=self.class_names, batch_size=batch_size)
        embed_model = self.model if self.kind == "embedding" else _PreLogits(self.model)
        labels = self.load_data()["train"].labels.numpy()
        if kind == "prototype":
            return PrototypeScorer(embed_model, self.embed("train"), labels, num_classes=len(self.class_names),
                                   class_names=self.class_names, batch_size=batch_size)
        return KNNScorer(embed_model, self.knn(), num_classes=len(self.class_names),
                         class_names=self.class_names, batch_size=batch_size)

    def knn(self, k: Optional[int] = None):
        """The run's kNN classifier: loaded from RUN/index when built, else fitted on train."""
        from fermetric.retrieval import KNNClassifier

        index_dir = self.path / "index"
        if index_dir.is_dir() and k is None:
            return KNNClassifier.load(index_dir)
        data = self.load_data()
        knn = KNNClassifier(k=k or self.cfg.metric.knn_k, weighting=self.cfg.metric.knn_weighting,
                            num_classes=data.num_classes, class_names=list(data.class_names))
        return knn.fit(self.embed("train"), data["train"].labels.numpy())


class _PreLogits(nn.Module):
    """A classifier seen as an embedding model (its pre-logit features), for prototype / kNN scorers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.gradcam_layer = "model." + getattr(model, "gradcam_layer", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def load_run(path: str | Path, device: str | None = "auto", checkpoint: str = "best") -> Run:
    """Open a run directory written by train-classifier / train-siamese / train-triplet.

    Raises:
        FermetricError / CheckpointError naming what is missing or wrong.
    """
    path = Path(path)
    if not path.is_dir():
        raise FermetricError(f"run directory {path} does not exist")
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise FermetricError(f"{path} is not a fermetric run directory (no config.yaml)")
    ckpt_path = path / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt_path.is_file():
        fallback = path / "checkpoints" / "last.pt"
        if checkpoint == "best" and fallback.is_file():
            ckpt_path = fallback
        else:
            raise CheckpointError(f"{ckpt_path} does not exist; has the run finished an epoch?")
    cfg = load_config(cfg_path)
    dev = resolve_device(device)
    ckpt = load_checkpoint(ckpt_path, map_location=dev)
    kind = ckpt.get("kind", "")
    class_names = tuple(ckpt.get("class_names", ()))
    # the checkpoint holds the trained weights: do not re-apply the run's starting weights
    cfg.model.weights, cfg.model.pretrained = None, False
    model = build_model_for(kind, cfg, len(class_names))
    check_compatible(ckpt, ckpt_path, name=cfg.model.name, num_classes=len(class_names))
    load_state_dict_checked(model, ckpt["state_dict"], ckpt_path)
    model.to(dev).eval()
    return Run(path=path, cfg=cfg, kind=kind, class_names=class_names, model=model, checkpoint=ckpt, device=dev)
