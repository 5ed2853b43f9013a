"""Calibration: ECE by hand on tiny cases, NLL and Brier by hand, temperature scaling keeps the
arg-max and lowers the NLL on the split it is fitted on, evaluate reports all three."""
from __future__ import annotations

import numpy as np
import pytest

from fermetric.errors import FermetricError
from fermetric.evaluation.calibration import (
    apply_temperature, brier_score, calibration_metrics, expected_calibration_error, fit_temperature,
    negative_log_likelihood, reliability_bins,
)


def test_ece_of_one_bin_by_hand():
    # all four confidences 0.8 (one bin), three of four right: |0.75 - 0.8| = 0.05
    p = np.array([[0.8, 0.2]] * 4)
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(p, y) == pytest.approx(0.05)
    rows = [r for r in reliability_bins(p, y) if r["count"]]
    assert len(rows) == 1 and rows[0]["count"] == 4 and rows[0]["accuracy"] == 0.75


def test_ece_of_two_bins_by_hand():
    # 2 bins: (0.5, 1] holds the two 0.9s (both right: gap 0.1), (0, 0.5] the two 0.4s (one right: gap 0.1)
    p = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, y, bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)
    assert [r["count"] for r in reliability_bins(p, y, bins=2)] == [2, 2]
    # with 15 bins 0.9 and 0.4 fall in different bins too: the same gaps
    assert expected_calibration_error(p, y) == pytest.approx(0.1)
    assert calibration_metrics(p, y)["binning"] == "15 equal-width confidence bins"


def test_nll_and_brier_by_hand():
    p = np.array([[0.5, 0.5], [0.25, 0.75]])
    y = np.array([0, 1])
    assert negative_log_likelihood(p, y) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)
    assert brier_score(p, y) == pytest.approx((0.25 + 0.25 + 0.0625 + 0.0625) / 2)
    # a zero probability of the true class (a kNN vote) is floored, not infinite
    assert np.isfinite(negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])))


def test_temperature_scaling_keeps_the_argmax_and_lowers_the_nll():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 5)) * 4.0  # over-confident: noise scaled up
    y = np.where(rng.random(400) < 0.6, logits.argmax(1), rng.integers(0, 5, 400))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = fit_temperature(p, y)
    assert t > 1.0  # over-confident probabilities are softened
    q = apply_temperature(p, t)
    assert (q.argmax(1) == p.argmax(1)).all()
    assert negative_log_likelihood(q, y) < negative_log_likelihood(p, y)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-5)  # up to the floor of tiny probabilities
    with pytest.raises(FermetricError, match="positive"):
        apply_temperature(p, 0.0)


