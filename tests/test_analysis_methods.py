"""Scorers and attribution methods (fermetric.analysis): every method on both model families,
batched = one by one, inputs untouched, hand-built models with known answers, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fermetric.analysis import BLACK_BOX_METHODS, METHODS, explain, gradcam, gradient_saliency, lime_explanation, method_options, occlusion_saliency, one_per_class, segment_image, smoothgrad
from fermetric.scoring import ClassifierScorer, KNNScorer, PrototypeScorer
from fermetric.analysis.lime_explainer import _explainer_class
from fermetric.data.synthetic import generate_synthfer
from fermetric.errors import ConfigError, DataError, ModelError
from fermetric.models import create_embedding_model, create_model
from fermetric.retrieval.knn import KNNClassifier

# Small settings keep the whole file fast on a shared 2-core machine.
FAST = {"lime": {"num_samples": 60}, "smoothgrad": {"samples": 4}, "occlusion": {"patch_size": 12, "stride": 6}}




class RegionModel(nn.Module):
    """score_c = w_c * sum of the pixels in class c's square region (a linear model with a known
    answer: every attribution of class c belongs inside region c)."""

    num_classes = 2

    def __init__(self, regions=((8, 16, 32, 40), (30, 38, 4, 12))):
        super().__init__()
        masks = torch.zeros(len(regions), 48, 48)
        for c, (y0, y1, x0, x1) in enumerate(regions):
            masks[c, y0:y1, x0:x1] = 1.0
        self.register_buffer("masks", masks)
        self.w = nn.Parameter(torch.ones(len(regions)))

    def forward(self, x):
        return self.w * torch.einsum("nhw,chw->nc", x[:, 0], self.masks)


@pytest.fixture(scope="module")
def data():
    return generate_synthfer(14, seed=3, labels=torch.arange(14) % 7)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return create_model("baseline", width=4, dropout=0.0, block_dropout=0.0)


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(1)
    return create_embedding_model("baseline", embedding_dim=8, projection="linear", width=4)


@pytest.fixture(scope="module")
def scorers(classifier, embedder, data):
    gallery = generate_synthfer(28, seed=4, labels=torch.arange(28) % 7)
    proto = PrototypeScorer.from_dataset(embedder, gallery, batch_size=16)
    with torch.no_grad():
        emb = embedder.eval()(gallery.float_images())
    embedder.train()
    knn = KNNClassifier(k=3).fit(emb.numpy(), gallery.labels.numpy())
    return {
        "classifier": ClassifierScorer(classifier, batch_size=16),
        "prototype": proto,
        "knn": KNNScorer(embedder, knn, batch_size=16),
    }


def _pairs():
    for kind in ("classifier", "prototype", "knn"):
        for m in METHODS:
            if kind != "knn" or m in BLACK_BOX_METHODS:
                yield kind, m


# -- scorers -------------------------------------------------------------------------------------

def test_scorers_give_class_scores(scorers, data):
    x = data.float_images()[:5]
    for kind, s in scorers.items():
        out = s(x)
        assert out.shape == (5, 7) and out.dtype == torch.float32 and torch.isfinite(out).all(), kind
        assert s.num_classes == 7 and s.class_names[3] == "Happy"
    assert torch.allclose(scorers["knn"](x).sum(1), torch.ones(5), atol=1e-5)
    cos = scorers["prototype"](x)
    assert float(cos.abs().max()) <= 1.0 + 1e-5
    # uint8 input is the same images as float / 255
    assert torch.allclose(scorers["classifier"](data.images[:5]), scorers["classifier"](x), atol=1e-6)


def test_prototype_scorer_is_cosine_to_class_centroids(embedder):
    emb = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    lab = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    s = PrototypeScorer(embedder, emb, lab, num_classes=4)
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        e = torch.nn.functional.normalize(embedder.eval()(x), dim=1)
    embedder.train()
    for c in range(3):
        cent = torch.nn.functional.normalize(emb[lab == c].mean(0), dim=0)
        assert torch.allclose(s(x)[:, c], e @ cent, atol=1e-5)
    assert torch.all(s(x)[:, 3] == -1.0)  # class 3 has no gallery image


def test_classifier_scorer_on_an_embedding_model_uses_its_classifier(embedder):
    torch.manual_seed(0)
    joint = create_embedding_model("baseline", embedding_dim=8, num_classes=7, projection="linear", width=4)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        expected = joint.eval().forward_logits(x)
    assert torch.allclose(ClassifierScorer(joint)(x), expected, atol=1e-6)
    with pytest.raises(ModelError, match="PrototypeScorer"):
        ClassifierScorer(embedder)


# -- every method, every family ------------------------------------------------------------------

@pytest.mark.parametrize("kind,method", list(_pairs()))
def test_every_method_on_each_family(scorers, data, kind, method):
    x = data.float_images()[:3]
    maps = explain(scorers[kind], x, method, **FAST.get(method, {}))
    assert maps.shape == (3, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0


@pytest.mark.parametrize("kind,method", [p for p in _pairs() if p[0] != "knn" or p[1] == "occlusion"])
def test_batched_and_one_by_one_agree(scorers, data, kind, method):
    x = data.float_images()[:3]
    t = data.labels[:3]
    opts = FAST.get(method, {})
    together = explain(scorers[kind], x, method, t, batch_size=64, **opts)
    alone = np.concatenate([explain(scorers[kind], x[i:i + 1], method, t[i:i + 1], batch_size=5, **opts) for i in range(3)])
    # Conv kernels round differently at other batch sizes: allow float32 noise on the scores
    # (occlusion maps are differences of O(1) scores) and on the maps themselves.
    np.testing.assert_allclose(alone, together, rtol=1e-4, atol=max(1e-5 * np.abs(together).max(), 1e-6))


def test_inputs_grads_and_modes_unchanged(scorers, data, classifier, embedder):
    x = data.float_images()[:1].requires_grad_(True)
    x.grad = torch.full_like(x, 0.25)
    x_before = x.detach().clone()
    for model in (classifier, embedder):
        model.train()
        model.features.eval() if hasattr(model, "features") else model.backbone.features.eval()  # a mixed state
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)
    modes = {id(m): m.training for model in (classifier, embedder) for m in model.modules()}
    params = {id(p): p.detach().clone() for model in (classifier, embedder) for p in model.parameters()}
    for kind, method in _pairs():
        explain(scorers[kind], x, method, **FAST.get(method, {}))
    assert torch.equal(x.detach(), x_before) and torch.equal(x.grad, torch.full_like(x, 0.25))
    for model in (classifier, embedder):
        for m in model.modules():
            assert m.training == modes[id(m)]
        for p in model.parameters():
            assert torch.equal(p.detach(), params[id(p)])
            assert torch.equal(p.grad, torch.full_like(p, 0.5))
            p.grad = None


# -- known answers -------------------------------------------------------------------------------

def _occlusion_reference(model, x, target, patch, stride):
    """Loop-per-patch occlusion (the obvious algorithm) to check the vectorised one against."""
    with torch.no_grad():
        ref = model(x)[0, target]
        total = torch.zeros(48, 48)
        count = torch.zeros(48, 48)
        for y in range(0, 48 - patch + 1, stride):
            for xx in range(0, 48 - patch + 1, stride):
                occ = x.clone()
                occ[..., y:y + patch, xx:xx + patch] = 0
                total[y:y + patch, xx:xx + patch] += ref - model(occ)[0, target]
                count[y:y + patch, xx:xx + patch] += 1
    return (total / count).numpy()


def test_occlusion_peaks_on_the_evidence_region():
    model = RegionModel()
    scorer = ClassifierScorer(model, class_names=("a", "b"))
    x = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    for target in (0, 1):
        m = occlusion_saliency(scorer, x, target, patch_size=8, stride=4)[0]
        np.testing.assert_allclose(m, _occlusion_reference(model, x, target, 8, 4), rtol=1e-5, atol=1e-5)
        region = model.masks[target].bool().numpy()
        y, xx = np.unravel_index(m.argmax(), m.shape)
        assert region[y, xx]
        # patches that never touch the region change nothing
        far = ~np.asarray(torch.nn.functional.max_pool2d(model.masks[target][None, None], 17, 1, 8)[0, 0].bool())
        assert np.abs(m[far]).max() < 1e-5
    # a patch that misses the border with cover_edges=False leaves it at 0; covered by default
    edge = occlusion_saliency(scorer, x, 0, patch_size=10, stride=4, cover_edges=False, baseline=0.5)
    assert edge.shape == (1, 48, 48)


def test_saliency_of_a_linear_model_is_its_weights():
    model = RegionModel()
    with torch.no_grad():
        model.w.copy_(torch.tensor([2.0, -3.0]))
    s = ClassifierScorer(model)
    x = torch.rand(2, 1, 48, 48)
    for c, w in ((0, 2.0), (1, 3.0)):
        sal = gradient_saliency(s, x, c)
        np.testing.assert_allclose(sal, np.broadcast_to(w * model.masks[c].numpy(), sal.shape), atol=1e-6)
    signed = gradient_saliency(s, x, 1, absolute=False)
    assert signed.min() == pytest.approx(-3.0)
    # SmoothGrad of a linear model equals its gradient (noise does not change it) ...
    np.testing.assert_allclose(smoothgrad(s, x, 0, samples=3), gradient_saliency(s, x, 0), atol=1e-6)


def test_smoothgrad_is_seeded(scorers, data):
    x = data.float_images()[:2]
    a = smoothgrad(scorers["classifier"], x, 0, samples=3, seed=5)
    b = smoothgrad(scorers["classifier"], x, 0, samples=3, seed=5)
    c = smoothgrad(scorers["classifier"], x, 0, samples=3, seed=6)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_gradcam_layers(scorers, data, classifier):
    x = data.float_images()[:2]
    default = gradcam(scorers["classifier"], x)
    assert np.array_equal(default, gradcam(scorers["classifier"], x, layer="features"))
    early = gradcam(scorers["classifier"], x, layer="features.0.0")
    assert early.shape == (2, 48, 48) and early.min() >= 0 and not np.allclose(early, default)
    assert scorers["prototype"].gradcam_layer == "backbone.features"
    with pytest.raises(ModelError, match=r"valid conv-like layers: .*features\.0\.0"):
        gradcam(scorers["classifier"], x, layer="layer4")
    with pytest.raises(ModelError, match="not a conv-like layer"):
        gradcam(scorers["classifier"], x, layer="fc")


def test_lime_result_and_known_answer():
    model = RegionModel()
    scorer = ClassifierScorer(model, class_names=("a", "b"))
    x = torch.full((1, 1, 48, 48), 0.8)
    res = lime_explanation(scorer, x, 0, num_samples=300, segmentation="grid", cell_size=8, top_regions=1)
    assert res.weights.shape == res.top_mask.shape == res.segments.shape == (1, 48, 48)
    assert res.segments.max() == 35  # 6x6 grid of 8-pixel cells
    region = model.masks[0].bool().numpy()
    assert np.array_equal(res.top_mask[0], region)  # the one region that matters
    for sid in range(36):  # one weight per region
        assert np.ptp(res.weights[0][res.segments[0] == sid]) == 0
    assert res.score[0] > 0.9  # a linear model is explained perfectly by a linear surrogate


def test_lime_vectorised_sampling_matches_lime(scorers, data):
    """Our data_labels override draws the same samples and builds the same images as lime's."""
    from lime import lime_image

    x = data.float_images()[:1]
    gray = x[0, 0].numpy().astype(np.float64)
    seg = segment_image(gray)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    fudged = np.zeros_like(rgb)
    seen = {}

    def fn(tag):
        def classifier_fn(imgs):
            seen.setdefault(tag, []).append(np.array(imgs[..., 0], dtype=np.float32))
            return scorers["classifier"](torch.from_numpy(np.array(imgs[..., 0], dtype=np.float32))[:, None]).numpy()
        return classifier_fn

    ours = _explainer_class()(random_state=3).data_labels(rgb, fudged, seg, fn("ours"), 40, batch_size=16)
    theirs = lime_image.LimeImageExplainer(random_state=3).data_labels(rgb, fudged, seg, fn("lime"), 40, batch_size=16)
    assert np.array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(np.concatenate(seen["ours"]), np.concatenate(seen["lime"]), atol=1e-7)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)


