"""Grad-CAM (Selvaraju et al. 2017) for any differentiable scorer.

cam_c = ReLU(sum_k alpha_k A_k), alpha_k = mean over (i, j) of d score_c / d A_k(i, j), where A is
the output (N, K, h, w) of a conv-like layer; the map is upsampled bilinearly to 48x48. For an
embedding model behind a PrototypeScorer, score_c is the cosine to class c's centroid, so the
same code explains metric-learning models.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from fermetric.models.layers import LayerCapture, get_layer
from fermetric.scoring import Scorer, as_image_batch, check_batch_size, check_scores
from fermetric.analysis.targets import require_differentiable, resolve_targets
from fermetric.errors import ModelError


def gradcam(
    scorer: Scorer,
    images: Any,
    target: Any = None,
    *,
    layer: Optional[str] = None,
    relu: bool = True,
    batch_size: Optional[int] = None,
) -> np.ndarray:
    """Grad-CAM maps.

    Args:
        scorer: ClassifierScorer or PrototypeScorer.
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        target: None (predicted class), an int / class name, or N of them.
        layer: dotted name of a conv-like layer of `scorer.model` (default: its `gradcam_layer`,
            else the last conv); a bad name raises ModelError listing the valid ones.
        relu: keep only positive evidence (the paper's map); False gives the signed map.
        batch_size: images per pass (default: the scorer's).

    Returns:
        (N, 48, 48) float32, >= 0 when relu.
    """
    require_differentiable(scorer, "gradcam")
    name = layer if layer is not None else scorer.gradcam_layer
    module = get_layer(scorer.model, name)
    x = as_image_batch(images)
    n, _, h, w = x.shape
    bs = check_batch_size(batch_size or scorer.batch_size)
    t = resolve_targets(scorer, x, target, bs)
    dev = scorer.device
    out = []
    with scorer.evaluating(), torch.enable_grad(), LayerCapture(module) as cap:
        for start in range(0, n, bs):
            # The input needs a graph even when the model's weights are frozen, or A has none.
            xb = x[start:start + bs].to(dev).clone().requires_grad_(True)
            with scorer.autocast():
                scores = check_scores(scorer.forward(xb), xb.shape[0], scorer).float()
            a = cap.output
            if a is None or a.dim() != 4:
                shape = None if a is None else tuple(a.shape)
                raise ModelError(f"layer {name!r} must output a feature map (N, K, h, w) for Grad-CAM; got {shape}")
            sel = scores.gather(1, t[start:start + bs].to(dev).view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(sel, a)
            # the map in fp32 even when the layer ran in bf16/fp16
            weights = grad.float().mean(dim=(2, 3), keepdim=True)
            cam = (weights * a.detach().float()).sum(dim=1, keepdim=True)
            if relu:
                cam = F.relu(cam)
            cam = F.interpolate(cam.detach(), size=(h, w), mode="bilinear", align_corners=False)
            out.append(cam[:, 0].float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, h, w), np.float32)
