"""Faithfulness metrics (fermetric.analysis.faithfulness): deletion / insertion, evidence-mask
metrics, the model-randomisation check, the methods x models table, and on SynthFER a briefly
trained CNN against its randomised copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fermetric.analysis import deletion_curve, evaluate_explanations, evidence_table_markdown, explain, insertion_curve, mask_mass_ratio, pointing_game, randomization_check, randomized_copy, table_to_markdown
from fermetric.scoring import ClassifierScorer, KNNScorer, PrototypeScorer
from fermetric.data.synthetic import generate_synthfer
from fermetric.errors import ConfigError, DataError
from fermetric.models import create_embedding_model, create_model
from fermetric.retrieval.knn import KNNClassifier




class WeightedRegion(nn.Module):
    """score_0 = sum of pixels weighted by a fixed positive ramp inside a region, score_1 = 0.
    The best deletion order is known: region pixels by decreasing weight."""

    num_classes = 2

    def __init__(self):
        super().__init__()
        w = torch.zeros(48, 48)
        w[10:26, 20:36] = torch.linspace(0.1, 1.0, 256).view(16, 16)
        self.register_buffer("weight", w)

    def forward(self, x):
        s = (x[:, 0] * self.weight).sum(dim=(1, 2))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_deletion_and_insertion_prefer_the_right_attribution():
    model = WeightedRegion()
    scorer = ClassifierScorer(model, class_names=("a", "b"))
    x = torch.rand(3, 1, 48, 48, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    good = np.broadcast_to(model.weight.numpy(), (3, 48, 48))
    rand = np.random.default_rng(0).random((3, 48, 48))
    d_good = deletion_curve(scorer, x, good, 0, steps=16)
    d_rand = deletion_curve(scorer, x, rand, 0, steps=16)
    assert d_good.mean_auc < 0.5 * d_rand.mean_auc
    i_good = insertion_curve(scorer, x, good, 0, steps=16, baseline="zero")
    i_rand = insertion_curve(scorer, x, rand, 0, steps=16, baseline="zero")
    assert i_good.mean_auc > 1.5 * i_rand.mean_auc
    # endpoints: intact image, then the all-zero baseline
    full = scorer(x)[:, 0].numpy()
    np.testing.assert_allclose(d_good.scores[:, 0], full, rtol=1e-5)
    np.testing.assert_allclose(d_good.scores[:, -1], 0.0, atol=1e-5)
    np.testing.assert_allclose(i_good.scores[:, -1], full, rtol=1e-5)
    assert d_good.fractions[0] == 0 and d_good.fractions[-1] == 1 and d_good.scores.shape == (3, 17)
    # batched scoring does not change the curve
    small = deletion_curve(scorer, x, good, 0, steps=16, batch_size=5)
    np.testing.assert_allclose(small.scores, d_good.scores, rtol=1e-5)


def test_perturbation_curve_options_and_errors():
    scorer = ClassifierScorer(WeightedRegion(), class_names=("a", "b"))
    x = torch.full((1, 1, 48, 48), 0.5)
    a = np.ones((1, 48, 48))
    blurred = insertion_curve(scorer, x, a, 0, steps=4)  # default insertion baseline: blur
    assert blurred.baseline == "blur" and blurred.scores[0, 0] == pytest.approx(blurred.scores[0, -1], rel=1e-3)
    assert deletion_curve(scorer, x, a, 0, steps=4, baseline=0.5).scores.std() < 1e-4  # grey on grey
    with pytest.raises(DataError, match=r"\(1, 48, 48\)"):
        deletion_curve(scorer, x, np.ones((2, 48, 48)), 0)
    with pytest.raises(ConfigError, match="'zero', 'blur'"):
        deletion_curve(scorer, x, a, 0, baseline="noise")


def test_mask_mass_ratio_by_hand():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True  # a quarter of the image
    maps = np.stack([
        np.ones((4, 4)),                                  # uniform: chance
        np.where(masks[0], 1.0, 0.0),                     # all mass inside: 1 / 0.25
        np.where(masks[0], 1.0, -1.0),                    # positive inside, negative outside
    ])
    np.testing.assert_allclose(mask_mass_ratio(maps, masks), [1.0, 4.0, 4.0])
    np.testing.assert_allclose(mask_mass_ratio(maps, masks, "absolute"), [1.0, 4.0, 1.0])
    empty = mask_mass_ratio(np.zeros((1, 4, 4)), masks[:1])
    assert np.isnan(empty[0])
    with pytest.raises(DataError, match="masks must have shape"):
        mask_mass_ratio(maps, masks[:2])


def test_pointing_game_by_hand():
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 2:4, 2:4] = True
    maps = np.zeros((3, 10, 10))
    maps[0, 3, 3] = 1  # inside
    maps[1, 5, 5] = 1  # two pixels off
    maps[2, 9, 9] = 1  # far off
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=0), [1, 0, 0])
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=2), [1, 1, 0])
    assert np.isnan(pointing_game(maps[:1], np.zeros((1, 10, 10), bool))[0])


class ScaledRegion(nn.Module):
    """score = w * sum(region): its |saliency| ranking does not depend on w, so a weight-blind
    map is expected and the randomisation check must flag it (correlation 1)."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1, bias=False)
        w = torch.zeros(48, 48)
        w[5:20, 5:30] = torch.rand(15, 25, generator=torch.Generator().manual_seed(0))
        self.register_buffer("region", w)

    def forward(self, x):
        return self.lin((x[:, 0] * self.region).sum(dim=(1, 2))[:, None])


