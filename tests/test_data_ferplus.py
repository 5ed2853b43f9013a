"""FER+ relabelling: vote parsing, the plurality rule and its ties, alignment checks, the real file."""
from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
import torch

from fermetric.config import DataConfig
from fermetric.data import load_data
from fermetric.data.classes import FERPLUS_CLASSES
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.data.fer2013 import load_fer2013_csv
from fermetric.data.ferplus import HEADER, apply_ferplus, ferplus_labels, load_ferplus_votes
from fermetric.errors import DataError

USAGE_OF = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE_DIR", str(tmp_path / "cache"))


def write_fer_csv(path, usages, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for i, u in enumerate(usages):
        lines.append(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},{u}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ferplus(path, usages, votes):
    lines = [",".join(HEADER)]
    for i, (u, v) in enumerate(zip(usages, votes)):
        lines.append(f"{u},fer{i:07d}.png," + ",".join(map(str, v)))
    path.write_text("\n".join(lines) + "\n")
    return path


#            neu hap sur sad ang dis fea con unk NF
VOTES = [
    [6, 2, 0, 0, 0, 0, 0, 0, 2, 0],  # 0 Neutral
    [0, 3, 3, 0, 0, 0, 0, 0, 0, 4],  # NF wins: dropped
    [0, 0, 4, 4, 0, 0, 0, 0, 2, 0],  # tie Surprise/Sadness -> Surprise (first)
    [0, 0, 0, 0, 0, 0, 0, 5, 5, 0],  # tie Contempt/unknown -> Contempt (emotions first)
    [1, 0, 0, 0, 0, 0, 0, 0, 9, 0],  # unknown wins: dropped
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes: dropped
    [0, 0, 0, 0, 3, 0, 0, 0, 0, 0],  # Anger
    [0, 0, 0, 0, 0, 2, 1, 0, 0, 0],  # Disgust
]


def test_ferplus_labels_rule_and_soft_labels():
    labels, keep, soft = ferplus_labels(np.array(VOTES))
    np.testing.assert_array_equal(keep, [True, False, True, True, False, False, True, True])
    np.testing.assert_array_equal(labels[keep], [0, 2, 7, 4, 5])
    np.testing.assert_allclose(soft[0], [0.75, 0.25, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(soft[7], [0, 0, 0, 0, 0, 2 / 3, 1 / 3, 0], rtol=1e-6)
    np.testing.assert_allclose(soft[keep].sum(1), 1.0, rtol=1e-6)
    assert soft[5].sum() == 0  # no votes: no distribution


def test_apply_ferplus_on_a_csv_with_fewer_rows(tmp_path):
    # FER+ covers 10 rows (8 Training, then 2 PublicTest); the CSV only has rows 0..8.
    usages = ["Training"] * 8 + ["PublicTest"] * 2
    votes = VOTES + [[0, 10, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 10, 0, 0, 0]]
    fp = write_ferplus(tmp_path / "fer2013new.csv", usages, votes)
    csv_path = write_fer_csv(tmp_path / "fer2013.csv", usages[:9])
    base = load_fer2013_csv(csv_path)
    s = apply_ferplus(base, fp)
    assert s.class_names == FERPLUS_CLASSES
    assert s["train"].labels.tolist() == [0, 2, 7, 4, 5]
    assert s["val"].labels.tolist() == [1]
    assert s["train"].sources == [f"fer2013.csv:{r + 2}" for r in (0, 2, 3, 6, 7)]
    assert s["train"].images.equal(base["train"].images[[0, 2, 3, 6, 7]])
    assert s["train"].soft_labels.shape == (5, 8) and s["train"].soft_labels.dtype == torch.float32
    np.testing.assert_array_equal(s.info["row_index"]["train"], [0, 2, 3, 6, 7])
    assert s.info["ferplus"]["dropped"]["train"] == {"unknown": 1, "NF": 1, "no_votes": 1}
    assert s.info["ferplus"]["dropped_total"] == 3
    # Through load_data with a DataConfig, as the CLI does it.
    s2 = load_data(csv_path, DataConfig(ferplus=str(fp)))
    assert s2["train"].labels.equal(s["train"].labels)


def test_apply_ferplus_after_skipped_rows_stays_aligned(tmp_path):
    usages = ["Training"] * 8
    fp = write_ferplus(tmp_path / "new.csv", usages, VOTES)
    csv_path = write_fer_csv(tmp_path / "f.csv", usages)
    lines = csv_path.read_text().splitlines()
    lines[1] = "9" + lines[1][1:]  # data row 0 is bad and skipped
    csv_path.write_text("\n".join(lines) + "\n")
    s = apply_ferplus(load_fer2013_csv(csv_path, skip_bad_rows=True), fp)
    assert s["train"].labels.tolist() == [2, 7, 4, 5]  # row 0 (Neutral) is gone, the rest line up


def test_usage_mismatch_and_short_file_are_errors(tmp_path):
    csv_path = write_fer_csv(tmp_path / "f.csv", ["Training", "Training", "PublicTest"])
    base = load_fer2013_csv(csv_path)
    wrong = write_ferplus(tmp_path / "wrong.csv", ["Training", "PublicTest", "PublicTest"], VOTES[:3])
    with pytest.raises(DataError, match=r"wrong.csv line 3: Usage 'PublicTest'.*f.csv:3.*not aligned"):
        apply_ferplus(base, wrong)
    short = write_ferplus(tmp_path / "short.csv", ["Training", "Training"], VOTES[:2])
    with pytest.raises(DataError, match=r"short.csv: has 2 rows but f.csv:4 is data row 2"):
        apply_ferplus(base, short)
    no_rows = DataSplits("x", {"train": FERDataset(torch.zeros(1, 1, 48, 48, dtype=torch.uint8), torch.zeros(1), ("a",))})
    with pytest.raises(DataError, match="row_index"):
        apply_ferplus(no_rows, wrong)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty file"),
        ("Usage,name,a,b\n", "line 1: header"),
        (",".join(HEADER) + "\n", "no data rows"),
        (",".join(HEADER) + "\nTraining,x.png,1,2,3\n", "line 2: expected 12 comma-separated fields; found 5"),
        (",".join(HEADER) + "\nTraining,x.png,1,0,0,0,0,0,0,0,0,0\nTraining,y.png,1,0,0,-1,0,0,0,0,0,0\n", "line 3: votes"),
        (",".join(HEADER) + "\nTraining,x.png,1,0,0,a,0,0,0,0,0,0\n", "line 2: votes"),
        (",".join(HEADER) + "\nTest,x.png,1,0,0,0,0,0,0,0,0,0\n",
         "line 2: Usage 'Test' is not one of Training, PublicTest, PrivateTest"),
    ],
)
def test_bad_ferplus_files(tmp_path, text, needle):
    path = tmp_path / "fp.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=needle) as err:
        load_ferplus_votes(path)
    assert str(path) in str(err.value)


def test_ferplus_needs_a_csv_source(tmp_path):
    (tmp_path / "happy").mkdir()
    with pytest.raises(DataError, match="FER\\+ labels need the fer2013.csv"):
        load_data(tmp_path, DataConfig(ferplus=str(tmp_path / "fp.csv")))


# ---------------------------------------------------------------------------------------------
# the real fer2013new.csv


def _reference_counts(path):
    """Per-usage FER+ label counts, computed independently with the csv module."""
    counts: dict[str, Counter] = {}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            v = [int(x) for x in row[2:]]
            best = max(range(10), key=lambda j: (v[j], -j))  # first maximum
            if sum(v) > 0 and best < 8:
                counts.setdefault(row[0], Counter())[best] += 1
    return counts


def test_real_ferplus_votes_and_label_counts(ferplus_csv):
    votes, usage = load_ferplus_votes(ferplus_csv)
    assert votes.shape == (35887, 10)
    assert Counter(usage) == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    # Rows in the order of fer2013.csv: Training, then PublicTest, then PrivateTest.
    assert usage[28708] == "Training" and usage[28709] == "PublicTest" and usage[32298] == "PrivateTest"
    # FER2013-shaped splits (no pixels needed) aligned by row index, as load_fer2013_csv makes them.
    splits, row_index = {}, {}
    for split, u in USAGE_OF.items():
        idx = np.flatnonzero(np.asarray(usage) == u)
        n = len(idx)
        splits[split] = FERDataset(torch.zeros(n, 1, 48, 48, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), ("x",))
        row_index[split] = idx
    s = apply_ferplus(DataSplits("fer2013", splits, {"row_index": row_index}), ferplus_csv)
    ref = _reference_counts(ferplus_csv)
    for split, u in USAGE_OF.items():
        assert s[split].class_counts() == [ref[u][c] for c in range(8)]
        assert len(s[split]) + sum(s.info["ferplus"]["dropped"][split].values()) == len(row_index[split])
    # The empty "Image name" rows of FER+ are the non-faces: all NF, all dropped.
    assert s.info["ferplus"]["dropped_total"] >= 173


@pytest.mark.slow
def test_real_csv_with_ferplus_end_to_end(fer2013_dev_csv, ferplus_csv):
    s = load_data(fer2013_dev_csv, DataConfig(ferplus=str(ferplus_csv)))
    ref = _reference_counts(ferplus_csv)
    assert s["train"].class_counts() == [ref["Training"][c] for c in range(8)]
    assert s["val"].class_counts() == [ref["PublicTest"][c] for c in range(8)]
    assert "test" not in s
