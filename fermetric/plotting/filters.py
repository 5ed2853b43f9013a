"""Filter-visualisation and activation grids. Arrays in, matplotlib Figure out."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fermetric.errors import DataError


def _grid(k: int, ncols: int, cell: float, extra_cols: int = 0, title: bool = False):
    ncols = max(1, min(int(ncols), k))
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols + extra_cols, figsize=(cell * (ncols + extra_cols), cell * nrows + (0.5 if title else 0.1)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes, ncols


def plot_filter_grid(
    filters: Any,
    channels: Optional[Sequence[int]] = None,
    layer: Optional[str] = None,
    ncols: int = 8,
    cmap: str = "gray",
    title: Optional[str] = None,
) -> Figure:
    """Grid of images that maximise channels of a layer (from `visualize_filters`).

    Args:
        filters: a FilterImages, or (K, H, W) images in [0, 1].
        channels: K channel ids for the captions (default: from FilterImages, else 0..K-1).
        layer: the layer name for the title.
        ncols: images per row.
        cmap: colour map; each image is stretched to its own min..max so faint patterns show.
        title: figure title (default: "<layer>: filters by gradient ascent").
    """
    if hasattr(filters, "images"):
        channels = filters.channels if channels is None else channels
        layer = filters.layer if layer is None else layer
        filters = filters.images
    imgs = np.asarray(filters, dtype=np.float32)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3 or imgs.shape[0] == 0:
        raise DataError(f"filter images must have shape (K, H, W) with K >= 1; got {imgs.shape}")
    k = imgs.shape[0]
    chans = list(range(k)) if channels is None else [int(c) for c in channels]
    if len(chans) != k:
        raise DataError(f"got {len(chans)} channel ids for {k} filter images")
    text = title or (f"{layer}: filters by gradient ascent" if layer else "filters by gradient ascent")
    fig, axes, ncols = _grid(k, ncols, 1.2, title=True)
    for i in range(k):
        ax = axes[i // ncols, i % ncols]
        lo, hi = float(imgs[i].min()), float(imgs[i].max())
        ax.imshow(imgs[i], cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
        ax.set_title(f"ch {chans[i]}", fontsize=7)
    for j in range(k, axes.size):
        axes.flat[j].axis("off")
    fig.suptitle(text, fontsize=10)
    fig.tight_layout()
    return fig


def plot_activation_grid(
    maps: Any,
    channels: Optional[Sequence[int]] = None,
    image: Any = None,
    layer: Optional[str] = None,
    index: int = 0,
    ncols: int = 8,
    cmap: str = "viridis",
    title: Optional[str] = None,
) -> Figure:
    """Channel maps of one layer for one image, the image first when given.

    Args:
        maps: an ActivationMaps (image `index` is shown), or (K, h, w) maps of one image.
        channels: K channel ids for the captions.
        image: the input, (1, 48, 48) / (48, 48), uint8 or float, shown in the first column.
        layer: layer name for the title.
        index: which image of an ActivationMaps.
        ncols: maps per row.
        cmap: colour map; all maps share one colour scale so channels compare.
        title: figure title.
    """
    if hasattr(maps, "maps"):
        if not 0 <= index < maps.maps.shape[0]:
            raise DataError(f"index {index} out of range; valid: 0..{maps.maps.shape[0] - 1}")
        channels = maps.channels[index] if channels is None else channels
        layer = maps.layer if layer is None else layer
        maps = maps.maps[index]
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] == 0:
        raise DataError(f"activation maps must have shape (K, h, w) with K >= 1; got {a.shape}")
    k = a.shape[0]
    chans = list(range(k)) if channels is None else [int(c) for c in np.asarray(channels).ravel()]
    if len(chans) != k:
        raise DataError(f"got {len(chans)} channel ids for {k} maps")
    extra = 1 if image is not None else 0
    fig, axes, ncols = _grid(k, ncols, 1.2, extra_cols=extra, title=True)
    if image is not None:
        img = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        img = img.reshape(img.shape[-2:])
        img = img / 255.0 if img.dtype == np.uint8 else img
        axes[0, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, 0].set_title("input", fontsize=7)
        for r in range(1, axes.shape[0]):
            axes[r, 0].axis("off")
    vmin, vmax = float(a.min()), float(a.max())
    im = None
    for i in range(k):
        ax = axes[i // ncols, extra + i % ncols]
        im = ax.imshow(a[i], cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-6)
        ax.set_title(f"ch {chans[i]}", fontsize=7)
    for j in range(k, axes.shape[0] * ncols):
        axes[j // ncols, extra + j % ncols].axis("off")
    fig.suptitle(title or (f"{layer}: activations" if layer else "activations"), fontsize=10)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes[:, extra:].ravel().tolist(), fraction=0.02, pad=0.01)
    return fig


def plot_activation_rows(
    maps: Any,
    images: Any,
    row_titles: Optional[Sequence[str]] = None,
    cmap: str = "viridis",
    title: Optional[str] = None,
) -> Figure:
    """A layer's outputs for several faces (e.g. one per emotion): a row per face, the face
    first, then the same channels for every face on one colour scale, so rows compare.

    Args:
        maps: an ActivationMaps of N images (`layer_activations(..., channels=...)`: the same
            channels in every row), or (N, K, h, w) maps.
        images: (N, 1, 48, 48) or (N, 48, 48), uint8 or float in [0, 1].
        row_titles: N captions (e.g. the emotions).
        cmap: colour map of the activations.
        title: figure title.
    """
    layer, chans = None, None
    if hasattr(maps, "maps"):
        layer = maps.layer
        chans = np.asarray(maps.channels)
        if chans.ndim == 2 and len(chans) and not (chans == chans[:1]).all():
            raise DataError("every row must show the same channels; pass channels= to layer_activations "
                            "(select='top' picks channels per image)")
        chans = chans[0] if chans.ndim == 2 and len(chans) else chans
        maps = maps.maps
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"activation maps must have shape (N, K, h, w) with N, K >= 1; got {a.shape}")
    n, k = a.shape[:2]
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3 or imgs.shape[0] != n:
        raise DataError(f"images must be {n} faces of shape (H, W) (one per row of maps); got {imgs.shape}")
    imgs = imgs / 255.0 if imgs.dtype == np.uint8 else imgs.astype(np.float32)
    if row_titles is not None and len(row_titles) != n:
        raise DataError(f"got {len(row_titles)} row titles for {n} rows")
    chans = list(range(k)) if chans is None else [int(c) for c in np.asarray(chans).ravel()]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.05 * (k + 1) + 0.6, 1.1 * n + 0.5), squeeze=False)
    vmin, vmax = float(a.min()), float(a.max())
    im = None
    for i in range(n):
        axes[i, 0].imshow(imgs[i], cmap="gray", vmin=0, vmax=1)
        if row_titles is not None:
            axes[i, 0].set_ylabel(str(row_titles[i]), fontsize=8)
        for j in range(k):
            im = axes[i, j + 1].imshow(a[i, j], cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-6)
            if i == 0:
                axes[i, j + 1].set_title(f"ch {chans[j]}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=7)
    fig.suptitle(title or (f"{layer}: outputs" if layer else "layer outputs"), fontsize=10)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), fraction=0.02, pad=0.01)
    return fig
