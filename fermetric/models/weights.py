"""Starting weights: state-dict files and torchvision's ImageNet weights, fitted to grayscale.

Both paths go through `fit_state_dict`, which is strict except in three documented ways:

- a first conv with 3 input channels is folded to 1 by summing over the channels. For a gray
  image replicated to RGB, conv(W, [x, x, x]) = conv(W_r + W_g + W_b, x), so the folded layer
  computes what the RGB layer computed on that image (up to the per-channel ImageNet
  normalisation, close to ours: mean ~0.45 vs 0.5, std ~0.226 vs 0.25);
- the classifier head (`model.head_prefixes`) is skipped with a logged note when its shape or
  presence differs (another class count, torchvision's 1000-class head);
- for ImageNet weights only, the prefixes the model names in `pretrained_skip_prefixes()` (a
  3x3 stem where ImageNet has 7x7) are skipped with a note.

Anything else that does not fit raises ModelError listing the first offending keys and shapes.
Files, the hub cache's included, are read with torch.load(weights_only=True).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.hub
from torch import nn

from fermetric.errors import CheckpointError, ModelError, clip
from fermetric.utils.io import read_torch_file, torch_load_error

log = logging.getLogger(__name__)

# Keys under which a checkpoint dict may hold the model's state dict, tried in order.
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "model_state")
# Wrappers that prefix every key: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_DEFAULT_HEAD_PREFIXES = ("fc.", "head.", "classifier.")
_SHOW = 5  # keys listed in an error message


@dataclass
class WeightsReport:
    """What `fit_state_dict` did; also returned by the loaders."""

    source: str
    loaded: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # notes, "key: reason"


def state_dict_mismatch(mismatched: Sequence[str], missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """One description of why weights do not fit a model (for weights files and checkpoints):
    "N of other shape: key (file shape) vs model (shape); ... | N missing from the weights: ... |
    N not in the model: ...", a few examples of each."""
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} of other shape: {'; '.join(mismatched[:_SHOW])}")
    if missing:
        parts.append(f"{len(missing)} missing from the weights: {', '.join(missing[:_SHOW])}")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the model: {', '.join(unexpected[:_SHOW])}")
    return " | ".join(parts)

def _model_label(model: nn.Module) -> str:
    name = getattr(model, "model_name", "") or type(model).__name__
    stem = getattr(model, "stem", None)
    return f"{name} (stem {stem!r})" if stem else name


