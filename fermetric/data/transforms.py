"""Batched, seeded augmentation on float image tensors (B, 1, H, W) in [0, 1].

Everything runs on whole batches with one torch Generator, so there is no per-image PIL work in
the training loop and the same seed gives the same augmented batches.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fermetric.config import AugmentConfig


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=g)
    rows = (oy[:, None] + torch.arange(h)[None, :])  # (B, H)
    cols = (ox[:, None] + torch.arange(w)[None, :])  # (B, W)
    bidx = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    if p <= 0:
        return x
    flip = torch.rand(x.shape[0], generator=g) < p
    if flip.any():
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    return x


def random_affine(x: torch.Tensor, rotation: float, scale: float, shift: float, g: torch.Generator) -> torch.Tensor:
    """Rotation (degrees), zoom (relative) and shift (fraction of the side), one draw per image,
    applied with one batched grid_sample (bilinear, zero fill)."""
    if rotation <= 0 and scale <= 0 and shift <= 0:
        return x
    b = x.shape[0]
    angle = _uniform(b, -rotation, rotation, g) * (math.pi / 180.0)
    zoom = _uniform(b, 1.0 - scale, 1.0 + scale, g)
    tx = _uniform(b, -shift, shift, g) * 2.0  # affine_grid works in [-1, 1] coordinates
    ty = _uniform(b, -shift, shift, g) * 2.0
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(x: torch.Tensor, p: float, area: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Erase one random rectangle (aspect ratio 0.3..3.3, area fraction in `area`) to random noise
    in a fraction `p` of the images."""
    if p <= 0:
        return x
    b, c, h, w = x.shape
    hit = torch.rand(b, generator=g) < p
    frac = _uniform(b, area[0], area[1], g)
    log_ratio = _uniform(b, math.log(0.3), math.log(3.3), g)
    ratio = torch.exp(log_ratio)
    eh = torch.clamp((frac * h * w * ratio).sqrt().round().long(), 1, h)
    ew = torch.clamp((frac * h * w / ratio).sqrt().round().long(), 1, w)
    y0 = (torch.rand(b, generator=g) * (h - eh + 1).float()).long()
    x0 = (torch.rand(b, generator=g) * (w - ew + 1).float()).long()
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])  # (B, H)
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # (B, W)
    region = (in_y[:, :, None] & in_x[:, None, :] & hit[:, None, None])[:, None]  # (B, 1, H, W)
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype)
    return torch.where(region, noise, x)


class BatchAugment:
    """The training augmentation of the strong FER2013 results, on whole batches.

    Order: random crop with padding, horizontal flip, small affine (rotation / zoom / shift),
    random erasing. Call with a float batch (B, 1, H, W) in [0, 1] and a Generator.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or AugmentConfig()

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if not cfg.enabled:
            return x
        x = random_crop(x, cfg.crop_padding, g)
        x = random_hflip(x, cfg.hflip, g)
        x = random_affine(x, cfg.rotation, cfg.scale, cfg.shift, g)
        x = random_erasing(x, cfg.erasing, tuple(cfg.erasing_area), g)
        return x.clamp(0.0, 1.0)  # not in place: with every step a no-op, x is the caller's tensor
