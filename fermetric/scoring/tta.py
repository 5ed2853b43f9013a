"""Test-time augmentation: the views of an image batch, and the TTAScorer that averages any
scorer over them."""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fermetric.errors import ConfigError, ModelError
from fermetric.scoring.base import Scorer

# TTA views. "shift": identity and four crops of the image zero-padded by 2 px, each also
# flipped. "tencrop": the ten-crop of Krizhevsky et al. 2012 as FER2013 papers use it
# (Khaireddin & Chen 2021): the centre and four corner crops, each also flipped, taken where the
# model's training crops came from. fermetric trains on 48-px crops of the image zero-padded by
# data.augment.crop_padding px, so the corner crops sit at offsets (+-p, +-p) with p that
# padding: the extreme crops the model saw in training, at its input size (a 40-px ten-crop of
# a 48-px image, as in the paper, has the same crop positions for p = 4).
TTA_SHIFTS = ((0, 0), (-2, -2), (-2, 2), (2, -2), (2, 2))
TTA_MODES = ("shift", "tencrop")


def resolve_tta(tta: bool | str | None) -> str | None:
    """None (no TTA) or a mode of TTA_MODES; True means "shift" (the original --tta)."""
    if tta is None or tta is False or (isinstance(tta, str) and tta.lower() in ("", "none", "off", "false")):
        return None
    if tta is True:
        return "shift"
    if isinstance(tta, str) and tta.lower() in TTA_MODES:
        return tta.lower()
    raise ConfigError(f"unknown TTA {tta!r}; valid: {', '.join(TTA_MODES)} (or none)")


def tencrop_offsets(crop_padding: int) -> tuple[tuple[int, int], ...]:
    """Centre and the four corner offsets of a ten-crop for a model trained on crops of the
    image zero-padded by `crop_padding` px.

    Raises:
        ConfigError: crop_padding is 0 (the model never saw shifted crops: the five crops would
            be one, and the "ten-crop" only a flip).
    """
    p = int(crop_padding)
    if p <= 0:
        raise ConfigError("ten-crop TTA takes crops where the model's random training crops came from "
                          "(data.augment.crop_padding), but this model was trained without random crops "
                          "(crop_padding 0 or augmentation off); use the shift TTA instead")
    return ((0, 0), (-p, -p), (-p, p), (p, -p), (p, p))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """A crop of the zero-padded image at offset (dy, dx): the image moved by (-dy, -dx)."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p + dy : p + dy + h, p + dx : p + dx + w]


def tta_views(x: torch.Tensor, mode: str = "shift", crop_padding: int = 4) -> list[torch.Tensor]:
    """The 10 TTA views of a batch (N, 1, H, W): 5 crops x {as is, flipped}.

    Args:
        mode: "shift" (crops at +-2 px) or "tencrop" (crops at +-crop_padding px, see
            `tencrop_offsets`).
        crop_padding: the model's data.augment.crop_padding (tencrop only).
    """
    offsets = tencrop_offsets(crop_padding) if resolve_tta(mode) == "tencrop" else TTA_SHIFTS
    views = []
    for dy, dx in offsets:
        v = _shift(x, dy, dx)
        views += [v, v.flip(-1)]
    return views


class TTAScorer(Scorer):
    """Test-time augmentation of any scorer: the mean of its scores over views of each image.

    With a softmax ClassifierScorer this is the TTA softmax `evaluate --tta` reports (views:
    fermetric.scoring.tta.tta_views, 5 shifted crops x {as is, flipped}).

    Args:
        scorer: the scorer whose scores are averaged (its model, precision, batch size and class
            names are this scorer's).
        views: images (B, 1, 48, 48) -> list of V batches of the same shape (default: tta_views).
    """

    kind = "tta"

    def __init__(self, scorer: Scorer, views: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = None):
        if not isinstance(scorer, Scorer):
            raise ModelError(f"TTAScorer wraps a fermetric scorer; got {type(scorer).__name__}")
        if views is None:
            views = tta_views
        super().__init__(scorer.model, scorer.batch_size, scorer.class_names, scorer.precision)
        self.inner, self.views = scorer, views
        self.differentiable = scorer.differentiable
        self._compilable = scorer._compilable
        self.compile = scorer.compile
        self.backend = scorer.backend
        self._num_classes = scorer._num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mean(self.inner.forward, x)

    def _mean(self, score, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([score(v).float() for v in self.views(x)]).mean(0)

    def _fast_forward(self, export: bool = True):
        inner = self.inner._fast_forward(export)
        return None if inner is None else (lambda x: self._mean(inner, x))

    def with_model(self, model: nn.Module) -> "TTAScorer":
        other = super().with_model(model)
        other.inner = self.inner.with_model(model)
        return other

    def __repr__(self) -> str:
        return f"TTAScorer({self.inner!r})"


def tta_scorer(scorer, tta: bool | str, crop_padding: int = 4):
    """`scorer` wrapped in a TTAScorer over the views of `tta` ("shift" / True or "tencrop"),
    or `scorer` itself without TTA."""
    mode = resolve_tta(tta)
    if mode is None:
        return scorer
    if mode == "tencrop":
        tencrop_offsets(crop_padding)  # refused before any work when the model had no random crops
    return TTAScorer(scorer, views=functools.partial(tta_views, mode=mode, crop_padding=crop_padding))
