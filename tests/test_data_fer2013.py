"""fer2013.csv loader: parsing, validation messages, skip_bad_rows, the .npz cache, the real file."""
from __future__ import annotations

import gzip
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from fermetric.config import DataConfig
from fermetric.data import load_data
from fermetric.data.classes import FER2013_CLASSES, FER2013_TRAIN_COUNTS
from fermetric.data.fer2013 import cache_path, load_fer2013_csv, parse_fer2013_bytes
from fermetric.errors import DataError

HEADER = "emotion,pixels,Usage"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache folder (never the user's ~/.cache)."""
    monkeypatch.setenv("FERMETRIC_CACHE_DIR", str(tmp_path / "cache"))


def make_rows(n: int, seed: int = 0, usages=("Training", "PublicTest", "PrivateTest")):
    """n rows: (label, pixels (2304,) uint8, usage), labels and usages cycling."""
    rng = np.random.default_rng(seed)
    return [(i % 7, rng.integers(0, 256, 2304).astype(np.uint8), usages[i % len(usages)]) for i in range(n)]


def row_text(label, pixels, usage) -> str:
    return f"{label},{' '.join(map(str, pixels.tolist()))},{usage}"


def write_csv(path: Path, lines: list[str], gz: bool = False, newline: str = "\n") -> Path:
    text = newline.join(lines) + newline
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")
    return path


def test_small_csv_splits_values_sources(tmp_path):
    rows = make_rows(9)
    path = write_csv(tmp_path / "fer2013.csv", [HEADER] + [row_text(*r) for r in rows])
    s = load_fer2013_csv(path)
    assert list(s.splits) == ["train", "val", "test"]
    assert s.class_names == FER2013_CLASSES
    for split, usage in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        want = [i for i, r in enumerate(rows) if r[2] == usage]
        ds = s[split]
        assert ds.images.shape == (len(want), 1, 48, 48) and ds.images.dtype.is_floating_point is False
        for k, i in enumerate(want):
            np.testing.assert_array_equal(ds.images[k, 0].numpy().ravel(), rows[i][1])
            assert int(ds.labels[k]) == rows[i][0]
            assert ds.sources[k] == f"fer2013.csv:{i + 2}"  # the header is line 1
        np.testing.assert_array_equal(s.info["row_index"][split], want)
    assert s.info["rows"] == 9 and s.info["skipped_rows"]["count"] == 0


def test_gzip_crlf_quotes_blank_lines_and_loose_whitespace(tmp_path):
    rows = make_rows(4, seed=1, usages=("Training",))
    plain = write_csv(tmp_path / "a.csv", [HEADER] + [row_text(*r) for r in rows])
    # CRLF line ends, a quoted pixels field, a blank line, double spaces and a tab between numbers.
    odd = [HEADER, row_text(*rows[0]), "", f'{rows[1][0]},"{" ".join(map(str, rows[1][1]))}",Training']
    odd.append(row_text(*rows[2]).replace(" ", "  ", 5).replace(" ", "\t", 1))
    odd.append(row_text(*rows[3]))
    gz = write_csv(tmp_path / "b.csv.gz", odd, gz=True, newline="\r\n")
    a, b = load_fer2013_csv(plain)["train"], load_fer2013_csv(gz)["train"]
    assert a.images.equal(b.images) and a.labels.equal(b.labels)
    # The blank line is not a data row and moves the line numbers.
    assert b.sources == ["b.csv.gz:2", "b.csv.gz:4", "b.csv.gz:5", "b.csv.gz:6"]
    np.testing.assert_array_equal(load_fer2013_csv(gz).info["row_index"]["train"], [0, 1, 2, 3])


def _pix(values) -> str:
    return " ".join(map(str, values))


GOOD = _pix([7] * 2304)


@pytest.mark.parametrize(
    "lines, line_no, needles",
    [
        (["emotion,pixels", f"0,{GOOD}"], 1, ["header", "emotion,pixels,Usage"]),
        (["label,image,usage", f"0,{GOOD},Training"], 1, ["emotion,pixels,Usage"]),
        ([HEADER, f"0,{GOOD},Training", f"0,{_pix([7] * 2303)},Training"], 3, ["2304", "found 2303 values"]),
        ([HEADER, f"0,{_pix([7] * 2305)},Training"], 2, ["found 2305 values"]),
        ([HEADER, f"0,{_pix([7] * 2303 + [256])},Training"], 2, ["'256'", "value 2304", "0..255"]),
        ([HEADER, f"0,{_pix([-1] + [7] * 2303)},Training"], 2, ["'-1'", "0..255"]),
        ([HEADER, f"0,{_pix([7] * 100 + [1.5] + [7] * 2203)},Training"], 2, ["'1.5'", "value 101"]),
        ([HEADER, f"0,{_pix([7] * 100 + ['x'] + [7] * 2203)},Training"], 2, ["'x'"]),
        ([HEADER, f"0,{_pix([1000] + [7] * 2303)},Training"], 2, ["'1000'"]),
        ([HEADER, "0,,Training"], 2, ["found 0 values"]),
        ([HEADER, f"7,{GOOD},Training"], 2, ["emotion label '7'", "0..6"]),
        ([HEADER, f"a,{GOOD},Training"], 2, ["emotion label 'a'"]),
        ([HEADER, f"0,{GOOD},Train"], 2, ["Usage 'Train'", "Training, PublicTest, PrivateTest"]),
        ([HEADER, f"0,{GOOD}"], 2, ["3 comma-separated fields", "found 2"]),
        ([HEADER, f"0,{GOOD},Training", "garbage"], 3, ["found 1"]),
        ([HEADER, f"0,{GOOD},x,Training"], 2, ["3 comma-separated fields", "found 4"]),
        ([HEADER, f"0, {GOOD},Training", f"0,{GOOD}  7,Training"], 3, ["found 2305 values"]),
    ],
)
def test_bad_rows_name_file_line_and_expectation(tmp_path, lines, line_no, needles):
    path = write_csv(tmp_path / "bad.csv", lines)
    with pytest.raises(DataError) as err:
        load_fer2013_csv(path)
    msg = str(err.value)
    assert str(path) in msg and f"line {line_no}:" in msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize(
    "content, needle", [(b"", "empty file"), (b"\n \n", "empty file"), (f"{HEADER}\n".encode(), "no data rows")]
)
def test_empty_files(tmp_path, content, needle):
    path = tmp_path / "e.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=needle) as err:
        load_fer2013_csv(path)
    assert str(path) in str(err.value)


def test_not_gzip_and_missing_file(tmp_path):
    fake = tmp_path / "x.csv.gz"
    fake.write_text(f"{HEADER}\n")
    with pytest.raises(DataError, match="not gzip-compressed"):
        load_fer2013_csv(fake)
    broken = tmp_path / "y.csv.gz"
    broken.write_bytes(gzip.compress(f"{HEADER}\n0,{GOOD},Training\n".encode())[:60])
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_fer2013_csv(broken)
    with pytest.raises(DataError, match="no such file"):
        load_fer2013_csv(tmp_path / "absent.csv")


def test_skip_bad_rows_counts_lines_and_keeps_row_index(tmp_path, caplog):
    rows = make_rows(6, usages=("Training",))
    lines = [HEADER] + [row_text(*r) for r in rows]
    lines[2] = lines[2].replace(",Training", ",Nope")  # line 3, data row 1
    lines[5] = "9" + lines[5][1:]  # line 6, data row 4
    path = write_csv(tmp_path / "f.csv", lines)
    with pytest.raises(DataError, match="line 3: Usage 'Nope'.*1 more bad rows"):
        load_fer2013_csv(path)
    with caplog.at_level(logging.WARNING):
        s = load_fer2013_csv(path, skip_bad_rows=True)
    assert s.info["skipped_rows"]["count"] == 2 and s.info["skipped_rows"]["lines"] == [3, 6]
    assert "Usage 'Nope'" in s.info["skipped_rows"]["first_error"]
    assert "skipped 2 bad rows" in caplog.text
    np.testing.assert_array_equal(s.info["row_index"]["train"], [0, 2, 3, 5])
    assert s["train"].sources == ["f.csv:2", "f.csv:4", "f.csv:5", "f.csv:7"]
    np.testing.assert_array_equal(s["train"].images[1, 0].numpy().ravel(), rows[2][1])
    # Through load_data and DataConfig as well.
    assert len(load_data(path, DataConfig(skip_bad_rows=True))["train"]) == 4


def test_every_row_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_csv(tmp_path / "g.csv", [HEADER, f"8,{GOOD},Training"])
    with pytest.raises(DataError, match="every data row is bad"):
        load_fer2013_csv(path, skip_bad_rows=True)


def test_cache_hit_miss_corrupt_and_invalidation(tmp_path, caplog):
    rows = make_rows(5)
    path = write_csv(tmp_path / "c.csv", [HEADER] + [row_text(*r) for r in rows])
    first = load_fer2013_csv(path)
    cfile = cache_path(path)
    assert first.info["cache"] == "miss" and cfile.is_file() and cfile.parent == tmp_path / "cache"
    second = load_fer2013_csv(path)
    assert second.info["cache"] == "hit"
    for split in first.splits:
        assert first[split].images.equal(second[split].images) and first[split].sources == second[split].sources
        np.testing.assert_array_equal(first.info["row_index"][split], second.info["row_index"][split])
    # A damaged cache file is ignored (with a warning) and rewritten.
    cfile.write_bytes(b"PK\x03\x04 not a zip")
    with caplog.at_level(logging.WARNING):
        third = load_fer2013_csv(path)
    assert third.info["cache"] == "miss" and "ignoring unreadable cache file" in caplog.text
    assert third["train"].images.equal(first["train"].images)
    assert load_fer2013_csv(path).info["cache"] == "hit"
    # Editing the file changes its key: the stale cache is not used.
    rows[0] = (3, rows[0][1], "Training")
    write_csv(path, [HEADER] + [row_text(*r) for r in rows] + [row_text(*rows[1])])
    edited = load_fer2013_csv(path)
    assert edited.info["cache"] == "miss" and int(edited["train"].labels[0]) == 3
    # cache=False neither reads nor writes.
    n_files = len(os.listdir(tmp_path / "cache"))
    assert load_fer2013_csv(path, cache=False).info["cache"] == "off"
    assert len(os.listdir(tmp_path / "cache")) == n_files


def test_cached_bad_rows_still_raise(tmp_path):
    path = write_csv(tmp_path / "h.csv", [HEADER, f"0,{GOOD},Training", f"0,{GOOD},Bogus"])
    for _ in range(2):  # the second time the rows come from the cache
        with pytest.raises(DataError, match="line 3: Usage 'Bogus'"):
            load_fer2013_csv(path)
    assert load_fer2013_csv(path, skip_bad_rows=True).info["cache"] == "hit"


def test_parse_matches_python_reference(tmp_path):
    rng = np.random.default_rng(3)
    # Many rows so the block decoder sees several blocks, with short and long numbers.
    pix = rng.choice([0, 5, 10, 99, 100, 255], size=(1100, 2304)).astype(np.uint8)
    labels = rng.integers(0, 7, 1100)
    fields = [_pix(p) for p in pix]
    # Loose whitespace in some rows (leading, trailing, doubled, tabs): still the same numbers.
    for i in rng.choice(1100, 60, replace=False):
        f = fields[i]
        k = int(rng.integers(1, len(f) - 1))
        fields[i] = [" " + f, f + " ", f[:k] + (" " if f[k] == " " else "") + f[k:], f.replace(" ", "\t", 3)][i % 4]
    text = "\n".join([HEADER] + [f"{y},{f},Training" for y, f in zip(labels, fields)]).encode()
    parsed = parse_fer2013_bytes(text, "mem.csv")
    assert len(parsed.bad_lines) == 0
    np.testing.assert_array_equal(parsed.images.reshape(1100, -1), pix)
    np.testing.assert_array_equal(parsed.labels, labels)


# ---------------------------------------------------------------------------------------------
# the real file (../shared/data): exact counts, and the cache


def test_dev_csv_counts_and_cache_speed(fer2013_dev_csv):
    t0 = time.perf_counter()
    s = load_fer2013_csv(fer2013_dev_csv)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = load_fer2013_csv(fer2013_dev_csv)
    t_cached = time.perf_counter() - t0
    assert s.info["cache"] == "miss" and again.info["cache"] == "hit"
    assert {k: len(v) for k, v in s.splits.items()} == {"train": 28709, "val": 3589}
    assert s["train"].class_counts() == list(FER2013_TRAIN_COUNTS)
    assert again["train"].class_counts() == list(FER2013_TRAIN_COUNTS)
    assert s["val"].images.equal(again["val"].images)
    np.testing.assert_array_equal(s.info["row_index"]["val"], np.arange(28709, 28709 + 3589))
    assert t_cached < t_first / 4, (t_first, t_cached)
