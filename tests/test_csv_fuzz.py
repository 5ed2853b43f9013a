"""Property-based test of the FER2013 CSV parser on random malformed rows (hypothesis)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fermetric.data.fer2013 import parse_fer2013_bytes
from fermetric.errors import DataError

USAGES = ["Training", "PublicTest", "PrivateTest"]
# How a row is broken (None: a good row).
DAMAGE = [None, None, None, "label_high", "label_text", "short", "long", "pixel_high", "pixel_negative",
          "pixel_text", "usage", "no_usage", "junk"]


def make_row(kind, label: int, pixels: np.ndarray, usage: str) -> str:
    pix = [str(v) for v in pixels]
    lab = str(label)
    if kind == "label_high":
        lab = str(7 + label)
    elif kind == "label_text":
        lab = "happy"
    elif kind == "short":
        pix = pix[:-1]
    elif kind == "long":
        pix = pix + ["1"]
    elif kind == "pixel_high":
        pix[label * 100] = "256"
    elif kind == "pixel_negative":
        pix[5] = "-3"
    elif kind == "pixel_text":
        pix[17] = "1e3"
    elif kind == "usage":
        usage = "Validation"
    elif kind == "no_usage":
        return f"{lab},{' '.join(pix)}"
    elif kind == "junk":
        return "this is not a row"
    return f"{lab},{' '.join(pix)},{usage}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(DAMAGE), min_size=1, max_size=12),
    labels=st.lists(st.integers(0, 6), min_size=12, max_size=12),
    usages=st.lists(st.sampled_from(USAGES), min_size=12, max_size=12),
    seed=st.integers(0, 2**31 - 1),
)
def test_parser_reports_exactly_the_bad_rows(kinds, labels, usages, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(kinds), 2304), dtype=np.int64)
    lines = ["emotion,pixels,Usage"] + [make_row(k, labels[i], images[i], usages[i]) for i, k in enumerate(kinds)]
    data = ("\n".join(lines) + "\n").encode()
    expected_bad = [i + 2 for i, k in enumerate(kinds) if k is not None]  # file lines, header = 1
    good = [i for i, k in enumerate(kinds) if k is None]
    try:
        parsed = parse_fer2013_bytes(data, "fuzz.csv")
    except DataError as exc:  # only allowed when no row is good
        assert not good, f"DataError although rows {good} are good: {exc}"
        assert "fuzz.csv" in str(exc)
        return
    assert parsed.bad_lines.tolist() == expected_bad
    assert all(m.strip() for m in parsed.bad_messages.tolist())
    if expected_bad:  # the loader's error names the file and the first bad line
        import tempfile
        from pathlib import Path

        from fermetric.data.fer2013 import load_fer2013_csv

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fuzz.csv"
            path.write_bytes(data)
            try:
                load_fer2013_csv(path, cache=False)
                raise AssertionError("bad rows were not reported")
            except DataError as exc:
                assert "fuzz.csv" in str(exc) and f"line {expected_bad[0]}" in str(exc), str(exc)
            if not good:  # skipping every row leaves nothing: still an error, never an empty data set
                try:
                    load_fer2013_csv(path, skip_bad_rows=True, cache=False)
                    raise AssertionError("an all-bad file loaded")
                except DataError as exc:
                    assert "every data row is bad" in str(exc)
                return
            kept = load_fer2013_csv(path, skip_bad_rows=True, cache=False)
            assert sum(len(ds) for ds in kept.splits.values()) == len(good)
            assert kept.info["skipped_rows"]["count"] == len(expected_bad)
    assert parsed.lines.tolist() == [i + 2 for i in good]
    assert parsed.labels.tolist() == [labels[i] for i in good]
    assert np.array_equal(parsed.images.reshape(len(good), -1), images[good].astype(np.uint8))
