"""ResNet18 and ResNet50 for 48x48 grayscale faces, built from torchvision's blocks.

torchvision's ResNet was made for 224x224 images: its 7x7 stride-2 conv and max-pool divide
the side by 4 before the first residual stage, which leaves a 2x2 map at the end for a 48x48
face. The `stem` option chooses how much of that to keep:

======== ================================= ======== ======== ============= ===================
stem     first layers                      layer1   layer4   resnet18      resnet18 train
                                                             GFLOPs/image  img/s (relative)
======== ================================= ======== ======== ============= ===================
small    3x3 stride-1 conv, no max-pool    48x48    6x6      2.49          5.3  (1x)
pool     3x3 stride-1 conv + 3x3/2 pool    24x24    3x3      0.63          18.4 (3.5x)
imagenet torchvision's 7x7/2 conv + pool   12x12    2x2      0.19          38.9 (7.3x)
======== ================================= ======== ======== ============= ===================

(scripts/bench_models.py: forward + backward + SGD step, batch 32, one thread of a CPU shared
with other jobs, so compare the columns, not the absolute numbers; forward GFLOPs from
torch.utils.flop_counter.) A 3x3 stride-2 conv without pool was measured too: as costly as
"pool" (same FLOPs, slower here) while it samples the raw pixels with stride 2, so it is not offered.

Default "small", as in CIFAR ResNets: FER2013 faces are already small, every downsampling
before layer1 throws away expression detail (eyelids, mouth corners), and layer4's 6x6 map is
what Grad-CAM upsamples, where "pool" gives 3x3 and "imagenet" 2x2. Its cost, ~0.2 PFLOP per
FER2013 training epoch for ResNet18 (2.49 GFLOPs x 3 x 28.7k images), is a GPU's job. On a CPU "pool" is the trade-off for real training (3.5x faster), and
"imagenet" is for smoke runs and for ImageNet weights used with the stem they were trained with.

`width` is the channels of the stem and of layer1 (64 in torchvision; layers 2-4 double it each
time): width 16 costs ~1/16 of the FLOPs, what lets the deep backbones learn within a CPU study's
minutes (README, "A whole study in one command"). ImageNet weights exist for width 64 only.

Keys match torchvision's (`conv1`, `bn1`, `layer1`..`layer4`, `fc`), so torchvision state
dicts load directly; with a 3x3 stem the ImageNet 7x7 stem (`conv1`, `bn1`) is skipped.
"""
from __future__ import annotations

from typing import Type, Union

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from fermetric.models.common import PooledFERModel, check_choice, check_int, init_conv
from fermetric.models.registry import register_model

#: stem name -> what it is (kept in sync with `_make_stem`).
STEMS: dict[str, str] = {
    "small": "3x3 stride-1 conv, no max-pool (layer1 at 48x48, last map 6x6)",
    "pool": "3x3 stride-1 conv + 3x3/2 max-pool (layer1 at 24x24, last map 3x3)",
    "imagenet": "torchvision's 7x7 stride-2 conv + 3x3/2 max-pool (layer1 at 12x12, last map 2x2)",
}
DEFAULT_STEM = "small"
DEFAULT_DROPOUT = 0.3
DEFAULT_WIDTH = 64  # torchvision's


def _make_stem(stem: str, in_chans: int, out_chans: int = 64) -> tuple[nn.Conv2d, nn.Module]:
    """(first conv, pooling after bn1+relu) for a stem name."""
    if stem == "imagenet":
        conv = nn.Conv2d(in_chans, out_chans, kernel_size=7, stride=2, padding=3, bias=False)
        pool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    else:
        conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=1, padding=1, bias=False)
        pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "pool" else nn.Identity()
    return init_conv(conv), pool


