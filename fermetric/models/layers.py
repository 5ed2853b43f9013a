"""Finding layers by name, hooking their outputs, and keeping a model's mode intact.

Every analysis that looks inside a model (Grad-CAM, filter visualisation, activation maps, the
randomisation check) goes through these helpers, so a bad layer name gives the same error
everywhere: a ModelError listing the conv-like layers that would have worked.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from fermetric.errors import ModelError

_CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)


def as_module(model_or_scorer) -> nn.Module:
    """The nn.Module behind a scorer (its `.model`), or the module itself."""
    if isinstance(model_or_scorer, nn.Module):
        return model_or_scorer
    model = getattr(model_or_scorer, "model", None)
    if isinstance(model, nn.Module):
        return model
    raise ModelError(f"expected an nn.Module or a scorer with a .model; got {type(model_or_scorer).__name__}")


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of the conv-like layers: conv modules and the blocks that contain one.

    A block (e.g. ResNet's `layer4`) counts because its output is a spatial feature map, and it
    is the usual Grad-CAM target. The root module itself is not listed.
    """
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, _CONV_TYPES) or any(isinstance(m, _CONV_TYPES) for m in module.modules()):
            names.append(name)
    return names


def get_layer(model: nn.Module, name: str, conv_only: bool = True) -> nn.Module:
    """The submodule called `name` (dotted path), or ModelError listing the valid conv-like names.

    Args:
        conv_only: only conv-like layers (Grad-CAM); False accepts any submodule (activation maps
            after a ReLU, say), whose output is checked to be a feature map when it runs.
    """
    valid = conv_layer_names(model)
    if not isinstance(name, str) or not name:
        raise ModelError(f"layer name must be a non-empty string; got {name!r}; valid conv-like layers: {', '.join(valid)}")
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        layer = None
    if layer is None or (conv_only and name not in valid):
        what = "is not a conv-like layer" if layer is not None else "does not exist"
        raise ModelError(
            f"layer {name!r} {what} in {type(model).__name__}; valid conv-like layers: {', '.join(valid) or '(none)'}"
        )
    return layer


def default_gradcam_layer(model: nn.Module) -> str:
    """The model's `gradcam_layer` if it names one, else its last conv-like layer."""
    name = getattr(model, "gradcam_layer", None)
    if isinstance(name, str) and name:
        get_layer(model, name)  # the model's own claim is checked too
        return name
    convs = [n for n, m in model.named_modules() if isinstance(m, _CONV_TYPES)]
    if not convs:
        raise ModelError(f"{type(model).__name__} has no conv layer and no gradcam_layer; Grad-CAM needs a spatial layer")
    return convs[-1]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards.

    Restoring per module (not just `model.train(was_training)`) keeps mixed states intact,
    e.g. a frozen backbone in eval inside a training model.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


class LayerCapture:
    """Forward hook that keeps the latest output of one layer (with its graph).

    Use as a context manager; the hook is removed on exit even when an error is raised.

        with LayerCapture(layer) as cap:
            model(x)
            feats = cap.output      # (N, C, h, w)
    """

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.output: Optional[torch.Tensor] = None
        self._handle = None

    def _hook(self, module, inputs, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        self.output = output

    def __enter__(self) -> "LayerCapture":
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.output = None if exc[0] is not None else self.output


def parametrised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf-most modules that own weights and can re-initialise them (`reset_parameters`), in
    forward-definition order: the units of the cascading randomisation check."""
    out = []
    for name, module in model.named_modules():
        if not name or not hasattr(module, "reset_parameters"):
            continue
        if any(p is not None for p in module.parameters(recurse=False)):
            out.append((name, module))
    return out


class PreLogits(nn.Module):
    """A model's `embed` as a network's forward: a classifier seen as an embedding model (its
    pre-logit features), for prototype / kNN scorers and for exporting what a run embeds with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.gradcam_layer = "model." + getattr(model, "gradcam_layer", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)
