"""Gradient saliency (Simonyan et al. 2014) and SmoothGrad (Smilkov et al. 2017).

saliency_c(x) = |d score_c(x) / d x|; SmoothGrad averages it over noisy copies x + N(0, sigma^2),
sigma = noise_level * (max(x) - min(x)). The noise is one seeded draw of `samples` patterns
shared by all images, so a map does not depend on the batch an image came in.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import numpy as np
import torch

from fermetric.scoring import Scorer, as_image_batch, check_batch_size, check_scores
from fermetric.analysis.targets import require_differentiable, resolve_targets
from fermetric.utils.checks import check_int, check_number


def input_gradients(scorer: Scorer, x: torch.Tensor, targets: torch.Tensor, low_precision: bool = True) -> torch.Tensor:
    """d score_target / d x for one batch (no batching here).

    Args:
        scorer: a differentiable scorer.
        x: (B, 1, H, W) float on any device (not modified).
        targets: (B,) int64 class ids.
        low_precision: run under the scorer's precision (bf16/fp16 autocast); False: fp32.

    Returns:
        (B, 1, H, W) float32 gradients on the CPU. Model parameters' .grad are untouched
        (torch.autograd.grad only returns the input's gradient).
    """
    dev = scorer.device
    xb = x.detach().to(dev).clone().requires_grad_(True)
    with scorer.evaluating(), torch.enable_grad():
        with scorer.autocast() if low_precision else contextlib.nullcontext():
            out = check_scores(scorer.forward(xb), xb.shape[0], scorer)
        # the score in fp32: the gradient flows back through the autocast graph to the fp32 input
        sel = out.float().gather(1, targets.to(dev).view(-1, 1)).sum()
        (g,) = torch.autograd.grad(sel, xb)
    return g.detach().float().cpu()


def gradient_saliency(
    scorer: Scorer,
    images: Any,
    target: Any = None,
    *,
    smooth_samples: int = 0,
    noise_level: float = 0.15,
    seed: int = 0,
    absolute: bool = True,
    batch_size: Optional[int] = None,
) -> np.ndarray:
    """Vanilla gradient saliency, or SmoothGrad when `smooth_samples` > 0.

    Args:
        scorer: a differentiable scorer (ClassifierScorer or PrototypeScorer).
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        target: None (predicted class), an int / class name, or N of them.
        smooth_samples: noisy copies per image (0: plain gradient).
        noise_level: noise std as a fraction of each image's value range.
        seed: seeds the noise patterns.
        absolute: |gradient| (the usual map) or the signed gradient.
        batch_size: images per forward/backward pass (default: the scorer's).

    Returns:
        (N, 48, 48) float32 maps.
    """
    require_differentiable(scorer, "smoothgrad" if smooth_samples else "saliency")
    check_int("smooth_samples", smooth_samples, 0)
    check_number("noise_level", noise_level, minimum=0)
    x = as_image_batch(images)
    bs = check_batch_size(batch_size or scorer.batch_size)
    t = resolve_targets(scorer, x, target, bs)
    n = x.shape[0]
    s = max(int(smooth_samples), 1)
    if smooth_samples:
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((s, *x.shape[1:]), generator=g)
        sigma = noise_level * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))  # (N,)
    acc = torch.zeros_like(x)
    # Flatten (image, sample) pairs so one batch size governs memory whatever `samples` is.
    for start in range(0, n * s, bs):
        idx = torch.arange(start, min(start + bs, n * s))
        i, k = idx // s, idx % s
        xb = x[i]
        if smooth_samples:
            xb = xb + sigma[i].view(-1, 1, 1, 1) * noise[k]
        # One plain gradient is cheap and bf16 moves its small values around (rank correlation
        # with fp32 measured 0.87-0.96 on small CNNs), so it is taken in fp32; SmoothGrad's many
        # passes run in the scorer's precision (>= 0.98 with fp32, measured; averaging cancels it).
        grad = input_gradients(scorer, xb, t[i], low_precision=bool(smooth_samples))
        acc.index_add_(0, i, grad.abs() if absolute else grad)
    return (acc / s)[:, 0].numpy()


def smoothgrad(
    scorer: Scorer,
    images: Any,
    target: Any = None,
    *,
    samples: int = 25,
    noise_level: float = 0.15,
    seed: int = 0,
    absolute: bool = True,
    batch_size: Optional[int] = None,
) -> np.ndarray:
    """SmoothGrad: the mean |gradient| over `samples` noisy copies; (N, 48, 48) float32.

    See `gradient_saliency` for the arguments.
    """
    check_int("samples", samples, 1)
    return gradient_saliency(scorer, images, target, smooth_samples=int(samples), noise_level=noise_level,
                             seed=seed, absolute=absolute, batch_size=batch_size)
