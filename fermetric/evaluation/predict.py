"""Class probabilities of a whole split (through the Scorer, fermetric.analysis.scorers), the
views of test-time augmentation (TTA), and batched embedding of a split."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.data.dataset import FERDataset
from fermetric.utils import runtime

from fermetric.errors import ConfigError

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


def tta_scorer(scorer, tta: bool | str, crop_padding: int = 4):
    """`scorer` wrapped in a TTAScorer over the views of `tta` ("shift" / True or "tencrop"),
    or `scorer` itself without TTA."""
    import functools

    from fermetric.analysis.scorers import TTAScorer

    mode = resolve_tta(tta)
    if mode is None:
        return scorer
    if mode == "tencrop":
        tencrop_offsets(crop_padding)  # refused before any work when the model had no random crops
    return TTAScorer(scorer, views=functools.partial(tta_views, mode=mode, crop_padding=crop_padding))


def predict_proba(
    model: nn.Module,
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    tta: bool | str = False,
    precision: str = "auto",
    crop_padding: int = 4,
) -> np.ndarray:
    """Softmax probabilities (N, C) of a classifier on a whole split, in eval mode, through the
    Scorer (a softmax ClassifierScorer; TTAScorer over `tta_views` with `tta`).

    With `tta` (True / "shift", or "tencrop" at the model's training `crop_padding`), the mean of
    the softmax over the 10 views of `tta_views`. The model's train/eval
    flags are restored afterwards. `precision` (auto, fp32, bf16, fp16; see utils.runtime) sets the
    autocast of the forward passes; softmax and the mean are fp32. The scores are computed where
    the model's parameters are (`device` names that place for callers that have it at hand).
    """
    from fermetric.analysis.scorers import ClassifierScorer

    scorer = ClassifierScorer(model, output="softmax", batch_size=batch_size, precision=precision)
    scorer.compile = False  # one pass over a split: a compile (40-90 s) would not repay itself
    return tta_scorer(scorer, tta, crop_padding).scores(dataset.images).numpy()


def embed_dataset(
    embed: Callable[[torch.Tensor], torch.Tensor],
    dataset: FERDataset,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    precision: str = "auto",
) -> np.ndarray:
    """Apply `embed` (images -> (B, D)) to a whole split in batches; returns float32 (N, D).

    `precision` as in `predict_proba`; the embeddings come back fp32.
    """
    prec = runtime.resolve_precision(precision, device)
    cl = runtime.use_channels_last(device, prec)
    out = []
    with runtime.inference(device, prec):
        for start in range(0, len(dataset), batch_size):
            x = dataset.float_images(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
            out.append(embed(runtime.to_memory_format(x, cl)).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)
