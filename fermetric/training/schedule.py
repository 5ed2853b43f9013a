"""Learning-rate schedule: linear warm-up, then cosine decay or reduce-on-plateau.

Kept as a small class with a plain-dict state (not torch's schedulers) so that resuming a run
restores it exactly and a checkpoint stays loadable with weights_only=True.
"""
from __future__ import annotations

import math
from typing import Any

from fermetric.config import ScheduleConfig
from fermetric.errors import ConfigError

SCHEDULES = ("cosine", "plateau", "none")


class LRSchedule:
    def __init__(self, cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int, epochs: int):
        if cfg.name not in SCHEDULES:
            raise ConfigError(f"unknown schedule.name {cfg.name!r}; valid: {', '.join(SCHEDULES)}")
        self.cfg = cfg
        self.base_lr = float(base_lr)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.total_steps = max(1, self.steps_per_epoch * int(epochs))
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.plateau_scale = 1.0
        self.plateau_best = -math.inf
        self.plateau_bad_epochs = 0

    def lr_at(self, step: int) -> float:
        """Learning rate for global step `step` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.cfg.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, (step - self.warmup_steps) / span)
            return self.cfg.min_lr + (self.base_lr - self.cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.cfg.name == "plateau":
            return max(self.cfg.min_lr, self.base_lr * self.plateau_scale)
        return self.base_lr

    def end_of_epoch(self, val_metric: float) -> None:
        """Reduce-on-plateau bookkeeping (higher metric is better)."""
        if self.cfg.name != "plateau":
            return
        if val_metric > self.plateau_best + 1e-6:
            self.plateau_best = val_metric
            self.plateau_bad_epochs = 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad_epochs": self.plateau_bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])
