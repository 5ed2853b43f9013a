"""Explanation figures: image / map / overlay rows, method grids, deletion-insertion curves.

Arrays in (from fermetric.analysis), matplotlib Figure out; nothing is recomputed here.
Maps with negative values (occlusion, LIME, signed gradients) get a diverging colour map centred
on zero; non-negative maps (|gradient|, Grad-CAM) a sequential one from zero.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fermetric.errors import DataError


def _gray_images(images: Any) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W), uint8 or float -> (N, H, W) float in [0, 1]."""
    a = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise DataError(f"images must have shape (N, 1, H, W) or (N, H, W); got {a.shape}")
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def _maps(maps: Any, n: int, shape: tuple[int, int], what: str = "maps") -> np.ndarray:
    m = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps, dtype=np.float32)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.shape != (n, *shape):
        raise DataError(f"{what} must have shape ({n}, {shape[0]}, {shape[1]}) (one per image); got {m.shape}")
    return m


def _map_style(m: np.ndarray, cmap: Optional[str]) -> dict[str, Any]:
    """imshow kwargs: diverging and symmetric for signed maps, sequential from 0 otherwise."""
    peak = float(np.abs(m).max()) if m.size else 0.0
    peak = peak if peak > 0 else 1.0
    if m.size and float(m.min()) < 0:
        return {"cmap": cmap or "RdBu_r", "vmin": -peak, "vmax": peak}
    return {"cmap": cmap or "jet", "vmin": 0.0, "vmax": peak}


def _title(i: int, labels, predictions, class_names, row_titles) -> str:
    if row_titles is not None:
        return str(row_titles[i])

    def name(c: Any) -> str:
        c = int(c)
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)

    parts = []
    if labels is not None:
        parts.append(f"true: {name(labels[i])}")
    if predictions is not None:
        parts.append(f"pred: {name(predictions[i])}")
    return "\n".join(parts)


def plot_explanations(
    images: Any,
    maps: Any,
    labels: Optional[Sequence[int]] = None,
    predictions: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    method: str = "",
    row_titles: Optional[Sequence[str]] = None,
    contours: Any = None,
    cmap: Optional[str] = None,
    alpha: float = 0.5,
    title: Optional[str] = None,
) -> Figure:
    """One row per image: the image, the map with a colour bar, the map over the image.

    Pass one image per class (FER-report style) to get a row per class.

    Args:
        images: (N, 1, 48, 48) or (N, 48, 48), uint8 or float in [0, 1].
        maps: (N, 48, 48) attributions.
        labels, predictions: (N,) class ids shown on each row.
        class_names: names for the class ids.
        method: the method's name, shown above the map column.
        row_titles: N strings replacing the label / prediction text.
        contours: (N, 48, 48) bool masks outlined on the overlay (an evidence mask, LIME's top regions).
        cmap: colour map of the maps (default: jet, or RdBu_r for signed maps).
        alpha: opacity of the map in the overlay.
        title: figure title.
    """
    imgs = _gray_images(images)
    n = imgs.shape[0]
    if n == 0:
        raise DataError("plot_explanations needs at least one image")
    m = _maps(maps, n, imgs.shape[1:])
    cont = None if contours is None else _maps(contours, n, imgs.shape[1:], "contours") > 0.5
    fig, axes = plt.subplots(n, 3, figsize=(7.2, 2.3 * n + (0.4 if title else 0)), squeeze=False)
    for i in range(n):
        style = _map_style(m[i], cmap)
        ax_img, ax_map, ax_ov = axes[i]
        ax_img.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax_img.set_ylabel(_title(i, labels, predictions, class_names, row_titles), fontsize=9)
        im = ax_map.imshow(m[i], **style)
        fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04)
        ax_ov.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax_ov.imshow(m[i], alpha=alpha, **style)
        if cont is not None and cont[i].any():
            ax_ov.contour(cont[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=10)
    axes[0, 1].set_title(method or "map", fontsize=10)
    axes[0, 2].set_title("overlay", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_method_grid(
    images: Any,
    maps_by_method: Mapping[str, Any],
    labels: Optional[Sequence[int]] = None,
    predictions: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    overlay: bool = True,
    alpha: float = 0.55,
    title: Optional[str] = None,
) -> Figure:
    """Rows = images, columns = the image then one map per method (over the image when `overlay`).

    Args:
        images: (N, 1, 48, 48) or (N, 48, 48).
        maps_by_method: method name -> (N, 48, 48) maps.
        labels, predictions, class_names: shown at the start of each row.
        overlay: draw each map over its image.
        alpha: map opacity in overlays.
        title: figure title.
    """
    imgs = _gray_images(images)
    n = imgs.shape[0]
    if n == 0 or not maps_by_method:
        raise DataError("plot_method_grid needs at least one image and one method")
    names = list(maps_by_method)
    all_maps = {k: _maps(v, n, imgs.shape[1:], f"maps of {k!r}") for k, v in maps_by_method.items()}
    cols = 1 + len(names)
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.8 * n + (0.4 if title else 0)), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(_title(i, labels, predictions, class_names, None), fontsize=8)
        for j, name in enumerate(names, start=1):
            mi = all_maps[name][i]
            style = _map_style(mi, None)
            if overlay:
                axes[i, j].imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
                axes[i, j].imshow(mi, alpha=alpha, **style)
            else:
                axes[i, j].imshow(mi, **style)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_perturbation_curves(curves: Mapping[str, Any], ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """Mean deletion or insertion curve per method, AUC in the legend.

    Args:
        curves: name -> fermetric.analysis.PerturbationCurve (fractions (S+1,), scores (N, S+1), auc (N,)).
        ax: axes to draw into (default: a new figure).
        title: axes title (default: the curves' mode).
    """
    if not curves:
        raise DataError("plot_perturbation_curves needs at least one curve")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
    else:
        fig = ax.figure
    modes = set()
    for name, c in curves.items():
        scores = np.asarray(c.scores)
        ax.plot(c.fractions, scores.mean(axis=0), label=f"{name} (AUC {float(np.mean(c.auc)):.3f})")
        modes.add(c.mode)
    ax.set_xlabel("fraction of pixels " + ("removed" if modes == {"deletion"} else "inserted" if modes == {"insertion"} else "changed"))
    ax.set_ylabel("target score")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or " / ".join(sorted(modes)))
    fig.tight_layout()
    return fig
