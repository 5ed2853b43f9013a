"""Occlusion saliency (Zeiler & Fergus 2014): slide a grey/black patch, record the score drop.

map(p) = mean over the patches P covering pixel p of [score_c(x) - score_c(x with P set to the
baseline)]. Every (image, patch) pair becomes one row of a flat index; occluded copies are built
from it with one `torch.where` per batch and scored in batches, so any scorer (the FAISS kNN one
included) sees a few large batches rather than one call per patch.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from fermetric.scoring import Scorer, as_image_batch, check_batch_size
from fermetric.analysis.targets import resolve_targets
from fermetric.errors import ConfigError
from fermetric.utils.checks import check_int


def patch_positions(size: int, patch: int, stride: int, cover_edges: bool = True) -> list[int]:
    """Top-left offsets along one axis: 0, stride, ... (and size - patch when `cover_edges` and the
    stride does not land there, so the last rows/columns are occluded too)."""
    pos = list(range(0, size - patch + 1, stride))
    if cover_edges and pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


def patch_masks(height: int, width: int, patch_size: int, stride: int, cover_edges: bool = True) -> torch.Tensor:
    """Boolean masks (P, H, W) of every patch position, row-major."""
    ys = patch_positions(height, patch_size, stride, cover_edges)
    xs = patch_positions(width, patch_size, stride, cover_edges)
    rows = torch.zeros(len(ys), height, dtype=torch.bool)
    cols = torch.zeros(len(xs), width, dtype=torch.bool)
    for i, y in enumerate(ys):
        rows[i, y:y + patch_size] = True
    for j, x in enumerate(xs):
        cols[j, x:x + patch_size] = True
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, height, width)


def occlusion_saliency(
    scorer: Scorer,
    images: Any,
    target: Any = None,
    *,
    patch_size: int = 8,
    stride: int = 4,
    baseline: Union[float, str] = 0.0,
    cover_edges: bool = True,
    batch_size: Optional[int] = None,
) -> np.ndarray:
    """Occlusion map for any scorer (gradients not needed).

    Args:
        scorer: any scorer, KNNScorer included.
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        target: None (predicted class), an int / class name, or N of them.
        patch_size: side of the square patch in pixels.
        stride: step between patch positions.
        baseline: value the patch is set to (0.0 = black), or "mean" for each image's mean.
        cover_edges: add a last position flush with the border when the stride misses it
            (captum's Occlusion does not; with 48 px, patch 8 and stride 4 both agree).
        batch_size: occluded copies per forward pass (default: the scorer's).

    Returns:
        (N, 48, 48) float32: positive where hiding the pixel lowers the target score.
    """
    for name, v in (("patch_size", patch_size), ("stride", stride)):
        check_int(name, v, 1)
    x = as_image_batch(images)
    n, _, h, w = x.shape
    if patch_size > min(h, w):
        raise ConfigError(f"patch_size {patch_size} is larger than the image ({h}x{w}); valid: 1..{min(h, w)}")
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ConfigError(f"baseline must be a number or 'mean'; got {baseline!r}")
        base = x.mean(dim=(1, 2, 3))
    else:
        base = torch.full((n,), float(baseline))
    bs = check_batch_size(batch_size or scorer.batch_size)
    t = resolve_targets(scorer, x, target, bs)
    masks = patch_masks(h, w, int(patch_size), int(stride), cover_edges)  # (P, H, W)
    p = masks.shape[0]
    ref = scorer.scores(x, bs).gather(1, t.view(-1, 1))[:, 0]  # (N,)
    drops = torch.empty(n * p)
    for start in range(0, n * p, bs):
        idx = torch.arange(start, min(start + bs, n * p))
        i, k = idx // p, idx % p
        occluded = torch.where(masks[k][:, None], base[i].view(-1, 1, 1, 1), x[i])
        s = scorer.scores(occluded, bs)
        drops[idx] = ref[i] - s.gather(1, t[i].view(-1, 1))[:, 0]
    flat = masks.view(p, -1).float()  # (P, H*W)
    counts = flat.sum(0).clamp_min(1.0)  # uncovered pixels (cover_edges=False) stay 0
    maps = drops.view(n, p) @ flat / counts
    return maps.view(n, h, w).numpy().astype(np.float32)
