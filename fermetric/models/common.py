"""Pieces every fermetric backbone shares: the pooled linear head and argument checks.

All registered models end the same way, so the classifier and the embedding model can treat
them alike:

    feature map (N, C, h, w) -> global average pool -> pre-logits (N, C) -> dropout -> fc -> (N, K)
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fermetric.errors import ModelError
from fermetric.utils import checks
from fermetric.models.base import FERModel


def check_choice(model_name: str, arg: str, value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ModelError(f"{model_name}: unknown {arg} {value!r}; expected one of: {', '.join(choices)}")
    return value


def check_int(model_name: str, arg: str, value: int, minimum: int) -> int:
    """fermetric.utils.checks.check_int for a model's argument (a ModelError naming the model)."""
    return checks.check_int(arg, value, minimum, where=model_name, error=ModelError)


def check_dropout(model_name: str, value: float, arg: str = "dropout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ModelError(f"{model_name}: {arg} must be a probability in [0, 1), got {value!r}")
    return float(value)


def init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """He initialisation, as torchvision initialises its ResNet and VGG convs."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class PooledFERModel(FERModel):
    """A FERModel whose pre-logits are the global average pool of the trunk's last map.

    Subclasses build their trunk in `__init__`, then call `_build_head`, and implement `trunk`.

    Attributes:
        head_prefixes: state-dict key prefixes of classifier heads. A weights file whose head
            has another class count, or that comes from torchvision (VGG keeps its head in
            `classifier.*`), loads with the head skipped; see fermetric.models.weights.
    """

    head_prefixes: tuple[str, ...] = ("fc.",)

    def _build_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        check_int(self.model_name, "num_classes", num_classes, 0)
        self.num_features = num_features
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(check_dropout(self.model_name, dropout))
        self.fc: nn.Module = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def pre_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map (N, C, h, w) -> (N, C) by global average pooling."""
        return torch.flatten(F.adaptive_avg_pool2d(feats, 1), 1)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-logits (N, num_features) -> logits (N, num_classes); identity when num_classes is 0."""
        return self.fc(self.head_drop(z))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh linear head for `num_classes` classes; 0 removes it (the head returns pre-logits).

        The embedding model calls this with 0 so that no parameter goes without a gradient.
        """
        check_int(self.model_name, "num_classes", num_classes, 0)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def pretrained_skip_prefixes(self) -> tuple[str, ...]:
        """Key prefixes that ImageNet weights cannot fill in this variant (e.g. a 3x3 stem)."""
        return ()
