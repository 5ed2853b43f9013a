"""`fermetric data audit` (issue 24): exact and near duplicates within and across splits, conflicting
labels, blank images; `evaluate --exclude-duplicates`. Checked on planted duplicates of SynthFER faces."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_cli
from fermetric.data.audit import audit_splits, blank_images, hamming_pairs, near_duplicate_mask, perceptual_hashes
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.synthetic import generate_synthfer

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


def _planted() -> DataSplits:
    """train: 40 SynthFER faces; test: 6 faces — an exact copy of train[0] with another label, train[1]
    brightened by 6 grey levels and train[2] with +-3 grey levels of noise (near duplicates: what
    re-encoding does), two unseen faces, and a blank image."""
    faces = generate_synthfer(46, seed=3).images  # (46, 1, 48, 48) uint8
    train = faces[:40].clone()
    bright = (train[1].int() + 6).clamp(0, 255).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    noisy = (train[2].int() + torch.randint(-3, 4, train[2].shape, generator=g)).clamp(0, 255).to(torch.uint8)
    test = torch.stack([train[0], bright, noisy, faces[40], faces[41], torch.zeros_like(train[0])])
    labels_train = torch.arange(40) % 7
    labels_test = torch.tensor([(int(labels_train[0]) + 1) % 7, int(labels_train[1]), int(labels_train[2]), 0, 1, 2])
    return DataSplits(name="planted", splits={"train": FERDataset(train, labels_train, CLASSES),
                                               "test": FERDataset(test, labels_test, CLASSES)})


def test_planted_duplicates_are_found_and_nothing_else():
    splits = _planted()
    rep = audit_splits(splits, radius=4)
    across = next(p for p in rep["pairs"] if (p["a"], p["b"]) == ("train", "test"))
    found = {(d["i"], d["j"]) for d in rep["duplicates"] if d["a"] == "train" and d["b"] == "test"}
    assert {(0, 0), (1, 1), (2, 2)} <= found, found
    assert not {j for _, j in found} & {3, 4, 5}, "unseen faces or the blank one reported as duplicates"
    assert across["n_exact"] == 1 and across["n_conflicting"] == 1 and across["b_with_duplicate"] == 3
    assert rep["splits"]["test"]["blank"] == [5] and blank_images(splits["train"]).size == 0
    mask = near_duplicate_mask(splits["test"], splits["train"])
    assert mask[:3].all() and not mask[3:5].any()
    # a blank face beside a blank training image is a blank image, not a duplicate: evaluate
    # --exclude-duplicates leaves out what the audit counts (FER2013: 418, not 419)
    blank_train = FERDataset(torch.cat([splits["train"].images, torch.zeros_like(splits["train"].images[:1])]),
                             torch.cat([splits["train"].labels, torch.tensor([2])]), CLASSES)
    mask = near_duplicate_mask(splits["test"], blank_train)
    assert mask.tolist() == [True, True, True, False, False, False]
    rep = audit_splits(DataSplits(name="b", splits={"train": blank_train, "test": splits["test"]}), radius=4)
    assert next(p for p in rep["pairs"] if (p["a"], p["b"]) == ("train", "test"))["b_with_duplicate"] == int(mask.sum())


def test_hash_distances_separate_copies_from_other_faces():
    splits = _planted()
    h_train, h_test = perceptual_hashes(splits["train"]), perceptual_hashes(splits["test"])
    near = hamming_pairs(h_test[:3], h_train, radius=63)
    nearest = {int(q): int(near[near[:, 0] == q][:, 2].min()) for q in range(3)}
    assert nearest[0] == 0 and max(nearest.values()) <= 4, nearest
    far = hamming_pairs(h_test[3:5], h_train, radius=63)
    assert far[:, 2].min() > 4, "an unseen face within the near-duplicate radius"


def test_cli_audit_and_evaluate_without_duplicates(tmp_path: Path, classifier_run: Path):
    out = tmp_path / "audit"
    res = run_cli(["data", "audit", "--out", str(out)])  # SynthFER, the default data
    rep = json.loads((out / "audit.json").read_text())
    assert {p["a"] + "-" + p["b"] for p in rep["pairs"]} >= {"train-train", "train-val", "val-val"}
    assert (out / "audit.md").is_file() and "split pair" in (out / "audit.md").read_text()
    assert "train - val" in res.output
    res = run_cli(["evaluate", str(classifier_run), "--exclude-duplicates", "--out", str(tmp_path / "ev")])
    m = json.loads((tmp_path / "ev" / "val_nodup.json").read_text())
    ex = m["excluded_duplicates"]
    assert ex["n_excluded"] + ex["n_kept"] == 70 and m["n"] == ex["n_kept"]
    assert "left out" in res.output