def test_bad_inputs_are_refused():
    with pytest.raises(FermetricError, match="at least one image"):
        expected_calibration_error(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(FermetricError, match=r"labels must lie in \[0, 2\)"):
        brier_score(np.array([[0.5, 0.5]]), np.array([2]))


def test_evaluate_reports_calibration(classifier_run, tmp_path):
    import fermetric

    m, paths = fermetric.evaluate_run(classifier_run, split="val", out=tmp_path, device="cpu")
    cal = m["calibration"]
    assert 0 <= cal["ece"] <= 1 and cal["nll"] > 0 and 0 <= cal["brier"] <= 2
    assert sum(b["count"] for b in cal["bins"]) == m["n"]
    assert "ECE" in (tmp_path / "val.md").read_text()
    assert (tmp_path / "val_reliability.png").is_file() and tmp_path / "val_reliability.png" in paths


def test_calibrate_keeps_a_temperature_that_predict_uses(classifier_run, tmp_path):
    import json
    import shutil

    import fermetric
    from fermetric.evaluation.calibration import apply_temperature
    from fermetric.inference import FacePredictor
    from fermetric.runs import load_run

    run_dir = tmp_path / "clf"
    shutil.copytree(classifier_run, run_dir)
    before = FacePredictor(load_run(run_dir, device="cpu"), tta="shift")
    assert before.temperature is None
    rec = fermetric.calibrate(run_dir, split="val", tta="shift", device="cpu")
    saved = json.loads((run_dir / "temperature.json").read_text())
    assert saved["temperature"] == pytest.approx(rec["temperature"]) and saved["tta"] == "shift"
    assert rec["after_cross_fitted"]["nll"] > 0 and len(rec["cross_fit_temperatures"]) == 2
    run = load_run(run_dir, device="cpu")
    crops = run.load_data()["val"].images[:12, 0].numpy()
    after = FacePredictor(run, tta="shift")
    assert after.temperature == pytest.approx(rec["temperature"])
    np.testing.assert_allclose(after.predict_proba(crops), apply_temperature(before.predict_proba(crops), rec["temperature"]),
                               atol=1e-6)
    assert FacePredictor(run, tta=None).temperature is None  # fitted for the TTA softmax only
    # another checkpoint (a retrained run) does not use the old temperature
    saved["checkpoint_sha256"] = "0" * 64
    (run_dir / "temperature.json").write_text(json.dumps(saved))
    assert FacePredictor(load_run(run_dir, device="cpu"), tta="shift").temperature is None
    with pytest.raises(FermetricError, match="calibrate on val"):
        fermetric.calibrate(run_dir, split="train", device="cpu")


def test_vote_smoothing_by_hand_and_fitted():
    from fermetric.evaluation.calibration import fit_vote_smoothing, negative_log_likelihood, smooth_votes

    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    q = smooth_votes(p, 0.1)  # (p + 0.1) / 1.3
    np.testing.assert_allclose(q, [[1.1 / 1.3, 0.1 / 1.3, 0.1 / 1.3], [0.6 / 1.3, 0.6 / 1.3, 0.1 / 1.3]])
    np.testing.assert_allclose(q.sum(1), 1.0)
    rng = np.random.default_rng(0)
    votes = rng.multinomial(10, [0.6, 0.3, 0.1], size=300) / 10.0  # a 10-NN vote's fractions
    y = rng.choice(3, size=300, p=[0.5, 0.3, 0.2])  # labels that often got no vote
    a = fit_vote_smoothing(votes, y)
    assert a > 0 and (smooth_votes(votes, a).argmax(1) == votes.argmax(1)).all()
    assert negative_log_likelihood(smooth_votes(votes, a), y) < negative_log_likelihood(votes, y)
    with pytest.raises(FermetricError):
        smooth_votes(votes, -1.0)


def test_calibrate_an_embedding_run_smooths_its_knn_vote_and_predict_uses_it(triplet_run, tmp_path):
    import json
    import shutil

    import fermetric
    from fermetric.evaluation.calibration import smooth_votes
    from fermetric.inference import FacePredictor
    from fermetric.runs import load_run

    run_dir = tmp_path / "tri"
    shutil.copytree(triplet_run, run_dir)
    before = FacePredictor(load_run(run_dir, device="cpu"), tta=None)
    assert before.calibration is None
    rec = fermetric.calibrate(run_dir, split="val", device="cpu")
    assert rec["method"] == "vote_smoothing" and rec["alpha"] >= 0 and len(rec["cross_fit_alphas"]) == 2
    assert json.loads((run_dir / "temperature.json").read_text())["alpha"] == pytest.approx(rec["alpha"])
    run = load_run(run_dir, device="cpu")
    crops = run.load_data()["val"].images[:12, 0].numpy()
    after = FacePredictor(run, tta=None)
    assert after.calibration == {"method": "vote_smoothing", "alpha": pytest.approx(rec["alpha"])}
    assert after.temperature is None
    np.testing.assert_allclose(after.predict_proba(crops), smooth_votes(before.predict_proba(crops), rec["alpha"]), atol=1e-9)
    with pytest.raises(FermetricError, match="TTA is for classifier runs"):
        fermetric.calibrate(run_dir, split="val", tta="shift", device="cpu")
