"""The figures of the studies: structure and arrays, not pixels."""
from __future__ import annotations

import numpy as np
import pytest

from fermetric.analysis import top_attribution_mask
from fermetric.errors import DataError
from fermetric.plotting.confusion import plot_confusion_grid
from fermetric.plotting.explanations import (
    masked_image, outline_regions, plot_explanations, plot_lime_all_classes, plot_lime_regions, plot_method_rows,
)
from fermetric.plotting.filters import plot_activation_rows

NAMES = ("a", "b", "c")
rng = np.random.default_rng(0)
IMAGES = rng.random((3, 1, 48, 48)).astype(np.float32)


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_top_attribution_mask_keeps_the_top_fraction():
    maps = np.arange(2 * 10 * 10, dtype=float).reshape(2, 10, 10)
    maps[1] = -1.0  # nothing argues for the class
    mask = top_attribution_mask(maps, 0.1)
    assert mask[0].sum() == 10 and mask[0].ravel()[-10:].all()
    assert not mask[1].any()
    flat = np.zeros((1, 4, 4))
    flat[0, :2] = 1.0  # a tie at the threshold keeps the whole flat region
    assert top_attribution_mask(flat, 0.25).sum() == 8
    with pytest.raises(Exception, match="fraction"):
        top_attribution_mask(maps, 0)


def test_confusion_grid_titles_carry_accuracy():
    panels = [{"name": f"m{i}", "confusion": rng.integers(0, 9, (3, 3)), "accuracy": 0.5 + i / 100} for i in range(5)]
    panels.append({"name": "ensemble (soft vote)", "confusion": np.eye(3) * 4, "accuracy": 1.0})
    fig = plot_confusion_grid(panels, NAMES)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"m{i} ({50 + i:.1f} %)" for i in range(5)] + ["ensemble (soft vote) (100.0 %)"]
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert np.allclose(image_axes[-1].images[0].get_array().sum(axis=1), 1.0)  # rows normalised
    _close(fig)
    with pytest.raises(DataError, match="shape"):
        plot_confusion_grid([{"name": "x", "confusion": np.eye(2), "accuracy": 1}], NAMES)


def test_method_rows_have_map_and_mask_per_method_and_evidence_contours():
    maps = rng.standard_normal((3, 48, 48))
    masks = top_attribution_mask(maps, 0.1)
    evidence = np.zeros((3, 48, 48), bool)
    evidence[:, 10:20, 10:30] = True
    fig = plot_method_rows(IMAGES, {"saliency": maps, "lime": maps}, {"saliency": masks, "lime": masks},
                           labels=[0, 1, 2], class_names=NAMES, evidence=evidence)
    axes = np.array(fig.axes).reshape(3, 5)
    assert [ax.get_title() for ax in axes[0]] == ["image (evidence)", "saliency", "saliency mask", "lime", "lime mask"]
    for row in axes:
        assert row[0].collections and row[2].collections and row[4].collections  # evidence contours
        assert not row[1].collections
    shown = axes[0, 2].images[0].get_array()
    dimmed = ~masks[0]
    assert np.allclose(shown[dimmed][:, 0], IMAGES[0, 0][dimmed] * 0.25)  # outside the mask: dimmed
    _close(fig)
    with pytest.raises(DataError, match="masks_by_method"):
        plot_method_rows(IMAGES, {"saliency": maps}, {"lime": masks})


def test_explain_figure_gets_a_mask_column():
    maps = rng.standard_normal((3, 48, 48))
    fig = plot_explanations(IMAGES, maps, masks=top_attribution_mask(maps), mask_title="top 10%",
                            contours=np.ones((3, 48, 48), bool))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:4] == ["image", "map", "overlay", "top 10%"]
    _close(fig)


def test_lime_outlines_mark_the_region_edges():
    img = np.full((6, 6), 0.5)
    regions = np.zeros((6, 6), bool)
    regions[1:4, 1:4] = True
    rgb = outline_regions(img, regions, color=(1.0, 1.0, 0.0), upscale=1)
    yellow = np.all(rgb == (1.0, 1.0, 0.0), axis=2)
    assert yellow.any() and not yellow[5, 5] and not yellow[0, 0]
    assert np.allclose(rgb[~yellow], 0.5)  # the face itself is unchanged
    assert outline_regions(img, regions, upscale=4).shape == (24, 24, 3)
    assert masked_image(img, regions).shape == (6, 6, 3)


def test_lime_figures_per_emotion_and_all_classes():
    weights = rng.standard_normal((3, 48, 48))
    top = weights > 1.5
    fig = plot_lime_regions(IMAGES, weights, top, labels=[0, 1, 2], predictions=[0, 1, 1], class_names=NAMES,
                            targets=[0, 1, 1])
    outlined = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (192, 192, 3)]
    assert len(outlined) == 3 and outlined[2].get_xlabel() == "for b"
    _close(fig)
    fig = plot_lime_all_classes(IMAGES[0], top, NAMES, probabilities=[0.2, 0.3, 0.5], label=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:] == ["a\np = 0.20", "b (true)\np = 0.30", "c\np = 0.50"]
    _close(fig)
    with pytest.raises(DataError, match="probabilities"):
        plot_lime_all_classes(IMAGES[0], top, NAMES, probabilities=[0.5, 0.5])


def test_activation_rows_one_face_per_row_same_channels():
    acts = rng.random((3, 4, 6, 6))
    fig = plot_activation_rows(acts, IMAGES, row_titles=list(NAMES))
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 * 5
    assert [ax.get_ylabel() for ax in axes[::5]] == list(NAMES)
    _close(fig)
    with pytest.raises(DataError, match="one per row"):
        plot_activation_rows(acts, IMAGES[:2])
