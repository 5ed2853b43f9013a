"""Explanation by example of a kNN decision: the k nearest training faces of a query, with their
labels, similarities and the weight each one's vote carries (fermetric.retrieval.knn.vote_weights),
so a reader sees *which* faces made the decision. Works for embedding runs and for classifiers
(over their pre-logit features), through the run's kNN scorer (fermetric.scoring.run_scorer(run,
"knn")): the probabilities and predictions shown are the scorer's, the neighbours its index's.

Measured like the pixel methods on SynthFER's evidence masks through `vote_maps`: which pixels of
the query raise its vote for the predicted class (`vote_map_scores`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from fermetric.errors import FermetricError
from fermetric.analysis.faithfulness import mask_mass_ratio, pointing_chance, pointing_game
from fermetric.retrieval.embeddings import embed_images, embedding_function
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


def vote_maps(embed: Any, queries: torch.Tensor, gallery: torch.Tensor, neighbours: Neighbours) -> np.ndarray:
    """Which pixels of each query raise its vote for the predicted class: gradient x input, with
    respect to the query, of sum_j w_j cos(embed(query), embed(neighbour_j)) over its neighbours
    that voted for the predicted class (w_j their vote weights, held fixed). The by-example
    explanation turned into a map, so it can be scored on evidence masks like the other methods.

    Args:
        embed: the embedding the kNN index was built with (eval mode, differentiable).
        queries: (M, 1, 48, 48) float faces in [0, 1], the queries of `neighbours`.
        gallery: (N, 1, 48, 48) float training faces, indexed by `neighbours.index`.

    Returns:
        (M, 48, 48) float32 maps.
    """
    voted = (neighbours.labels == neighbours.predicted[:, None]) & (neighbours.index >= 0)
    w = torch.as_tensor(np.where(voted, neighbours.weight, 0.0), dtype=torch.float32)
    idx = torch.as_tensor(np.maximum(neighbours.index, 0))
    m, k = idx.shape
    with torch.no_grad():
        e_n = embed(gallery[idx.reshape(-1)].float()).float().reshape(m, k, -1)
    x = queries.detach().clone().float().requires_grad_(True)
    with torch.enable_grad():
        cos = F.cosine_similarity(embed(x).float()[:, None], e_n, dim=2)  # (M, k)
        (grad,) = torch.autograd.grad((w * cos).sum(), [x])
    return (grad * x).detach()[:, 0].cpu().numpy().astype(np.float32)


def vote_map_scores(run: Any, queries: Any) -> dict[str, float]:
    """Mask-mass ratio and pointing game (beside its chance) of the vote maps of the FERDataset
    `queries` (a split other than train, with evidence masks) against their own masks, with the
    share of the k neighbours that carry the query's true label."""
    from fermetric.models.layers import eval_mode

    if queries.masks is None:
        raise FermetricError("vote maps are scored on evidence masks: these faces have none (use SynthFER)")
    nb = nearest_examples(run, queries)
    gallery = run.load_data()["train"]
    used = np.unique(nb.index[nb.index >= 0])
    remap = np.full(len(gallery), -1)
    remap[used] = np.arange(len(used))
    local = Neighbours(**{**nb.__dict__, "index": np.where(nb.index >= 0, remap[np.maximum(nb.index, 0)], -1)})
    with eval_mode(run.model):
        maps = vote_maps(embedding_function(run.model), queries.float_images().to(run.device),
                         gallery.float_images(torch.as_tensor(used)).to(run.device), local)
    masks = queries.masks.numpy().astype(bool)
    agree = (nb.labels == queries.labels.numpy()[:, None]).mean()
    return {"queries": int(len(maps)), "k": nb.k, "mask_mass": float(np.nanmean(mask_mass_ratio(maps, masks))),
            "pointing_game": float(np.nanmean(pointing_game(maps, masks))), "pointing_chance": pointing_chance(masks),
            "label_agreement": float(agree)}
