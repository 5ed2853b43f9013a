"""Filter visualisation by gradient ascent (Erhan et al. 2009; Olah et al. 2017, "Feature
Visualization").

For each chosen channel c of a conv-like layer, find an input image x in [0, 1] that maximises
the channel's mean activation. Unregularised ascent gives high-frequency noise, so each step
jitters the image (random roll), every few steps blurs it, an L2 decay pulls it towards grey, and
optional octaves optimise a coarse image first and refine it at full size. All channels are
optimised together, one image per channel, in a single batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fermetric.utils import runtime
from fermetric.models.layers import LayerCapture, as_module, default_gradcam_layer, eval_mode, get_layer
from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import ConfigError, ModelError
from fermetric.utils.checks import check_int, check_number


@dataclass
class FilterImages:
    """Images that excite chosen channels of a layer.

    Attributes:
        images: (K, 48, 48) float32 in [0, 1].
        channels: (K,) channel ids.
        layer: the layer's dotted name.
        activation: (K,) the mean activation each image reaches on its channel.
    """

    images: np.ndarray
    channels: np.ndarray
    layer: str
    activation: np.ndarray


def layer_channels(model: torch.nn.Module, layer: str) -> int:
    """Number of channels the layer outputs (one probe forward on a grey image)."""
    module = get_layer(model, layer, conv_only=False)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with eval_mode(model), torch.no_grad(), LayerCapture(module) as cap:
        model(torch.full((1, 1, IMAGE_SIZE, IMAGE_SIZE), 0.5, device=dev))
        out = cap.output
    if out is None or out.dim() != 4:
        raise ModelError(f"layer {layer!r} must output a feature map (N, K, h, w); got {None if out is None else tuple(out.shape)}")
    return int(out.shape[1])


def check_channels(channels: Optional[Sequence[int]], available: int, layer: str, default_count: int) -> list[int]:
    """Channel ids to use: the given ones (checked) or the first `default_count`."""
    if channels is None:
        return list(range(min(int(default_count), available)))
    chans = [int(c) for c in np.asarray(channels).ravel()]
    bad = [c for c in chans if not 0 <= c < available]
    if bad or not chans:
        raise ConfigError(f"channel(s) {bad or '(none given)'} invalid for layer {layer!r}; valid: 0..{available - 1}")
    return chans


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) with reflect padding; sigma in pixels."""
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def visualize_filters(
    model_or_scorer: Any,
    layer: Optional[str] = None,
    channels: Optional[Sequence[int]] = None,
    *,
    num_channels: int = 16,
    steps: int = 100,
    lr: float = 0.05,
    jitter: int = 2,
    blur_sigma: float = 1.0,
    blur_every: int = 4,
    l2_decay: float = 1e-3,
    octaves: int = 1,
    octave_scale: float = 1.5,
    seed: int = 0,
    precision: Optional[str] = None,
) -> FilterImages:
    """Images maximising the mean activation of channels of a conv-like layer.

    Args:
        model_or_scorer: an nn.Module taking (N, 1, 48, 48) [0, 1] images, or a scorer (its model).
        layer: dotted layer name (default: the model's Grad-CAM layer); bad names raise ModelError
            listing the valid ones.
        channels: channel ids (default: the first `num_channels`).
        steps: Adam steps per octave.
        lr: Adam learning rate (image values are in [0, 1]).
        jitter: max random shift in pixels per step (0: off).
        blur_sigma, blur_every: Gaussian blur of the image every `blur_every` steps (0: off).
        l2_decay: weight of the mean squared distance to grey (0.5).
        octaves: coarse-to-fine stages; stage o optimises an image of side 48 / octave_scale^(octaves-1-o).
        seed: seeds the start image and the jitter.
        precision: autocast of the forward/backward passes (auto, fp32, bf16, fp16); default: the
            scorer's, "auto" for a bare module. The image and its updates stay fp32.

    Returns:
        FilterImages with (K, 48, 48) images.
    """
    model = as_module(model_or_scorer)
    name = layer if layer is not None else default_gradcam_layer(model)
    module = get_layer(model, name, conv_only=False)
    chans = check_channels(channels, layer_channels(model, name), name, num_channels)
    for key, v, lo in (("steps", steps, 1), ("octaves", octaves, 1), ("jitter", jitter, 0), ("blur_every", blur_every, 0)):
        check_int(key, v, lo)
    if octaves > 1:
        check_number("octave_scale", octave_scale, above=1)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    prec = runtime.resolve_precision(precision or getattr(model_or_scorer, "precision", "auto"), dev)
    g = torch.Generator().manual_seed(int(seed))
    k = len(chans)
    idx = torch.arange(k, device=dev)
    ch = torch.tensor(chans, device=dev)
    sizes = [max(8, int(round(IMAGE_SIZE / octave_scale ** (octaves - 1 - o)))) for o in range(octaves)]
    param = (0.5 + 0.02 * torch.randn(k, 1, sizes[0], sizes[0], generator=g)).to(dev)

    def full_size(p: torch.Tensor) -> torch.Tensor:
        return p if p.shape[-1] == IMAGE_SIZE else F.interpolate(p, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)

    with eval_mode(model), LayerCapture(module) as cap:
        for o, size in enumerate(sizes):
            if param.shape[-1] != size:
                param = F.interpolate(param, size=(size, size), mode="bilinear", align_corners=False)
            param = param.detach().requires_grad_(True)
            opt = torch.optim.Adam([param], lr=lr)
            for step in range(int(steps)):
                img = full_size(param)
                if jitter:
                    dy, dx = (int(v) for v in torch.randint(-int(jitter), int(jitter) + 1, (2,), generator=g))
                    img = torch.roll(img, shifts=(dy, dx), dims=(2, 3))
                with torch.enable_grad():
                    with runtime.autocast(dev, prec):
                        model(img)
                    act = cap.output[idx, ch].float().mean(dim=(1, 2))  # (K,)
                    loss = -act.sum() + l2_decay * ((img - 0.5) ** 2).mean(dim=(1, 2, 3)).sum()
                    # Gradient to the image only: the model's parameters keep their .grad.
                    (grad,) = torch.autograd.grad(loss, param)
                param.grad = grad
                opt.step()
                param.grad = None
                with torch.no_grad():
                    if blur_every and blur_sigma > 0 and (step + 1) % int(blur_every) == 0:
                        param.copy_(gaussian_blur(param, float(blur_sigma)))
                    param.clamp_(0.0, 1.0)
        with runtime.inference(dev, prec):
            final = full_size(param.detach())
            model(final)
            reached = cap.output[idx, ch].float().mean(dim=(1, 2))
    return FilterImages(final[:, 0].float().cpu().numpy(), np.array(chans), name, reached.float().cpu().numpy())
