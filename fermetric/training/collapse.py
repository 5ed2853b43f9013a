"""Embedding collapse: telling a collapsed embedding from a narrow but separable one.

A metric loss can drive every image to (nearly) one point, after which kNN votes only the
gallery's class priors. A high mean pairwise cosine alone does not show that: early in
training, and for models trained with a cosine classifier, the embeddings of a healthy model
often fill a narrow cone (mean cosine 0.95 and more) inside which the classes are well
separated. So collapse is declared on what makes it harmful:

- kNN accuracy no better than always answering the train split's commonest class (within
  ``ACCURACY_MARGIN``: the neighbours in a collapsed gallery are near random, so kNN votes the
  class priors) while the embeddings are concentrated (mean cosine above ``NARROW_COSINE``, or
  effective rank under ``LOW_RANK``); or
- embeddings that are numerically one point (spread under ``MIN_SPREAD``), whatever the accuracy.

An untrained network at its first epoch can meet the first test too (random-init embeddings are
concentrated); that is why training warns, and `metric.stop_on_collapse` stops, only after
`metric.collapse_patience` consecutive collapsed epochs.

Spread is the root-mean-square distance of the unit-normalised embeddings to their mean,
sqrt(1 - |mean|^2) (0 for one point, 1 for a uniform sphere); effective rank is exp of the
entropy of the normalised singular values of the centred embeddings (Roy & Vetterli 2007).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

# kNN accuracy within this of the majority share counts as "votes only the priors".
ACCURACY_MARGIN = 0.02
# Concentration that, together with majority-share accuracy, marks collapse.
NARROW_COSINE = 0.9
LOW_RANK = 1.5
# Below this spread the embeddings are one point (float32 noise is ~1e-7).
MIN_SPREAD = 1e-3
# Embeddings used for the statistics (a seeded-free prefix: the split's order is fixed).
MAX_POINTS = 2000


@dataclass
class CollapseCheck:
    """What `check_collapse` measured and decided (JSON-ready through `to_dict`)."""

    collapsed: bool
    reason: str  # why it fired ("" when it did not)
    mean_cosine: float
    spread: float
    effective_rank: float
    knn_accuracy: Optional[float]
    majority_share: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def embedding_stats(emb: np.ndarray, max_n: int = MAX_POINTS) -> tuple[float, float, float]:
    """(mean pairwise cosine, spread, effective rank) of (up to max_n of) (N, D) embeddings."""
    e = np.asarray(emb[:max_n], dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    n = len(e)
    if n < 2:
        return 0.0, 0.0, 0.0
    s = e.sum(0)
    mean_cos = float((s @ s - n) / (n * (n - 1)))
    mean = s / n
    spread = float(np.sqrt(max(0.0, 1.0 - float(mean @ mean))))
    sv = np.linalg.svd(e - mean, compute_uv=False)
    energy = sv**2
    if energy.sum() <= 1e-24:
        return mean_cos, spread, 0.0
    p = energy / energy.sum()
    p = p[p > 0]
    return mean_cos, spread, float(np.exp(-(p * np.log(p)).sum()))


def majority_share(train_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """Accuracy on the queries of always answering the train split's commonest class."""
    top = int(np.bincount(np.asarray(train_labels, dtype=np.int64)).argmax())
    return float((np.asarray(query_labels) == top).mean()) if len(query_labels) else 0.0


def check_collapse(emb: np.ndarray, knn_accuracy: Optional[float] = None,
                   majority: Optional[float] = None) -> CollapseCheck:
    """Decide whether (N, D) embeddings have collapsed (see the module docstring).

    Args:
        emb: embeddings of a held-out split (any norm; they are normalised here).
        knn_accuracy: their kNN accuracy against the train gallery, in [0, 1].
        majority: the accuracy of always answering the commonest train class (`majority_share`).
            Without both accuracy figures only the one-point test applies.
    """
    mean_cos, spread, rank = embedding_stats(emb)
    reason = ""
    if spread < MIN_SPREAD:
        reason = f"the embeddings are one point (spread {spread:.2g} < {MIN_SPREAD:g})"
    elif knn_accuracy is not None and majority is not None and knn_accuracy <= majority + ACCURACY_MARGIN:
        if mean_cos > NARROW_COSINE or rank < LOW_RANK:
            reason = (f"kNN accuracy {knn_accuracy * 100:.1f} % is no better than always answering the commonest "
                      f"class ({majority * 100:.1f} %), and the embeddings are concentrated (mean cosine "
                      f"{mean_cos:.3f}, effective rank {rank:.2f})")
    return CollapseCheck(bool(reason), reason, mean_cos, spread, rank, knn_accuracy, majority)


def collapse_advice(cfg) -> str:
    """What to change when a run collapses, in the config's own terms."""
    tips = [f"lower optim.lr (now {cfg.optim.lr:g})"]
    if cfg.metric.ce_weight <= 0:
        tips.append("add joint cross-entropy (--set metric.ce_weight=1)")
    if str(cfg.metric.miner).lower() in ("hard", "batchhard", "semihard"):
        tips.append("mine all margin violators (--set metric.miner=all)")
    tips.append("warm-start the backbone from a classifier run (--init-from RUN)")
    return "; ".join(tips)
