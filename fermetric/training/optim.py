"""Optimiser construction (SGD with Nesterov momentum, or AdamW); no weight decay on norms and biases."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from fermetric.config import OptimConfig
from fermetric.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(cfg: OptimConfig, modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """Parameters of `modules` (the model, and a loss with parameters such as ArcFace) in two
    groups: decayed weights, and undecayed 1-D parameters (biases, norm scales)."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optim.name {cfg.name!r}; valid: {', '.join(OPTIMIZERS)}")
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