def test_slic_gives_a_useful_number_of_regions(data):
    counts = [int(segment_image(data.float_images()[i, 0].numpy()).max()) + 1 for i in range(7)]
    assert all(20 <= c <= 60 for c in counts), counts


# -- dispatcher and errors -----------------------------------------------------------------------

def test_targets_by_name_and_normalisation(scorers, data):
    x = data.float_images()[:2]
    s = scorers["classifier"]
    assert np.array_equal(explain(s, x, "saliency", "Happy"), explain(s, x, "saliency", 3))
    assert np.array_equal(explain(s, x, "saliency", [3, 3]), explain(s, x, "saliency", np.array([3, 3])))
    pred = s.predict(x)
    assert np.array_equal(explain(s, x, "saliency"), explain(s, x, "saliency", pred))
    norm = explain(s, x, "occlusion", normalize=True)
    assert np.allclose(np.abs(norm).reshape(2, -1).max(1), 1.0)


def test_errors_list_valid_values(scorers, data):
    s = scorers["classifier"]
    x = data.float_images()[:2]
    with pytest.raises(ConfigError, match="valid: saliency, smoothgrad, occlusion, gradcam, lime"):
        explain(s, x, "integrated-gradients")
    with pytest.raises(ConfigError, match="valid: .*patch_size"):
        explain(s, x, "occlusion", patch=3)
    with pytest.raises(ConfigError, match=r"valid: 0\.\.6 \(Angry, Disgust"):
        explain(s, x, "saliency", 7)
    with pytest.raises(ConfigError, match=r"valid: 0\.\.6"):
        explain(s, x, "occlusion", [0, -1])
    with pytest.raises(ConfigError, match="one per image"):
        explain(s, x, "saliency", [0, 1, 2])
    with pytest.raises(ConfigError, match="unknown class name"):
        explain(s, x, "saliency", "Contempt")
    with pytest.raises(DataError, match=r"\(N, 1, 48, 48\).*images\[:, None\]"):
        explain(s, x[:, 0], "saliency")
    with pytest.raises(DataError, match=r"\(N, 1, 48, 48\)"):
        explain(s, torch.rand(2, 3, 48, 48), "occlusion")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        explain(s, x * 255, "gradcam")
    with pytest.raises(ConfigError, match="valid: 1..48"):
        explain(s, x, "occlusion", patch_size=64)
    with pytest.raises(ConfigError, match="valid: slic, grid, quickshift"):
        explain(s, x, "lime", segmentation="watershed")
    assert "num_samples" in method_options("lime") and method_options("lime")["num_samples"] == 1000


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "gradcam"])
def test_knn_scorer_rejects_gradient_methods(scorers, data, method):
    with pytest.raises(ModelError, match="PrototypeScorer.*occlusion, lime"):
        explain(scorers["knn"], data.float_images()[:1], method)


