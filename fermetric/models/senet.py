"""SENet50: ResNet50 with squeeze-and-excitation in every bottleneck (Hu et al., 2018).

Built from torchvision's Bottleneck with torchvision.ops.SqueezeExcitation on the residual
branch, after the last BN and before the identity is added (the SE-ResNet module of the paper,
reduction 16). Stems and head are those of fermetric.models.resnet. torchvision has no ImageNet
SE-ResNet weights, so `pretrained=True` is refused; `--weights FILE` works as for any model.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import SqueezeExcitation

from fermetric.models.registry import register_model
from fermetric.models.resnet import DEFAULT_DROPOUT, DEFAULT_STEM, DEFAULT_WIDTH, FERResNet

SE_REDUCTION = 16


class SEBottleneck(Bottleneck):
    """torchvision Bottleneck whose residual branch is rescaled channel-wise by an SE module."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer)
        channels = planes * self.expansion
        self.se = SqueezeExcitation(channels, max(channels // SE_REDUCTION, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


@register_model("senet50")
def senet50(
    num_classes: int = 7, in_chans: int = 1, stem: str = DEFAULT_STEM, dropout: float = DEFAULT_DROPOUT,
    width: int = DEFAULT_WIDTH, zero_init_residual: bool = False,
) -> FERResNet:
    """SE-ResNet50 (SE-Bottleneck, [3, 4, 6, 3], reduction 16); 32 * width pre-logit features (2048 at width 64)."""
    return FERResNet(SEBottleneck, [3, 4, 6, 3], model_name="senet50", num_classes=num_classes,
                     in_chans=in_chans, stem=stem, dropout=dropout, width=width, zero_init_residual=zero_init_residual)
