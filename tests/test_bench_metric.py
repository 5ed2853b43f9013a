"""scripts/bench_metric_vs_softmax.py end to end on a tiny SynthFER budget (slow: --runslow): every
row, then a rerun into the same OUT that reuses the finished runs and survives a failing training."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench_metric_vs_softmax.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_best_recipe_is_train_triplets_defaults():
    """The bench's triplet row stands for configs/metric/best.yaml: the file must resolve to the
    config train-triplet gives without it (else the bench needs its own row for it again)."""
    from fermetric.config import apply_overrides, config_to_dict, load_config
    from fermetric.training.families import FAMILY_DEFAULTS

    base = apply_overrides({}, FAMILY_DEFAULTS["triplet"])
    assert config_to_dict(load_config(REPO / "configs" / "metric" / "best.yaml", base=base)) == \
        config_to_dict(load_config(None, base=base))


def test_bench_table_marks_failed_rows_and_partial_tables():
    bench = _bench()
    ok = bench.row("softmax classifier", {"accuracy": 0.5, "macro_f1": 0.25}, 1.25)
    table = bench.markdown([ok, bench.failed_row("train-siamese (defaults)", "siamese: TrainingFailed: exit code 2\nlog")],
                           "T", missing=3)
    assert "| softmax classifier | 50.00 % | 25.00 % | – | 1.2 | – |" in table
    assert "| train-siamese (defaults) | failed: siamese: TrainingFailed: exit code 2 |" in table
    assert "Partial: 3 row(s) still to come" in table
    assert "Partial" not in bench.markdown([ok], "T")


@pytest.mark.slow
def test_bench_metric_vs_softmax_tiny(tmp_path, monkeypatch):
    bench = _bench()
    out = tmp_path / "bench"
    argv = ["synth", "--minutes", "1", "--epochs", "1", "--width", "8", "--max-steps", "3",
            "--set", "data.synth_train=280", "--set", "data.synth_val=70", "--set", "data.synth_test=0", "--out", str(out)]
    bench.main(argv)
    result = json.loads((out / "bench.json").read_text())
    rows = result["rows"]
    assert [r["model"].split(" ")[0] for r in rows] == ["softmax", "kNN", "train-triplet", "train-siamese", "best",
                                                        *["ensemble"] * 6]
    assert "warm-started" in rows[4]["model"] and result["complete"] and result["failed"] == []
    assert set(result["ensemble_weights"]) == {"triplet", "warm"}
    assert all(0 <= r["accuracy"] <= 1 for r in rows) and "| model |" in (out / "bench.md").read_text()
    # every row but softmax's is compared with softmax on the same images
    assert rows[0]["vs_softmax"] is None
    for r in rows[1:]:
        cmp = r["vs_softmax"]
        assert cmp["accuracy_a"] == pytest.approx(rows[0]["accuracy"]) and cmp["accuracy_b"] == pytest.approx(r["accuracy"])
    assert "McNemar p" in (out / "bench.md").read_text()
    assert "--init-from" in (out / "logs" / "warm.log").read_text()
    # again into the same OUT: finished runs reused (untouched), a training that fails is a failed row
    kept = {n: (out / n / "checkpoints" / "best.pt").stat().st_mtime_ns for n in ("classifier", "triplet", "warm")}
    import shutil

    shutil.rmtree(out / "siamese")
    monkeypatch.setitem(bench.TRAININGS, "siamese", ["train-siamese", "--set", "metric.loss=NoSuchLoss"])
    again = bench.main(argv)
    assert again["failed"] == ["siamese"] and again["complete"]
    assert again["rows"][3]["accuracy"] is None and "NoSuchLoss" in again["rows"][3]["error"]
    assert [r["accuracy"] for i, r in enumerate(again["rows"]) if i != 3] == [r["accuracy"] for i, r in enumerate(rows) if i != 3]
    assert {n: (out / n / "checkpoints" / "best.pt").stat().st_mtime_ns for n in kept} == kept
    assert "failed: siamese" in (out / "bench.md").read_text()
    with pytest.raises(SystemExit, match="holds no bench run with these settings"):
        bench.main([*argv[:2], "2", *argv[3:]])
