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


def _finish_grid(fig: Figure, axes: np.ndarray, column_titles: Sequence[str], title: Optional[str],
                 fontsize: float, title_fontsize: Optional[float] = None) -> Figure:
    """The common end of the grid figures: no ticks on any panel (faces and maps, not plots),
    `column_titles` over the first row's panels, the figure title, a tight layout.

    Args:
        axes: (rows, cols) array of the figure's panels (plt.subplots(..., squeeze=False)).
        column_titles: headings of the first columns (fewer than the columns: the rest keep theirs).
        title_fontsize: of the figure title; None: matplotlib's figure-title size.
    """
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, text in zip(axes[0], column_titles):
        ax.set_title(text, fontsize=fontsize)
    if title:
        fig.suptitle(title, **({} if title_fontsize is None else {"fontsize": title_fontsize}))
    fig.tight_layout()
    return fig


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
    masks: Any = None,
    mask_title: str = "mask",
) -> Figure:
    """One row per image: the image, the map with a colour bar, the map over the image, and
    (with `masks`) the image with everything outside the mask dimmed.

    Pass one image per class (FER-report style) to get a row per class.

    Args:
        images: (N, 1, 48, 48) or (N, 48, 48), uint8 or float in [0, 1].
        maps: (N, 48, 48) attributions.
        labels, predictions: (N,) class ids shown on each row.
        class_names: names for the class ids.
        method: the method's name, shown above the map column.
        row_titles: N strings replacing the label / prediction text.
        contours: (N, 48, 48) bool masks outlined on the overlay and the mask column (an
            evidence mask, LIME's top regions).
        cmap: colour map of the maps (default: jet, or RdBu_r for signed maps).
        alpha: opacity of the map in the overlay.
        title: figure title.
        masks: (N, 48, 48) bool, e.g. `top_attribution_mask(maps)`: adds the mask column.
        mask_title: heading of the mask column.
    """
    imgs = _gray_images(images)
    n = imgs.shape[0]
    if n == 0:
        raise DataError("plot_explanations needs at least one image")
    m = _maps(maps, n, imgs.shape[1:])
    cont = None if contours is None else _maps(contours, n, imgs.shape[1:], "contours") > 0.5
    keep = None if masks is None else _maps(masks, n, imgs.shape[1:], "masks") > 0.5
    cols = 3 if keep is None else 4
    fig, axes = plt.subplots(n, cols, figsize=(2.4 * cols, 2.3 * n + (0.4 if title else 0)), squeeze=False)
    for i in range(n):
        style = _map_style(m[i], cmap)
        ax_img, ax_map, ax_ov = axes[i][:3]
        if keep is not None:
            axes[i, 3].imshow(masked_image(imgs[i], keep[i]))
            if cont is not None and cont[i].any():
                axes[i, 3].contour(cont[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        ax_img.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax_img.set_ylabel(_title(i, labels, predictions, class_names, row_titles), fontsize=9)
        im = ax_map.imshow(m[i], **style)
        fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04)
        ax_ov.imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        ax_ov.imshow(m[i], alpha=alpha, **style)
        if cont is not None and cont[i].any():
            ax_ov.contour(cont[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    return _finish_grid(fig, axes, ["image", method or "map", "overlay", mask_title], title, fontsize=10)


def masked_image(image: np.ndarray, mask: np.ndarray, dim: float = 0.25) -> np.ndarray:
    """(H, W, 3) RGB: the grey image inside `mask`, dimmed to `dim` of its value outside, the
    mask's edge outlined in yellow (the "mask" panel of image / saliency / mask rows)."""
    from skimage.segmentation import find_boundaries

    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    keep = np.asarray(mask, dtype=bool)
    rgb = np.repeat(np.where(keep, img, img * dim)[..., None], 3, axis=2)
    rgb[find_boundaries(keep, mode="inner") & keep] = (1.0, 0.85, 0.0)
    return rgb


def outline_regions(image: np.ndarray, regions: np.ndarray, color: tuple[float, float, float] = (1.0, 1.0, 0.0),
                    upscale: int = 4) -> np.ndarray:
    """(H*upscale, W*upscale, 3) RGB: the face with the edges of `regions` drawn on it, as lime's
    image examples do (`get_image_and_mask` + skimage's `mark_boundaries`).

    The face is enlarged first (nearest neighbour) so that a one-pixel outline does not hide
    a 48x48 face's features.

    Args:
        image: (H, W) grey image in [0, 1].
        regions: (H, W) bool (e.g. LimeResult.top_mask) or int labels; edges between different
            values are drawn.
        color: RGB of the outline.
        upscale: enlargement factor (>= 1).
    """
    from skimage.segmentation import mark_boundaries

    img = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    lab = np.asarray(regions)
    if lab.shape != img.shape:
        raise DataError(f"regions must have the image's shape {img.shape}; got {lab.shape}")
    up = max(1, int(upscale))
    img = np.kron(img, np.ones((up, up)))
    lab = np.kron(lab.astype(np.int64), np.ones((up, up), dtype=np.int64))
    return mark_boundaries(np.repeat(img[..., None], 3, axis=2), lab, color=color, mode="inner")


def plot_method_rows(
    images: Any,
    maps_by_method: Mapping[str, Any],
    masks_by_method: Mapping[str, Any],
    labels: Optional[Sequence[int]] = None,
    predictions: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    evidence: Any = None,
    title: Optional[str] = None,
) -> Figure:
    """Per image (one face per emotion) a row of image, then for every method its map and its
    mask: the studies' "original image / saliency map / mask" figure, all methods side by side.

    Args:
        images: (N, 1, 48, 48) or (N, 48, 48).
        maps_by_method: method -> (N, 48, 48) attributions.
        masks_by_method: method -> (N, 48, 48) bool masks (the top attributions thresholded,
            `top_attribution_mask`); the same methods as `maps_by_method`.
        labels, predictions, class_names: the row captions.
        evidence: (N, 48, 48) bool ground-truth evidence masks (SynthFER), drawn as a green
            contour on the image and on every mask; None where the data has none.
        title: figure title.
    """
    imgs = _gray_images(images)
    n = imgs.shape[0]
    names = list(maps_by_method)
    if n == 0 or not names:
        raise DataError("plot_method_rows needs at least one image and one method")
    if set(masks_by_method) != set(names):
        raise DataError(f"masks_by_method has methods {sorted(masks_by_method)}; expected those of maps_by_method {sorted(names)}")
    maps = {k: _maps(maps_by_method[k], n, imgs.shape[1:], f"maps of {k!r}") for k in names}
    masks = {k: _maps(masks_by_method[k], n, imgs.shape[1:], f"masks of {k!r}") > 0.5 for k in names}
    ev = None if evidence is None else _maps(evidence, n, imgs.shape[1:], "evidence masks") > 0.5
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(n, cols, figsize=(1.55 * cols, 1.7 * n + (0.45 if title else 0.1)), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(_title(i, labels, predictions, class_names, None), fontsize=8)
        for j, name in enumerate(names):
            ax_map, ax_mask = axes[i, 1 + 2 * j], axes[i, 2 + 2 * j]
            ax_map.imshow(maps[name][i], **_map_style(maps[name][i], None))
            ax_mask.imshow(masked_image(imgs[i], masks[name][i]))
        if ev is not None and ev[i].any():
            for ax in [axes[i, 0]] + [axes[i, 2 + 2 * j] for j in range(len(names))]:
                ax.contour(ev[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
    headings = ["image" + (" (evidence)" if ev is not None else "")] + [h for name in names for h in (name, f"{name} mask")]
    return _finish_grid(fig, axes, headings, title, fontsize=8, title_fontsize=10)


def plot_lime_regions(
    images: Any,
    weights: Any,
    top_masks: Any,
    labels: Optional[Sequence[int]] = None,
    predictions: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    targets: Optional[Sequence[int]] = None,
    title: Optional[str] = None,
) -> Figure:
    """LIME per image (one face per emotion): the face, the region weights, and the face with
    the top regions outlined (lime's `get_image_and_mask(positive_only=True)` + mark_boundaries).

    Args:
        images: (N, 1, 48, 48) or (N, 48, 48).
        weights: (N, 48, 48) region weights (LimeResult.weights).
        top_masks: (N, 48, 48) bool top positive regions (LimeResult.top_mask).
        labels, predictions, class_names: the row captions.
        targets: (N,) explained classes, named above the outlined face.
        title: figure title.
    """
    imgs = _gray_images(images)
    n = imgs.shape[0]
    if n == 0:
        raise DataError("plot_lime_regions needs at least one image")
    w = _maps(weights, n, imgs.shape[1:], "weights")
    top = _maps(top_masks, n, imgs.shape[1:], "top_masks") > 0.5
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + (0.45 if title else 0.1)), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(_title(i, labels, predictions, class_names, None), fontsize=8)
        im = axes[i, 1].imshow(w[i], **_map_style(w[i], "RdBu_r" if float(w[i].min()) < 0 else None))
        fig.colorbar(im, ax=axes[i, 1], fraction=0.046, pad=0.04)
        axes[i, 2].imshow(outline_regions(imgs[i], top[i]))
        if targets is not None:
            t = int(targets[i])
            axes[i, 2].set_xlabel(f"for {class_names[t] if class_names is not None and 0 <= t < len(class_names) else t}",
                                  fontsize=8)
    return _finish_grid(fig, axes, ["image", "LIME region weights", "top regions"], title, fontsize=9, title_fontsize=10)


def plot_lime_all_classes(
    image: Any,
    top_masks: Any,
    class_names: Sequence[str],
    probabilities: Optional[Sequence[float]] = None,
    label: Optional[int] = None,
    title: Optional[str] = None,
) -> Figure:
    """One face, LIME's top regions for every class: which parts argue for each emotion.

    Args:
        image: (1, 48, 48) or (48, 48), uint8 or float.
        top_masks: (C, 48, 48) bool, the top regions of the face explained for class 0..C-1.
        class_names: the C classes.
        probabilities: (C,) the model's scores of the face, shown in the panel titles.
        label: the true class (marked in its panel title).
        title: figure title.
    """
    img = _gray_images(np.asarray(image.detach().cpu() if hasattr(image, "detach") else image).reshape(1, *np.shape(image)[-2:]))[0]
    c = len(class_names)
    top = _maps(top_masks, c, img.shape, "top_masks") > 0.5
    if probabilities is not None and len(probabilities) != c:
        raise DataError(f"probabilities must have {c} entries (one per class); got {len(probabilities)}")
    cols = c + 1
    fig, axes = plt.subplots(1, cols, figsize=(1.8 * cols, 2.3 + (0.4 if title else 0.1)), squeeze=False)
    axes[0, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("image" + (f"\ntrue: {class_names[int(label)]}" if label is not None else ""), fontsize=8)
    for k in range(c):
        axes[0, k + 1].imshow(outline_regions(img, top[k]))
        text = str(class_names[k]) + (" (true)" if label is not None and int(label) == k else "")
        if probabilities is not None:
            text += f"\np = {float(probabilities[k]):.2f}"
        axes[0, k + 1].set_title(text, fontsize=8)
    return _finish_grid(fig, axes, [], title, fontsize=8, title_fontsize=10)


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
    return _finish_grid(fig, axes, ["image", *names], title, fontsize=9)


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
