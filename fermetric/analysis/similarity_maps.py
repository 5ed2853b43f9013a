"""Which regions of two faces make them similar: gradient x input of the cosine similarity of
their embeddings with respect to each face (the attribution side of Zhu et al., "Visual
Explanation for Deep Metric Learning", 2021, for a pair of images; gradient x input rather than
their activation decomposition, so any differentiable embedding works). A positive value marks
pixels that raise the similarity.

Measured like the other explanations on SynthFER's evidence masks (`mask_mass_ratio`,
`pointing_game` of fermetric.analysis.faithfulness) over pairs of same-expression faces:
`similarity_map_scores`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fermetric.analysis.faithfulness import mask_mass_ratio, pointing_chance, pointing_game


def similarity_maps(embed: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient x input of cos(embed(a_i), embed(b_i)) for each pair i.

    Args:
        embed: the model's embedding function (eval mode, differentiable).
        a, b: (N, 1, 48, 48) float faces in [0, 1], paired by index.

    Returns:
        (maps of a (N, 48, 48), maps of b (N, 48, 48), cosines (N,)), float32.
    """
    xa = a.detach().clone().float().requires_grad_(True)
    xb = b.detach().clone().float().requires_grad_(True)
    with torch.enable_grad():
        cos = F.cosine_similarity(embed(xa).float(), embed(xb).float(), dim=1)
        ga, gb = torch.autograd.grad(cos.sum(), [xa, xb])
    maps_a = (ga * xa).detach()[:, 0].cpu().numpy().astype(np.float32)
    maps_b = (gb * xb).detach()[:, 0].cpu().numpy().astype(np.float32)
    return maps_a, maps_b, cos.detach().cpu().numpy().astype(np.float32)


def same_class_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n_pairs` random pairs (i, j), i != j, of images with the same label."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
    for k in range(n_pairs):
        if not classes:
            break
        members = np.flatnonzero(labels == classes[k % len(classes)])
        i, j = rng.choice(members, 2, replace=False)
        first.append(i)
        second.append(j)
    return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


def similarity_map_scores(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: np.ndarray,
                          masks: np.ndarray, n_pairs: int = 64, seed: int = 0) -> dict[str, float]:
    """Mask-mass ratio (1.0: no better than uniform) and pointing game (beside its chance: the
    share of pixels it counts as hits) of the similarity maps of same-expression pairs, both faces
    of each pair scored against their own evidence masks.

    Args:
        images: (N, 1, 48, 48) float faces; labels (N,); masks (N, 48, 48) bool evidence masks.
    """
    i, j = same_class_pairs(labels, n_pairs, seed)
    maps_a, maps_b, cos = similarity_maps(embed, images[i], images[j])
    maps = np.concatenate([maps_a, maps_b])
    m = np.concatenate([masks[i], masks[j]]).astype(bool)
    return {"pairs": int(len(i)), "mask_mass": float(np.nanmean(mask_mass_ratio(maps, m))),
            "pointing_game": float(np.nanmean(pointing_game(maps, m))), "pointing_chance": pointing_chance(m),
            "mean_cosine": float(cos.mean())}
