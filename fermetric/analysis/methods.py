"""One entry point for every attribution method: `explain(scorer, images, method, ...)`.

The CLI and the faithfulness evaluation call methods by name through here, so options are
checked in one place: an unknown method or option is a ConfigError listing the valid ones.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import numpy as np

from fermetric.analysis.gradcam import gradcam
from fermetric.analysis.lime_explainer import lime_explanation
from fermetric.analysis.occlusion import occlusion_saliency
from fermetric.analysis.saliency import gradient_saliency, smoothgrad
from fermetric.scoring import Scorer
from fermetric.analysis.targets import require_differentiable
from fermetric.errors import ConfigError
from fermetric.utils.checks import check_int

# name -> (function, needs gradients)
_METHODS: dict[str, tuple[Callable[..., Any], bool]] = {
    "saliency": (gradient_saliency, True),
    "smoothgrad": (smoothgrad, True),
    "occlusion": (occlusion_saliency, False),
    "gradcam": (gradcam, True),
    "lime": (lime_explanation, False),
}
METHODS: tuple[str, ...] = tuple(_METHODS)
GRADIENT_METHODS: tuple[str, ...] = tuple(m for m, (_, g) in _METHODS.items() if g)
BLACK_BOX_METHODS: tuple[str, ...] = tuple(m for m, (_, g) in _METHODS.items() if not g)


def _check_method(method: str) -> Callable[..., Any]:
    if method not in _METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; valid: {', '.join(METHODS)}")
    return _METHODS[method][0]


def method_options(method: str) -> dict[str, Any]:
    """The options `method` takes and their defaults (for CLI help and validation)."""
    fn = _check_method(method)
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def needs_gradients(method: str) -> bool:
    _check_method(method)
    return _METHODS[method][1]


def supports(scorer: Scorer, method: str) -> bool:
    """Whether `scorer` can run `method` (gradient methods need a differentiable scorer)."""
    return not needs_gradients(method) or bool(getattr(scorer, "differentiable", False))


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each map by its largest |value|: [0, 1] for non-negative maps, [-1, 1] for signed.

    Args:
        maps: (N, H, W).

    Returns:
        (N, H, W) float32; all-zero maps stay zero.
    """
    maps = np.asarray(maps, dtype=np.float32)
    peak = np.abs(maps).reshape(maps.shape[0], -1).max(axis=1) if maps.size else np.zeros(0, np.float32)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


def top_attribution_mask(maps: Any, fraction: float = 0.1) -> np.ndarray:
    """The `fraction` of pixels with the largest attribution of each map (the "mask" of the
    image / saliency / mask figures).

    Ties at the threshold are kept (a flat region is all in or all out), and a map with no
    positive value gives an empty mask: nothing there argues for the class.

    Args:
        maps: (N, H, W) attributions; larger = more evidence for the target class.
        fraction: share of pixels to keep, in (0, 1].

    Returns:
        (N, H, W) bool.
    """
    m = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps, dtype=np.float64)
    if m.ndim != 3:
        raise ConfigError(f"maps must have shape (N, H, W); got {m.shape}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < float(fraction) <= 1:
        raise ConfigError(f"fraction must be a number in (0, 1]; got {fraction!r}")
    flat = m.reshape(len(m), -1)
    if flat.shape[1] == 0:
        return np.zeros(m.shape, bool)
    k = max(1, int(round(float(fraction) * flat.shape[1])))
    kth = -np.partition(-flat, k - 1, axis=1)[:, k - 1]  # the k-th largest value of each map
    return ((flat >= kth[:, None]) & (flat > 0)).reshape(m.shape)


def pick_per_class(labels: Any, per_class: int = 1, num_classes: Optional[int] = None, predictions: Any = None,
                   seed: Optional[int] = None) -> np.ndarray:
    """Up to `per_class` image indices of each class, in class order: the images that per-class
    explanation figures and the faithfulness table (explain, explain-eval) show.

    Args:
        labels: (N,) true class ids.
        per_class: images per class (fewer where a class has fewer).
        num_classes: classes to look for (default: max label + 1); absent classes are skipped.
        predictions: (N,) predicted ids; when given, correctly predicted images are preferred
            (the others are used only for a class with none right).
        seed: None takes the first images of each class; an int draws them at random from one
            NumPy generator seeded with it (indices sorted within each class).

    Returns:
        (K,) int64 indices.
    """
    lab = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).ravel()
    pred = None if predictions is None else np.asarray(predictions.cpu() if hasattr(predictions, "cpu") else predictions).ravel()
    if pred is not None and pred.shape != lab.shape:
        raise ConfigError(f"predictions must have {lab.shape[0]} entries like labels; got {pred.shape[0]}")
    check_int("per_class", per_class, 1)
    c = int(lab.max()) + 1 if num_classes is None and lab.size else int(num_classes or 0)
    rng = None if seed is None else np.random.default_rng(seed)
    out: list[int] = []
    for k in range(c):
        idx = np.flatnonzero(lab == k)
        if idx.size == 0:
            continue
        if pred is not None:
            good = idx[pred[idx] == k]
            idx = good if good.size else idx
        n = min(int(per_class), idx.size)
        out.extend(idx[:n].tolist() if rng is None else sorted(rng.choice(idx, n, replace=False).tolist()))
    return np.array(out, dtype=np.int64)


def one_per_class(labels: Any, num_classes: Optional[int] = None, predictions: Any = None) -> np.ndarray:
    """Index of one image per class (in class order), a correctly predicted one where
    `predictions` are given: `pick_per_class(labels, 1, num_classes, predictions)`."""
    return pick_per_class(labels, 1, num_classes, predictions)


def explain(scorer: Scorer, images: Any, method: str, target: Any = None, *, normalize: bool = False, **options: Any) -> np.ndarray:
    """Attribution maps of `images` by a named method.

    Args:
        scorer: ClassifierScorer, PrototypeScorer or KNNScorer (black-box methods only).
        images: (N, 1, 48, 48) float in [0, 1] or uint8.
        method: "saliency", "smoothgrad", "occlusion", "gradcam" or "lime".
        target: None (predicted class), an int / class name, or N of them.
        normalize: scale each map by its max |value| (see `normalize_maps`).
        **options: the method's own options (see `method_options(method)`), e.g. patch_size=8
            for occlusion, layer="layer4" for gradcam, num_samples=1000 for lime.

    Returns:
        (N, 48, 48) float32 maps, larger = more evidence for the target class (for LIME: each
        pixel carries its region's weight; call `lime_explanation` for the top-region masks).
    """
    fn = _check_method(method)
    valid = method_options(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {', '.join(valid) or '(none)'}"
        )
    if needs_gradients(method):
        require_differentiable(scorer, method)
    out = fn(scorer, images, target, **options)
    maps = out.weights if method == "lime" else out
    maps = np.asarray(maps, dtype=np.float32)
    return normalize_maps(maps) if normalize else maps
