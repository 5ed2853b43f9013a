"""The one backbone contract every model follows (after timm's forward_features / forward_head).

    images (N, 1, 48, 48) float in [0, 1]
      -> forward_features: normalise, then the conv trunk -> feature map (N, C, h, w)
      -> forward_head(pre_logits=True): pooled, flattened pre-logit vector (N, num_features)
      -> forward_head(pre_logits=False): class logits (N, num_classes)

Normalisation lives inside the model, so every caller (training, TTA, explanations) hands it
plain [0, 1] images and an occlusion baseline of 0 means black.
The embedding model (models/embedding.py) reads the pre-logit vector of any backbone.
"""
from __future__ import annotations

import torch
from torch import nn

# FER2013 pixel statistics (mean ~0.51, std ~0.26 in [0, 1]); SynthFER is close to these.
INPUT_MEAN = 0.5
INPUT_STD = 0.25


class FERModel(nn.Module):
    """Base class of every registered backbone.

    Subclasses set `num_features`, `num_classes`, `gradcam_layer` (dotted module name of the last
    conv layer, for Grad-CAM) and implement `trunk(x)` and `pool_and_head` pieces as below.
    """

    num_features: int
    num_classes: int
    gradcam_layer: str
    model_name: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("input_std", torch.tensor(INPUT_STD), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 1, H, W) -> feature map (N, C, h, w)."""
        raise NotImplementedError

    def pre_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map (N, C, h, w) -> pre-logit vector (N, num_features)."""
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-logit vector (N, num_features) -> logits (N, num_classes)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        z = self.pre_logits(feats)
        return z if pre_logits else self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logit features (N, num_features): what kNN on a classifier run uses."""
        return self.forward_head(self.forward_features(x), pre_logits=True)
