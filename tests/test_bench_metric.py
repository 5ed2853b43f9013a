"""scripts/bench_metric_vs_softmax.py end to end on a tiny SynthFER budget (slow: --runslow)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_metric_vs_softmax_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench_metric_vs_softmax.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    bench.main(["synth", "--minutes", "1", "--epochs", "1", "--width", "8", "--max-steps", "3",
                "--set", "data.synth_train=280", "--set", "data.synth_val=70", "--set", "data.synth_test=0",
                "--out", str(out)])
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["model"].split(" ")[0] for r in rows] == ["softmax", "kNN", "train-triplet", "train-siamese", "best", "ensemble"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows) and "| model |" in (out / "bench.md").read_text()
