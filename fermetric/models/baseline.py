"""The baseline CNN: four conv blocks with batch norm and dropout (cs230 FER2013 style).

    block i (i = 0..3, c = width * 2**i): [3x3 conv -> BN -> ReLU] x 2, then for i < 3
    2x2 max-pool and dropout.  48 -> 24 -> 12 -> 6; the last block keeps the 6x6 map
    (Grad-CAM resolution), which is averaged into 8 * width pre-logit features.

At width 64 it has 4.7M parameters and about a third of ResNet18's (small stem) compute.
"""
from __future__ import annotations

import torch
from torch import nn

from fermetric.models.common import PooledFERModel, check_dropout, check_int, init_conv
from fermetric.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [init_conv(nn.Conv2d(cin, cout, 3, padding=1, bias=False)), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BaselineCNN(PooledFERModel):
    """Four VGG-like blocks; widths width, 2w, 4w, 8w.

    Args:
        num_classes: logits; 0 for none.
        in_chans: input channels.
        width: channels of the first block.
        dropout: dropout before the linear head.
        block_dropout: dropout after each of the first three blocks' pooling.

    Shapes: (N, in_chans, 48, 48) -> trunk (N, 8 * width, 6, 6) -> logits (N, num_classes).
    """

    gradcam_layer = "features"

    def __init__(self, num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.3,
                 block_dropout: float = 0.1) -> None:
        super().__init__()
        self.model_name = "baseline"
        check_int(self.model_name, "in_chans", in_chans, 1)
        check_int(self.model_name, "width", width, 1)
        check_dropout(self.model_name, block_dropout, "block_dropout")
        blocks: list[nn.Module] = []
        cin = in_chans
        for i in range(4):
            cout = width * 2**i
            layers = _conv_bn_relu(cin, cout) + _conv_bn_relu(cout, cout)
            if i < 3:
                layers += [nn.MaxPool2d(2), nn.Dropout(block_dropout)]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self._build_head(cin, num_classes, dropout)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, 48, 48) -> (N, 8 * width, 6, 6)."""
        return self.features(x)


@register_model("baseline")
def baseline(num_classes: int = 7, in_chans: int = 1, width: int = 64, dropout: float = 0.3,
             block_dropout: float = 0.1) -> BaselineCNN:
    """Baseline CNN: 4 blocks of two 3x3 conv-BN-ReLU, 3 max-pools, dropout; 8 * width features."""
    return BaselineCNN(num_classes, in_chans, width, dropout, block_dropout)