def test_randomized_copy_leaves_the_model_alone():
    torch.manual_seed(0)
    model = create_model("baseline", width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = randomized_copy(model, seed=1)
    top = randomized_copy(model, top_layers=1, seed=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(full.features[0][0].weight, model.features[0][0].weight)
    assert torch.equal(top.features[0][0].weight, model.features[0][0].weight)
    assert not torch.equal(top.fc.weight, model.fc.weight)
    assert torch.equal(randomized_copy(model, seed=1).fc.weight, full.fc.weight)  # seeded


def test_randomization_check_flags_a_weight_blind_map_and_passes_a_cnn():
    x = torch.rand(3, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    blind = randomization_check(ClassifierScorer(ScaledRegion()), x, "saliency", 0)
    assert blind.final == pytest.approx(1.0)
    torch.manual_seed(0)
    cnn = ClassifierScorer(create_model("baseline", width=4))
    casc = randomization_check(cnn, x, "gradcam", 0, mode="cascading", stages=3)
    assert casc.stages[-1] == "all layers" and casc.correlations.shape == (3, 3)
    assert casc.final < 0.9


@pytest.fixture(scope="module")
def three_scorers():
    torch.manual_seed(0)
    gallery = generate_synthfer(21, seed=5, labels=torch.arange(21) % 7)
    emb = create_embedding_model("baseline", embedding_dim=8, projection="linear", width=4)
    proto = PrototypeScorer.from_dataset(emb, gallery)
    with torch.no_grad():
        e = emb.eval()(gallery.float_images())
    knn = KNNClassifier(k=3).fit(e.numpy(), gallery.labels.numpy())
    return {
        "cnn": ClassifierScorer(create_model("baseline", width=4), output="softmax"),
        "proto": proto,
        "knn": KNNScorer(emb, knn),
    }


def test_evaluate_explanations_table(three_scorers):
    data = generate_synthfer(4, seed=6, labels=[0, 3, 5, 6])
    rows = evaluate_explanations(
        three_scorers, data.images, data.labels, data.masks, methods=["saliency", "occlusion", "lime"],
        steps=4, method_options={"occlusion": {"patch_size": 12, "stride": 12}, "lime": {"num_samples": 40}},
    )
    assert [(r["model"], r["method"]) for r in rows] == [
        (m, k) for m in ("cnn", "proto", "knn") for k in ("saliency", "occlusion", "lime")
    ]
    skipped = [r for r in rows if r["note"]]
    assert [(r["model"], r["method"]) for r in skipped] == [("knn", "saliency")]
    assert skipped[0]["deletion_auc"] is None
    for r in rows:
        if r["note"]:
            continue
        for key in ("deletion_auc", "insertion_auc", "mask_mass_ratio", "pointing_game", "seconds_per_image"):
            assert isinstance(r[key], float) and np.isfinite(r[key]), (r["model"], r["method"], key)
        assert r["randomization_spearman"] is None or -1 <= r["randomization_spearman"] <= 1
    md = table_to_markdown(rows)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(rows) and "deletion_auc" in lines[0] and "note" in lines[0]
    assert "skipped: needs gradients" in md
    with pytest.raises(ConfigError, match="valid: saliency"):
        evaluate_explanations(three_scorers, data.images, data.labels, methods=["shap"])
    with pytest.raises(ConfigError, match="needs labels"):
        evaluate_explanations(three_scorers, data.images, methods=["occlusion"])


class TinyCNN(nn.Module):
    num_classes = 7
    gradcam_layer = "features.8"

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        )
        self.fc = nn.Linear(2 * w, 7)

    def forward(self, x):
        return self.fc(self.features((x - 0.5) / 0.25).mean(dim=(2, 3)))


def _train_and_compare(n_train: int, epochs: int, model: nn.Module, difficulty: float):
    torch.manual_seed(0)
    train = generate_synthfer(n_train, seed=1, labels=torch.arange(n_train) % 7, difficulty=difficulty)
    test = generate_synthfer(28, seed=2, labels=torch.arange(28) % 7, difficulty=difficulty)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = train.float_images(), train.labels
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=g)
        for i in range(0, n_train, 32):
            idx = perm[i:i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    scorer = ClassifierScorer(model)
    random = scorer.with_model(randomized_copy(model, seed=0))
    xt = test.float_images()
    out = {}
    for method in ("saliency", "gradcam"):
        trained_maps = explain(scorer, xt, method, test.labels)
        random_maps = explain(random, xt, method, test.labels)
        out[method] = (
            np.nanmean(mask_mass_ratio(trained_maps, test.masks)),
            np.nanmean(mask_mass_ratio(random_maps, test.masks)),
            np.nanmean(pointing_game(trained_maps, test.masks)),
            np.nanmean(pointing_game(random_maps, test.masks)),
        )
    return out


def test_trained_cnn_puts_saliency_on_synthfer_evidence():
    """A small CNN trained for a few seconds on easy SynthFER looks at the brows, eyes and mouth;
    its randomised copy does not (measured: mass ratio ~2.0 vs ~1.25, pointing 0.9 vs 0.2)."""
    res = _train_and_compare(700, 4, TinyCNN(16), difficulty=0.0)
    mass, mass_rnd, point, point_rnd = res["saliency"]
    assert mass > 1.5 and mass > 1.3 * mass_rnd, res
    assert point > point_rnd + 0.3, res
    assert res["gradcam"][0] > res["gradcam"][1], res


@pytest.mark.slow
def test_trained_baseline_puts_saliency_on_synthfer_evidence_default_difficulty():
    res = _train_and_compare(2100, 6, create_model("baseline", width=8, dropout=0.0, block_dropout=0.0), difficulty=1.0)
    mass, mass_rnd, point, point_rnd = res["saliency"]
    assert mass > 1.3 * mass_rnd and point > point_rnd, res


def test_evidence_table_has_a_cell_per_method_and_model():
    rows = [
        {"model": "cnn", "method": "saliency", "mask_mass_ratio": 2.345, "pointing_game": 0.5},
        {"model": "cnn", "method": "lime", "mask_mass_ratio": 1.0, "pointing_game": None},
        {"model": "knn", "method": "saliency", "mask_mass_ratio": None, "pointing_game": None,
         "note": "skipped: needs gradients (black-box scorer)"},
        {"model": "knn", "method": "lime", "mask_mass_ratio": 0.25, "pointing_game": 1.0},
    ]
    lines = evidence_table_markdown(rows).strip().splitlines()
    assert lines == ["| method | cnn | knn |", "|---|---:|---:|",
                     "| saliency | 2.35 / 0.50 | - |", "| lime | 1.00 / - | 0.25 / 1.00 |"]
    # data without evidence masks: no table at all rather than a table of dashes
    assert evidence_table_markdown([{"model": "cnn", "method": "saliency", "mask_mass_ratio": None,
                                     "pointing_game": None}]) == ""
