"""VGG16 with batch norm for 48x48 grayscale faces.

torchvision's vgg16_bn conv stack (13 3x3 convs in 5 stages) without its fifth max-pool:
48 -> 24 -> 12 -> 6 -> 3, so the last stage runs on a 3x3 map instead of pooling it away to
1x1. Its 25088-input ImageNet classifier (4096-4096, 120M parameters) is replaced by global
average pooling, dropout and one linear layer: the pre-logits are 512 features, like
ResNet18's. Keys match torchvision's `features.*`, so `pretrained=True` loads the ImageNet conv
weights (the first conv folded to one channel) and skips its `classifier.*`. `width` is the
channels of the first stage (64 in torchvision; the others scale with it: 16 gives 1/16 of the
FLOPs); ImageNet weights exist for width 64 only.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from fermetric.models.common import PooledFERModel, check_int, init_conv
from fermetric.models.registry import register_model


class FERVGG(PooledFERModel):
    """VGG conv stack (a torchvision cfg) with the final max-pool dropped and a pooled linear head.

    Args:
        cfg: a key of torchvision.models.vgg.cfgs ("D" is VGG16).
        model_name: registry name.
        num_classes: logits; 0 for none.
        in_chans: input channels.
        dropout: dropout before the linear head.

    Shapes: (N, in_chans, 48, 48) -> trunk (N, 512, 3, 3) -> logits (N, num_classes).
    """

    gradcam_layer = "features"
    # torchvision's VGG keeps its ImageNet head in `classifier.*`: never loaded here.
    head_prefixes = ("fc.", "classifier.")

    def __init__(self, cfg: str, *, model_name: str, num_classes: int = 7, in_chans: int = 1,
                 dropout: float = 0.5, width: int = 64) -> None:
        super().__init__()
        self.model_name = model_name
        check_int(model_name, "in_chans", in_chans, 1)
        check_int(model_name, "width", width, 1)
        self.width = width
        # torchvision's channels (64 ... 512) scaled to `width`; "M" stays a max-pool
        layers = [v if v == "M" else int(v) * width // 64 for v in cfgs[cfg]]
        if layers[-1] == "M":
            layers = layers[:-1]
        features = make_layers(layers, batch_norm=True)
        features[0] = nn.Conv2d(in_chans, layers[0], kernel_size=3, padding=1)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                init_conv(m)
        self.features = features
        self._build_head(layers[-1], num_classes, dropout)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, C, 48, 48) -> (N, 8 * width, 3, 3)."""
        return self.features(x)


@register_model("vgg16", pretrained="VGG16_BN_Weights.IMAGENET1K_V1")
def vgg16(num_classes: int = 7, in_chans: int = 1, dropout: float = 0.5, width: int = 64) -> FERVGG:
    """VGG16 with batch norm (torchvision vgg16_bn convs), 4 max-pools; 8 * width pre-logit features
    (512 at width 64)."""
    return FERVGG("D", model_name="vgg16", num_classes=num_classes, in_chans=in_chans, dropout=dropout, width=width)
