"""Layer-output (activation) maps: what a layer's channels respond to in given images."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from fermetric.analysis.filters import check_channels
from fermetric.models.layers import LayerCapture, as_module, default_gradcam_layer, eval_mode, get_layer
from fermetric.scoring import as_image_batch, check_batch_size
from fermetric.errors import ConfigError, ModelError
from fermetric.utils.checks import check_int

SELECTIONS = ("first", "top")


@dataclass
class ActivationMaps:
    """Channel maps of one layer for N images.

    Attributes:
        maps: (N, K, h, w) float32 activations.
        channels: (N, K) channel ids shown for each image.
        mean_activation: (N, K) spatial mean of each shown map.
        layer: the layer's dotted name.
        num_channels: channels the layer has in all.
    """

    maps: np.ndarray
    channels: np.ndarray
    mean_activation: np.ndarray
    layer: str
    num_channels: int


def layer_activations(
    model_or_scorer: Any,
    images: Any,
    layer: Optional[str] = None,
    *,
    channels: Optional[Sequence[int]] = None,
    k: int = 16,
    select: str = "first",
    batch_size: int = 128,
) -> ActivationMaps:
    """Outputs of one layer (forward hook), for some of its channels.

    Args:
        model_or_scorer: an nn.Module taking (N, 1, 48, 48) [0, 1] images, or a scorer (its model).
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        layer: dotted layer name (default: the model's Grad-CAM layer).
        channels: explicit channel ids (overrides `k` and `select`).
        k: channels to keep.
        select: "first" (channels 0..k-1) or "top" (the k largest mean activations, per image).
        batch_size: images per forward pass.

    Returns:
        ActivationMaps with (N, K, h, w) maps.
    """
    if select not in SELECTIONS:
        raise ConfigError(f"select must be one of {', '.join(SELECTIONS)}; got {select!r}")
    check_int("k", k, 1)
    model = as_module(model_or_scorer)
    name = layer if layer is not None else default_gradcam_layer(model)
    module = get_layer(model, name, conv_only=False)
    x = as_image_batch(images)
    bs = check_batch_size(batch_size)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    with eval_mode(model), torch.no_grad(), LayerCapture(module) as cap:
        for start in range(0, x.shape[0], bs):
            model(x[start:start + bs].to(dev))
            if cap.output is None or cap.output.dim() != 4:
                raise ModelError(f"layer {name!r} must output a feature map (N, K, h, w); got {None if cap.output is None else tuple(cap.output.shape)}")
            outs.append(cap.output.float().cpu())
    acts = torch.cat(outs)  # (N, C, h, w)
    n, c = acts.shape[:2]
    means = acts.mean(dim=(2, 3))
    if channels is not None:
        chans = torch.tensor(check_channels(channels, c, name, k)).expand(n, -1)
    elif select == "first":
        chans = torch.arange(min(int(k), c)).expand(n, -1)
    else:
        chans = means.topk(min(int(k), c), dim=1).indices
    maps = torch.gather(acts, 1, chans[:, :, None, None].expand(-1, -1, *acts.shape[2:]))
    return ActivationMaps(maps.numpy(), chans.numpy().copy(), torch.gather(means, 1, chans).numpy(), name, int(c))
