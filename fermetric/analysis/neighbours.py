"""Explanation by example of a kNN decision: the k nearest training faces of a query, with their
labels, similarities and the weight each one's vote carries (fermetric.retrieval.knn.vote_weights),
so a reader sees *which* faces made the decision. Works for embedding runs and for classifiers
(over their pre-logit features), through the run's kNN scorer (fermetric.scoring.run_scorer(run,
"knn")): the probabilities and predictions shown are the scorer's, the neighbours its index's."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from fermetric.errors import FermetricError
from fermetric.retrieval.embeddings import embed_images
from fermetric.retrieval.knn import vote_weights
from fermetric.scoring.run import run_scorer

log = logging.getLogger(__name__)


@dataclass
class Neighbours:
    """The kNN decision of M queries: (M, k) gallery indices, labels, similarities and vote weights
    (normalised to sum 1 per query), (M, C) vote fractions and (M,) predicted class ids."""

    index: np.ndarray
    labels: np.ndarray
    similarity: np.ndarray
    weight: np.ndarray
    proba: np.ndarray
    predicted: np.ndarray
    k: int = 0  # the vote's k and weighting
    weighting: str = ""

    def to_json(self, class_names) -> list[dict[str, Any]]:
        return [{"predicted": class_names[int(self.predicted[q])], "probability": float(self.proba[q, self.predicted[q]]),
                 "neighbours": [{"train_index": int(i), "label": class_names[int(lab)], "similarity": float(s),
                                 "weight": float(w)}
                                for i, lab, s, w in zip(self.index[q], self.labels[q], self.similarity[q], self.weight[q])]}
                for q in range(len(self.predicted))]


def nearest_examples(run: Any, dataset: Any) -> Neighbours:
    """The k nearest training faces of each image of `dataset` (a FERDataset) under the run's kNN
    classifier (its k, weighting and temperature): the decision `predict` gives for an embedding
    run, shown by example. None of `dataset`'s images may be in the gallery (use val or test)."""
    scorer = run_scorer(run, "knn")
    knn, emb = scorer.knn, embed_images(run, dataset)
    sims, idx = knn.kneighbors(emb)
    labels = np.where(idx >= 0, knn.labels_[np.maximum(idx, 0)], -1)
    weights = vote_weights(labels, sims, knn.weighting, knn.temperature)
    predicted, proba = scorer.vote_with_predictions(emb)
    return Neighbours(index=idx, labels=labels, similarity=sims, weight=weights / weights.sum(axis=1, keepdims=True),
                      proba=proba, predicted=predicted, k=int(knn.k), weighting=str(knn.weighting))


def neighbours_figure(run: Any, queries: Any, neighbours: Neighbours, split: str, label: Optional[str] = None):
    """The figure of `neighbours` (nearest_examples of the FERDataset `queries`): a row per face,
    its nearest training faces titled with label, similarity and vote weight. A pretrained model
    ships its gallery's embeddings, not its faces: without its data the cells show labels only."""
    from fermetric.plotting.neighbours import plot_neighbours

    gallery = None
    try:
        gallery = run.load_data()["train"].images[:, 0].numpy()
    except FermetricError as e:
        log.warning("the training faces are not here (%s): the neighbours are drawn as labels only", e)
    label = label or f"{run.cfg.model.name} ({run.kind})"
    return plot_neighbours(queries.images[:, 0].numpy(), queries.labels.numpy(), neighbours, gallery, run.class_names,
                           title=f"{label}: the nearest training faces of {split} faces (k = {neighbours.k}, "
                                 f"{neighbours.weighting} weighting; s similarity, w vote weight)")
