"""Filter visualisation, activation maps and the explanation / filter figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fermetric.analysis import conv_layer_names, deletion_curve, explain, layer_activations, lime_explanation, visualize_filters
from fermetric.scoring import ClassifierScorer
from fermetric.data.synthetic import generate_synthfer
from fermetric.errors import ConfigError, DataError, ModelError
from fermetric.models import create_embedding_model, create_model
from fermetric.plotting.explanations import plot_explanations, plot_method_grid, plot_perturbation_curves
from fermetric.plotting.filters import plot_activation_grid, plot_filter_grid




@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("baseline", width=4)


def _tv(a: np.ndarray) -> float:
    """Mean total variation: high for pixel noise, low for smooth patterns."""
    return float(np.abs(np.diff(a, axis=1)).mean() + np.abs(np.diff(a, axis=2)).mean())


def test_filter_visualisation_excites_its_channel_and_is_smooth(model):
    res = visualize_filters(model, "features.3", channels=[0, 1, 2, 3], steps=40)
    assert res.images.shape == (4, 48, 48) and res.images.dtype == np.float32
    assert res.images.min() >= 0 and res.images.max() <= 1 and list(res.channels) == [0, 1, 2, 3]
    start = layer_activations(model, torch.full((1, 1, 48, 48), 0.5), "features.3", channels=[0, 1, 2, 3])
    assert np.all(res.activation > start.mean_activation[0] + 0.05)
    # reported activation = what the images really reach
    again = layer_activations(model, torch.from_numpy(res.images)[:, None], "features.3", channels=[0, 1, 2, 3])
    np.testing.assert_allclose(np.diag(again.mean_activation), res.activation, rtol=1e-4, atol=1e-6)
    raw = visualize_filters(model, "features.3", channels=[0, 1, 2, 3], steps=40, jitter=0, blur_every=0, l2_decay=0)
    assert _tv(res.images) < 0.6 * _tv(raw.images)  # the regularisers remove high-frequency noise
    octaves = visualize_filters(model, "features.3", channels=[0], steps=15, octaves=3)
    assert octaves.images.shape == (1, 48, 48)


def test_filters_leave_the_model_alone(model):
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    visualize_filters(model, "features.0.0", num_channels=2, steps=3)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    for p in model.parameters():
        p.grad = None


def test_filter_and_activation_errors(model):
    with pytest.raises(ConfigError, match=r"valid: 0\.\.3"):
        visualize_filters(model, "features.0.0", channels=[4], steps=1)
    with pytest.raises(ModelError, match="valid conv-like layers: features, features.0"):
        visualize_filters(model, "conv9", steps=1)
    with pytest.raises(ConfigError, match="select must be one of first, top"):
        layer_activations(model, torch.rand(1, 1, 48, 48), "features.0", select="random")
    assert "features.3.3" in conv_layer_names(model) and "fc" not in conv_layer_names(model)


def test_layer_activations_match_a_manual_forward(model):
    x = torch.rand(3, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    first = layer_activations(model, x, "features.1", k=5)
    model_eval = model.eval()
    with torch.no_grad():
        manual = model_eval.features[1](model_eval.features[0](model_eval.normalize(x)))
    model.train()
    assert first.maps.shape == (3, 5, 12, 12) and first.num_channels == 8
    np.testing.assert_allclose(first.maps, manual[:, :5].numpy(), rtol=1e-5, atol=1e-6)
    top = layer_activations(model, x, "features.1", k=3, select="top")
    means = manual.mean(dim=(2, 3)).numpy()
    for i in range(3):
        np.testing.assert_array_equal(top.channels[i], np.argsort(-means[i])[:3])
        assert np.all(np.diff(top.mean_activation[i]) <= 0)
    emb = create_embedding_model("baseline", embedding_dim=4, projection="linear", width=4)
    assert layer_activations(emb, x, k=2).layer == "backbone.features"  # default: the Grad-CAM layer


def test_explanation_figures(model):
    data = generate_synthfer(3, seed=0, labels=[0, 3, 5])
    scorer = ClassifierScorer(model)
    sal = explain(scorer, data.images, "saliency", data.labels)
    occ = explain(scorer, data.images, "occlusion", data.labels, patch_size=12, stride=12)
    fig = plot_explanations(data.images, occ, labels=data.labels, predictions=[0, 1, 5],
                            class_names=scorer.class_names, method="occlusion", contours=data.masks)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 3 + 3  # 3 panels per row + colour bars
    assert "true: Angry" in fig.axes[0].get_ylabel()
    lime = lime_explanation(scorer, data.images[:1], 0, num_samples=30)
    assert isinstance(plot_explanations(data.images[:1], lime.weights, contours=lime.top_mask, method="lime"), Figure)
    grid = plot_method_grid(data.images, {"saliency": sal, "occlusion": occ}, labels=data.labels, class_names=scorer.class_names)
    assert len(grid.axes) == 3 * 3
    curve = deletion_curve(scorer, data.images, sal, data.labels, steps=4)
    assert isinstance(plot_perturbation_curves({"saliency": curve}), Figure)
    with pytest.raises(DataError, match=r"\(3, 48, 48\)"):
        plot_explanations(data.images, sal[:2])


def test_filter_figures(model):
    res = visualize_filters(model, "features.0.0", num_channels=4, steps=2)
    fig = plot_filter_grid(res, ncols=3)
    assert isinstance(fig, Figure) and "features.0.0" in fig._suptitle.get_text()
    acts = layer_activations(model, torch.rand(2, 1, 48, 48), "features.0", k=6, select="top")
    fig2 = plot_activation_grid(acts, image=torch.rand(1, 48, 48), index=1, ncols=4)
    assert isinstance(fig2, Figure)
    with pytest.raises(DataError, match=r"valid: 0\.\.1"):
        plot_activation_grid(acts, index=2)
    with pytest.raises(DataError, match=r"\(K, H, W\)"):
        plot_filter_grid(np.zeros((0, 48, 48)))
