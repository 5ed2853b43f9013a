import numpy as np
import pytest

from fermetric.evaluation.ensemble import soft_vote, vote_diversity
from fermetric.evaluation.metrics import classification_metrics, metrics_to_markdown
from fermetric.errors import FermetricError


def test_metrics_by_hand():
    y = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 0]
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class a: precision 1/2, recall 1/2; b: precision 2/3, recall 1; c: precision 1, recall 1/2
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    f1 = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert np.allclose(np.sum(m["confusion_normalized"], axis=1), 1.0)
    assert "| b |" in metrics_to_markdown(m)


def test_metrics_absent_class_row_is_zero():
    m = classification_metrics([0, 0], [0, 1], ["a", "b"])
    assert m["confusion_normalized"][1] == [0.0, 0.0]
    assert m["per_class"]["b"]["support"] == 0


def test_metrics_length_mismatch():
    with pytest.raises(ValueError, match="2 entries"):
        classification_metrics([0, 1], [0], ["a", "b"])


def test_soft_vote_weighted():
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.4, 0.6]])
    assert np.allclose(soft_vote([a, b]), (a + b) / 2)
    assert np.allclose(soft_vote([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    with pytest.raises(FermetricError, match="disagree"):
        soft_vote([a, b[:1]])
    with pytest.raises(FermetricError, match="weights"):
        soft_vote([a, b], [0, 0])


def test_tta_views_shapes_and_identity():
    import torch

    from fermetric.scoring import tta_views

    x = torch.rand(3, 1, 48, 48)
    views = tta_views(x)
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    # a shifted crop moves content: pixel (10, 10) of the (2, 2) crop is pixel (12, 12) of x
    assert torch.equal(views[8][..., 10, 10], x[..., 12, 12])


def test_searched_weights_keep_a_sharp_weak_member_from_outvoting():
    """A kNN-like member with one-hot votes and lower accuracy drags an equal-weight soft vote
    below the classifier; weights searched on other images drop or shrink it."""
    from fermetric.evaluation.ensemble import _simplex_grid, cross_fitted_vote, searched_weights

    rng = np.random.default_rng(0)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    clf = np.full((n, c), 0.1)
    right = rng.random(n) < 0.8
    clf[np.arange(n), np.where(right, y, (y + 1) % c)] = 0.7  # 80 % accurate, soft
    knn = np.eye(c)[np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))]  # ~70 %, one-hot
    assert (soft_vote([clf, knn]).argmax(1) == y).mean() < (clf.argmax(1) == y).mean()
    w = searched_weights([clf, knn], y)
    assert w[0] > w[1] and sum(w) == pytest.approx(1.0)
    ens, used = cross_fitted_vote([clf, knn], y, fit="search")
    assert (ens.argmax(1) == y).mean() >= (clf.argmax(1) == y).mean() - 0.01 and len(used) == 2
    assert _simplex_grid(3, 10).shape == (66, 3)  # C(12, 2) points of the 0.1 grid on the 3-simplex


def test_paired_comparison_by_hand():
    """B is right on 30 images A misses, A on 5 that B misses, both on 600 of 1,000: B is 2.5
    points better, the exact McNemar p is the binomial tail of 30 of 35, and the paired
    bootstrap interval agrees with resampling image indices."""
    from scipy.stats import binom

    from fermetric.evaluation.significance import comparison_text, paired_comparison

    y = np.zeros(1000, dtype=int)
    a, b = np.ones(1000, dtype=int), np.ones(1000, dtype=int)
    a[:600] = b[:600] = 0            # both right
    b[600:630] = 0                   # only B right
    a[630:635] = 0                   # only A right
    cmp = paired_comparison(y, a, b)
    assert (cmp["n"], cmp["only_a_right"], cmp["only_b_right"]) == (1000, 5, 30)
    assert cmp["accuracy_a"] == pytest.approx(0.605) and cmp["accuracy_b"] == pytest.approx(0.63)
    assert cmp["difference"] == pytest.approx(0.025)
    assert cmp["mcnemar_p"] == pytest.approx(2 * binom.cdf(5, 35, 0.5))
    low, high = cmp["ci95"]
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 1000, size=(4000, 1000))
    by_index = ((b[idx] == 0).mean(1) - (a[idx] == 0).mean(1))
    assert low == pytest.approx(np.percentile(by_index, 2.5), abs=0.002)
    assert high == pytest.approx(np.percentile(by_index, 97.5), abs=0.002)
    assert 0 < low < 0.025 < high
    assert comparison_text(cmp).startswith("+2.50 points [+")


def test_paired_comparison_of_equal_models_and_bad_input():
    from fermetric.evaluation.significance import paired_comparison

    y = np.array([0, 1, 2, 1])
    same = paired_comparison(y, [0, 1, 0, 0], [0, 1, 0, 0])
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    with pytest.raises(FermetricError, match="same images"):
        paired_comparison(y, [0, 1, 2], [0, 1, 2, 1])


def test_vote_diversity_by_hand():
    y = np.array([0, 1, 2, 0, 1])
    a = np.array([0, 1, 2, 1, 2])  # right on 0, 1, 2
    b = np.array([0, 1, 0, 0, 2])  # right on 0, 1, 3
    c = np.array([0, 2, 2, 1, 2])  # right on 0, 2
    d = vote_diversity([a, b, c], y)
    # agreement: a-b on 0, 1, 4 (3/5); a-c on 0, 2, 3, 4 (4/5); b-c on 0, 4 (2/5)
    assert d["agreement"] == [[1.0, 0.6, 0.8], [0.6, 1.0, 0.4], [0.8, 0.4, 1.0]]
    assert d["mean_agreement"] == pytest.approx(0.6)
    assert d["oracle_accuracy"] == pytest.approx(0.8)  # face 4: nobody right
    assert d["all_right"] == pytest.approx(0.2)  # face 0 only
    assert vote_diversity([a], y)["mean_agreement"] == 1.0  # no pair: nothing to disagree
    with pytest.raises(FermetricError, match="one \\(N,\\) prediction per member for 5 labels"):
        vote_diversity([a, b[:4]], y)