def first_conv_key(model: nn.Module) -> str | None:
    """State-dict key of the first Conv2d's weight (the layer that sees the image)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def extract_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """A state dict from what torch.load returned: a plain state dict or a checkpoint dict."""
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(
            f"{source}: no state dict found; expected a dict of tensors or a checkpoint with one of the keys "
            f"{', '.join(CHECKPOINT_KEYS)}; top-level keys are: {keys or '(none)'}"
        )
    raise CheckpointError(f"{source}: expected a state dict (a dict of tensors), got {type(obj).__name__}")


def _strip_prefixes(state: dict[str, torch.Tensor], model_keys: set[str], report: WeightsReport) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    # An embedding model's file loaded into a plain backbone: keep the backbone's part.
    if not any(k.startswith("backbone.") for k in model_keys) and any(k.startswith("backbone.") for k in state):
        others = [k for k in state if not k.startswith("backbone.")]
        report.skipped += [f"{k}: not part of the backbone" for k in others]
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def fit_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    skip_prefixes: Iterable[str] = (),
) -> WeightsReport:
    """Load `state` into `model`, folding the first conv and skipping the head where needed.

    Args:
        model: the model to fill (changed in place).
        state: a state dict (keys may carry a DataParallel "module." prefix).
        source: where the weights came from, for messages.
        skip_prefixes: more key prefixes that may be skipped (left at their initial values).

    Returns:
        A WeightsReport: loaded, folded and skipped keys.

    Raises:
        ModelError: a key missing, unexpected, or of another shape outside the skippable ones.
    """
    report = WeightsReport(source)
    target = model.state_dict()
    state = _strip_prefixes(dict(state), set(target), report)
    head = tuple(getattr(model, "head_prefixes", _DEFAULT_HEAD_PREFIXES))
    skippable = head + tuple(skip_prefixes)
    conv_key = first_conv_key(model)

    fitted: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    mismatched_keys: set[str] = set()
    unexpected: list[str] = []
    for key, value in state.items():
        if key not in target:
            if _under(key, skippable):
                report.skipped.append(f"{key}: not in this model")
            elif not key.endswith("num_batches_tracked"):
                unexpected.append(key)
            continue
        want = target[key]
        if (
            key == conv_key and value.ndim == 4 and want.shape[1] == 1 and value.shape[1] > 1
            and value.shape[:1] + value.shape[2:] == want.shape[:1] + want.shape[2:]
        ):
            value = value.sum(dim=1, keepdim=True)
            report.folded.append(key)
        if value.shape != want.shape:
            if _under(key, skippable):
                report.skipped.append(f"{key}: shape {tuple(value.shape)} in the weights, {tuple(want.shape)} in the model")
            else:
                mismatched.append(f"{key} {tuple(state[key].shape)} vs model {tuple(want.shape)}")
                mismatched_keys.add(key)
            continue
        fitted[key] = value
    missing = [
        k for k in target
        if k not in fitted and k not in mismatched_keys and not _under(k, skippable)
        and not k.endswith("num_batches_tracked")
    ]
    if mismatched or unexpected or missing:
        raise ModelError(
            f"{source} does not fit {_model_label(model)}: " + state_dict_mismatch(mismatched, missing, unexpected)
            + ". Were the weights saved from another model, stem or width?"
        )
    skipped_model_keys = [k for k in target if k not in fitted and not k.endswith("num_batches_tracked")]
    report.skipped += [f"{k}: kept at its initial value" for k in skipped_model_keys
                       if not any(note.startswith(k + ":") for note in report.skipped)]
    model.load_state_dict(fitted, strict=False)
    report.loaded = sorted(fitted)
    for key in report.folded:
        log.info("%s: folded the RGB first conv %s to %d input channel(s)", source, key, target[key].shape[1])
    if report.skipped:
        log.info("%s: skipped %d entries (new head or stem): %s", source, len(report.skipped), "; ".join(report.skipped[:8]))
    return report


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain state dict, or a checkpoint holding one (weights_only load)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist")
    obj = read_torch_file(path, map_location="cpu")
    return extract_state_dict(obj, str(path))


def load_weights_file(model: nn.Module, path: str | Path) -> WeightsReport:
    """Fill `model` from a state-dict or checkpoint file (see the module docstring for the rules).

    Raises:
        CheckpointError: the file is missing or unreadable.
        ModelError: its weights do not fit the model.
    """
    return fit_state_dict(model, read_state_dict(path), source=f"weights file {path}")


def load_pretrained(model: nn.Module, weights_name: str) -> WeightsReport:
    """Fill `model` from torchvision's ImageNet weights, e.g. "ResNet18_Weights.IMAGENET1K_V1".

    The file is downloaded once into torch's hub cache ($TORCH_HOME/hub/checkpoints); offline,
    a cached copy is used.

    Raises:
        ModelError: unknown weights name, the download failed (offline: pass --weights FILE), or
            the cached file is damaged or holds Python objects (refused, never unpickled).
    """
    from torchvision.models import get_weight

    try:
        weights = get_weight(weights_name)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ModelError(f"unknown torchvision weights {weights_name!r}: {exc}") from exc
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        # weights_only: a file found in the hub cache is loaded without a hash check, and anyone
        # who can write there must not be able to run code through it
        state = torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False, check_hash=True,
                                                   weights_only=True)
    except OSError as exc:  # URLError, timeouts, no route: offline
        raise ModelError(
            f"could not download torchvision's {weights_name} from {weights.url} ({clip(exc, 120)}); this machine "
            f"may be offline. Download the file elsewhere and start from it with --weights FILE "
            f"(--set model.weights=FILE), which is read with weights_only=True, instead of model.pretrained"
        ) from None
    except Exception as exc:  # truncated file, hash mismatch, or objects refused by weights_only
        raise ModelError(f"torchvision's {weights_name} in the hub cache could not be used: {torch_load_error(cache, exc)}; "
                         f"delete {cache} and retry, or pass --weights FILE") from None
    skip = model.pretrained_skip_prefixes() if hasattr(model, "pretrained_skip_prefixes") else ()
    return fit_state_dict(model, state, source=f"torchvision {weights_name}", skip_prefixes=skip)