def _make_stage(block: Type[Union[BasicBlock, Bottleneck]], inplanes: int, planes: int, blocks: int,
                stride: int) -> nn.Sequential:
    """One residual stage as torchvision's ResNet._make_layer builds it (same keys: `0.conv1`,
    `0.downsample.0`, ...), for any width."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    return nn.Sequential(block(inplanes, planes, stride, downsample),
                         *(block(out, planes) for _ in range(1, blocks)))


class FERResNet(PooledFERModel):
    """torchvision ResNet trunk with a selectable stem and a dropout + linear head.

    Args:
        block: torchvision's BasicBlock or Bottleneck (or a subclass, e.g. SE-Bottleneck).
        layers: blocks per stage, e.g. [2, 2, 2, 2] for ResNet18.
        model_name: registry name.
        num_classes: logits; 0 for none.
        in_chans: input channels.
        stem: a key of `STEMS`.
        dropout: dropout before the linear head.
        zero_init_residual: zero the last BN of each block (Goyal et al. 2017), as torchvision.
        width: channels of the stem and layer1; layer k has width * 2**(k-1) planes.

    Shapes: (N, in_chans, 48, 48) -> trunk (N, 8 * width * expansion, h, w) -> logits (N, num_classes).
    """

    gradcam_layer = "layer4"

    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: list[int],
        *,
        model_name: str,
        num_classes: int = 7,
        in_chans: int = 1,
        stem: str = DEFAULT_STEM,
        dropout: float = DEFAULT_DROPOUT,
        zero_init_residual: bool = False,
        width: int = DEFAULT_WIDTH,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.stem = check_choice(model_name, "stem", stem, STEMS)
        check_int(model_name, "in_chans", in_chans, 1)
        check_int(model_name, "width", width, 1)
        self.width = width
        # Same attribute names as torchvision, so its state dicts load key for key.
        self.conv1, self.maxpool = _make_stem(stem, in_chans, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for k, blocks in enumerate(layers):
            planes = width * 2**k
            setattr(self, f"layer{k + 1}", _make_stage(block, inplanes, planes, blocks, stride=1 if k == 0 else 2))
            inplanes = planes * block.expansion
        for m in self.modules():  # torchvision's initialisation (BN: weight 1, bias 0 by default)
            if isinstance(m, nn.Conv2d):
                init_conv(m)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        self._build_head(8 * width * block.expansion, num_classes, dropout)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, H, W) -> layer4 map (N, num_features, H/8, W/8) with the small stem."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pretrained_skip_prefixes(self) -> tuple[str, ...]:
        # ImageNet's 7x7 stem conv does not fit a 3x3 stem; its BN statistics belong to that conv.
        return () if self.stem == "imagenet" else ("conv1.", "bn1.")


@register_model("resnet18", pretrained="ResNet18_Weights.IMAGENET1K_V1")
def resnet18(
    num_classes: int = 7, in_chans: int = 1, stem: str = DEFAULT_STEM, dropout: float = DEFAULT_DROPOUT,
    width: int = DEFAULT_WIDTH, zero_init_residual: bool = False,
) -> FERResNet:
    """ResNet18 (torchvision BasicBlock, [2, 2, 2, 2]); 8 * width pre-logit features (512 at width 64)."""
    return FERResNet(BasicBlock, [2, 2, 2, 2], model_name="resnet18", num_classes=num_classes,
                     in_chans=in_chans, stem=stem, dropout=dropout, width=width, zero_init_residual=zero_init_residual)


@register_model("resnet50", pretrained="ResNet50_Weights.IMAGENET1K_V2")
def resnet50(
    num_classes: int = 7, in_chans: int = 1, stem: str = DEFAULT_STEM, dropout: float = DEFAULT_DROPOUT,
    width: int = DEFAULT_WIDTH, zero_init_residual: bool = False,
) -> FERResNet:
    """ResNet50 (torchvision Bottleneck, [3, 4, 6, 3]); 32 * width pre-logit features (2048 at width 64)."""
    return FERResNet(Bottleneck, [3, 4, 6, 3], model_name="resnet50", num_classes=num_classes,
                     in_chans=in_chans, stem=stem, dropout=dropout, width=width, zero_init_residual=zero_init_residual)
