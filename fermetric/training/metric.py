"""The metric-learning objective (train-siamese, train-triplet): pytorch-metric-learning losses
and miners on L2-normalised embeddings, m-per-class batches, validation by kNN accuracy on val
against the train gallery, an optional joint cross-entropy head, and collapse detection."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.loaders import BatchLoader
from fermetric.data.samplers import MPerClassBatches
from fermetric.data.transforms import BatchAugment
from fermetric.errors import ConfigError
from fermetric.evaluation.metrics import classification_metrics
from fermetric.retrieval.embeddings import embed_dataset
from fermetric.retrieval.knn import KNNClassifier
from fermetric.scoring.knn import KNNScorer
from fermetric.models.factory import build_model
from fermetric.training.collapse import CollapseCheck, check_collapse, collapse_advice, majority_share
from fermetric.training.objective import Objective

log = logging.getLogger("fermetric.train")

# Short miner names; any other pml miner class name is accepted too.
MINER_ALIASES = {
    "semihard": ("TripletMarginMiner", {"type_of_triplets": "semihard"}),
    "hard": ("TripletMarginMiner", {"type_of_triplets": "hard"}),
    "all": ("TripletMarginMiner", {"type_of_triplets": "all"}),
    "easy": ("TripletMarginMiner", {"type_of_triplets": "easy"}),
    "pairs": ("PairMarginMiner", {"pos_margin": 0.2, "neg_margin": 0.8}),
    "multisimilarity": ("MultiSimilarityMiner", {}),
    "batchhard": ("BatchHardMiner", {}),
}
LOSS_ALIASES = {
    "triplet": "TripletMarginLoss", "contrastive": "ContrastiveLoss", "multisimilarity": "MultiSimilarityLoss",
    "supcon": "SupConLoss", "arcface": "ArcFaceLoss", "cosface": "CosFaceLoss", "ntxent": "NTXentLoss",
    "circle": "CircleLoss", "proxyanchor": "ProxyAnchorLoss", "margin": "MarginLoss",
}


def _pml_names(module) -> list[str]:
    return sorted(n for n, obj in vars(module).items() if inspect.isclass(obj) and not n.startswith("Base"))


def build_loss(cfg, num_classes: int, embedding_dim: int) -> nn.Module:
    """A pml loss by name; `margin`, `num_classes` and `embedding_size` are filled in where the
    loss takes them and the config does not set them."""
    name = LOSS_ALIASES.get(cfg.metric.loss.lower(), cfg.metric.loss)
    cls = getattr(pml_losses, name, None)
    if cls is None or not inspect.isclass(cls):
        raise ConfigError(f"unknown metric.loss {cfg.metric.loss!r}; valid: {', '.join(_pml_names(pml_losses))}")
    params = inspect.signature(cls).parameters
    kwargs = dict(cfg.metric.loss_kwargs)
    if "margin" in params and "margin" not in kwargs and name == "TripletMarginLoss":
        kwargs["margin"] = cfg.metric.margin
    if "num_classes" in params:
        kwargs.setdefault("num_classes", num_classes)
    if "embedding_size" in params:
        kwargs.setdefault("embedding_size", embedding_dim)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"metric.loss_kwargs do not fit {name}: {exc}") from None


def build_miner(cfg) -> Optional[nn.Module]:
    if cfg.metric.miner in (None, "", "none"):
        return None
    name, defaults = MINER_ALIASES.get(str(cfg.metric.miner).lower(), (cfg.metric.miner, {}))
    cls = getattr(pml_miners, name, None)
    if cls is None or not inspect.isclass(cls):
        raise ConfigError(
            f"unknown metric.miner {cfg.metric.miner!r}; valid: {', '.join(MINER_ALIASES)}, "
            f"or a pytorch-metric-learning miner: {', '.join(_pml_names(pml_miners))}"
        )
    kwargs = {**defaults, **cfg.metric.miner_kwargs}
    if name == "TripletMarginMiner":
        kwargs.setdefault("margin", cfg.metric.margin)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"metric.miner_kwargs do not fit {name}: {exc}") from None


class MetricObjective(Objective):
    kind = "embedding"
    main_metric = "val_acc"  # kNN accuracy on val against the train gallery

    def __init__(self, cfg):
        super().__init__(cfg)
        self.loss_fn: Optional[nn.Module] = None
        self.miner: Optional[nn.Module] = None
        self._last_loss = float("nan")
        self._collapsed_epochs = 0  # consecutive epochs whose val embeddings collapsed
        self._gallery_key: Optional[tuple[int, int]] = None  # (train size, sample size) of _gallery_idx
        self._gallery_idx: Optional[torch.Tensor] = None

    def build_model(self, num_classes: int) -> nn.Module:
        model = build_model("embedding", self.cfg, num_classes)
        self.loss_fn = build_loss(self.cfg, num_classes, self.cfg.model.embedding_dim)
        self.miner = build_miner(self.cfg)
        return model

    def model_meta(self, model: nn.Module, num_classes: int) -> dict[str, Any]:
        return {
            "name": self.cfg.model.name, "num_classes": num_classes, "stem": self.cfg.model.stem,
            "width": self.cfg.model.width, "embedding_dim": self.cfg.model.embedding_dim,
            "joint_ce": self.cfg.metric.ce_weight > 0,
        }

    def distribute(self, world_size: int) -> None:
        from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

        # efficient=True: each rank's embeddings are anchors, all ranks' embeddings the references
        self.loss_fn = DistributedLossWrapper(self.loss_fn, efficient=True)
        if self.miner is not None:
            self.miner = DistributedMinerWrapper(self.miner, efficient=True)
        self.loss_scale = float(world_size)

    def extra_modules(self) -> list[nn.Module]:
        # losses with parameters (ArcFace, proxies) are trained and checkpointed with the model
        return [self.loss_fn] if self.loss_fn is not None and any(True for _ in self.loss_fn.parameters()) else []

    def train_loader(self, train: FERDataset, seed: int, rank: int = 0, world_size: int = 1) -> BatchLoader:
        aug = BatchAugment(self.cfg.data.augment) if self.cfg.data.augment.enabled else None
        if self.cfg.metric.sampler == "random":
            return BatchLoader(train, self.cfg.train.batch_size, shuffle=True, augment=aug, seed=seed,
                               drop_last=True, rank=rank, world_size=world_size)
        sampler = MPerClassBatches(train.labels, self.cfg.metric.m_per_class)
        return BatchLoader(train, sampler.batch_size, augment=aug, seed=seed, batch_sampler=sampler,
                           rank=rank, world_size=world_size)

    def training_step(self, model, images, labels, generator):
        joint = self.cfg.metric.ce_weight > 0
        if joint:  # one pass for both terms, through the wrapper's forward (DDP, torch.compile)
            emb, logits = model(images, with_logits=True)
            emb = emb.float()
        else:
            emb = model(images, projected=True).float()
        # mining, distances and losses in fp32 whatever the step's autocast (bf16 distances
        # between near-unit vectors lose the margins the losses work with)
        with torch.autocast(emb.device.type, enabled=False):
            if self.miner is not None:
                loss = self.loss_fn(emb, labels, self.miner(emb, labels))
            else:
                loss = self.loss_fn(emb, labels)
            n_correct = None
            if joint:
                loss = loss + self.cfg.metric.ce_weight * F.cross_entropy(logits.float(), labels)
                n_correct = int((logits.argmax(1) == labels).sum())
        return loss, n_correct

    # --- evaluation ---------------------------------------------------------------------------
    def _knn_probs(self, model, data: DataSplits, device, split: str,
                   gallery_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """kNN vote fractions of `split` against the train gallery, and the split's embeddings;
        `gallery_size` > 0 votes from that many train images only (see `_gallery_sample`)."""
        train = data["train"]
        if 0 < gallery_size < len(train):
            train = train.subset(self._gallery_sample(len(train), gallery_size))
        bs = self.cfg.train.eval_batch_size
        was_training = model.training
        model.eval()
        try:
            prec = self.cfg.train.precision
            gallery = embed_dataset(model, train, bs, device, precision=prec)
            query = embed_dataset(model, data[split], bs, device, precision=prec)
        finally:
            model.train(was_training)
        knn = KNNClassifier(k=self.cfg.metric.knn_k, weighting=self.cfg.metric.knn_weighting,
                            num_classes=data.num_classes, class_names=list(data.class_names))
        knn.fit(gallery, train.labels.numpy())
        # the vote of the scoring path, from the embeddings already computed
        return KNNScorer(model, knn, num_classes=data.num_classes, class_names=data.class_names).vote(query), query

    def _gallery_sample(self, n: int, size: int) -> torch.Tensor:
        """The same `size` of `n` train indices every epoch (seeded by the run's seed, drawn
        apart from the training generators): embedding the whole FER2013 train split for each
        epoch's validation took 60-70 s of a 220-s epoch at 2 threads; the sample ranks epochs
        for the best checkpoint and the collapse check, the final metrics use the whole gallery."""
        key = (n, size)
        if self._gallery_key != key or self._gallery_idx is None:
            rng = np.random.default_rng(self.cfg.seed)
            self._gallery_idx = torch.from_numpy(np.sort(rng.choice(n, size, replace=False)))
            self._gallery_key = key
        return self._gallery_idx

    def validate(self, model, data, device):
        probs, query = self._knn_probs(model, data, device, "val", self.cfg.metric.val_gallery)
        y = data["val"].labels.numpy()
        m = classification_metrics(y, probs.argmax(1), data.class_names)
        self._collapse = check_collapse(query, m["accuracy"], majority_share(data["train"].labels.numpy(), y))
        return {"val_loss": "", "val_acc": m["accuracy"], "val_macro_f1": m["macro_f1"]}

    def epoch_notes(self, model, data, device) -> dict[str, Any]:
        check: Optional[CollapseCheck] = getattr(self, "_collapse", None)
        if check is None:
            return {}
        notes: dict[str, Any] = {"val_mean_cosine": round(check.mean_cosine, 4),
                                 "val_effective_rank": round(check.effective_rank, 2)}
        self._collapsed_epochs = self._collapsed_epochs + 1 if check.collapsed else 0
        if check.collapsed:
            notes["collapse"] = 1
            notes["collapse_reason"] = check.reason
        # one collapsed epoch can be an untrained network's first; a persisting one is collapse
        if self._collapsed_epochs >= self.cfg.metric.collapse_patience:
            stopping = self.cfg.metric.stop_on_collapse
            log.warning("embedding collapse (%d epochs in a row): %s. To fix it: %s.%s", self._collapsed_epochs,
                        check.reason, collapse_advice(self.cfg),
                        " Stopping (metric.stop_on_collapse)." if stopping else
                        " --set metric.stop_on_collapse=true stops such a run early.")
        return notes

    def stop_reason(self) -> str:
        if self.cfg.metric.stop_on_collapse and self._collapsed_epochs >= self.cfg.metric.collapse_patience:
            return f"embedding collapse in {self._collapsed_epochs} consecutive epochs"
        return ""

    def final_metrics(self, model, data, device, split):
        probs, query = self._knn_probs(model, data, device, split)
        y = data[split].labels.numpy()
        m = classification_metrics(y, probs.argmax(1), data.class_names)
        m["knn_k"] = self.cfg.metric.knn_k
        check = check_collapse(query, m["accuracy"], majority_share(data["train"].labels.numpy(), y))
        m["mean_pairwise_cosine"] = check.mean_cosine
        m["collapsed"] = check.collapsed
        m["collapse"] = check.to_dict()
        return m
