"""Explanation by example of a kNN decision: the k nearest training faces of a query, with their
labels, similarities and the weight each one's vote carries (fermetric.retrieval.knn.vote_weights),
so a reader sees *which* faces made the decision. Works for embedding runs and for classifiers
(over their pre-logit features), through the run's kNN scorer (fermetric.scoring.run_scorer(run,
"knn")): the probabilities and predictions shown are the scorer's, the neighbours its index's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fermetric.retrieval.embeddings import embed_images
from fermetric.retrieval.knn import vote_weights
from fermetric.scoring.run import run_scorer


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
    return Neighbours(index=idx, labels=labels, similarity=sims, weight=weights / weights.sum(axis=1, keepdims=True),
                      proba=scorer.vote(emb), predicted=scorer.vote_predict(emb))