def test_one_per_class_prefers_correct_predictions():
    labels = [2, 0, 2, 0, 5]
    assert one_per_class(labels).tolist() == [1, 0, 4]
    assert one_per_class(labels, predictions=[0, 3, 2, 0, 1]).tolist() == [3, 2, 4]
    assert one_per_class(torch.tensor(labels), num_classes=2).tolist() == [1]
    with pytest.raises(ConfigError, match="predictions must have 5"):
        one_per_class(labels, predictions=[0, 1])


def test_pick_per_class_first_or_seeded_draw():
    from fermetric.analysis import pick_per_class

    labels = np.array([1, 0, 0, 2, 0, 1, 0])
    assert pick_per_class(labels, 2).tolist() == [1, 2, 0, 5, 3]  # the first two of each class
    assert pick_per_class(labels, 2, predictions=[1, 0, 1, 2, 0, 0, 0]).tolist() == [1, 4, 0, 3]
    drawn = pick_per_class(labels, 2, seed=3)
    assert drawn.tolist() == pick_per_class(labels, 2, seed=3).tolist()  # seeded: the same draw
    assert [int(labels[i]) for i in drawn] == [0, 0, 1, 1, 2]  # class order, at most 2 each
    assert {int(i) for i in drawn[:2]} <= {1, 2, 4, 6} and drawn[0] < drawn[1]  # sorted within the class
    assert pick_per_class(labels, 2, num_classes=5).tolist() == [1, 2, 0, 5, 3]  # absent classes skipped
    with pytest.raises(ConfigError, match="per_class"):
        pick_per_class(labels, 0)
