"""`fermetric data info` and `fermetric data synth` through click's CliRunner."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from fermetric.cli import main
from fermetric.data.dataset import FERDataset
from fermetric.plotting.samples import sample_grid

SMALL_SYNTH = ["--set", "data.synth_train=70", "--set", "data.synth_val=14", "--set", "data.synth_test=14"]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE_DIR", str(tmp_path / "cache"))


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


def write_csv(path, n_bad=0):
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for i in range(14):
        lines.append(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},{'Training' if i < 10 else 'PublicTest'}")
    for _ in range(n_bad):
        lines.append("3,1 2 3,Training")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_info_on_synthfer_writes_samples_and_masks(tmp_path):
    out = tmp_path / "info"
    r = run("data", "info", "--out", out, "--per-class", 3, *SMALL_SYNTH)
    assert r.exit_code == 0, r.output
    assert "SynthFER(seed=0): 3 splits, 7 classes, 98 images" in r.stdout
    assert "evidence masks: train, val, test" in r.stdout
    for name in ("samples.png", "samples_masks.png", "summary.txt"):
        assert (out / name).is_file() and f"wrote {out / name}" in r.stdout
    assert "total" in (out / "summary.txt").read_text()


def test_info_on_a_small_csv(tmp_path):
    csv = write_csv(tmp_path / "fer2013.csv")
    r = run("data", "info", csv, "--out", tmp_path / "o", "--per-class", 2)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "10", "4", "14", "100.0%"]
    assert "cache: miss" in r.stdout and "skipped bad rows: 0" in r.stdout
    assert "cache: hit" in run("data", "info", csv, "--out", tmp_path / "o", "--per-class", 1).stdout


def test_skip_bad_rows_flag_and_the_error_without_it(tmp_path):
    csv = write_csv(tmp_path / "bad.csv", n_bad=2)
    r = run("data", "info", csv, "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert r.stdout == "" and "Traceback" not in r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "line 16" in err[0] and "found 3 values" in err[0]
    r = run("data", "info", csv, "--skip-bad-rows", "--out", tmp_path / "o", "--per-class", 1)
    assert r.exit_code == 0, r.output
    assert "skipped bad rows: 2 (lines 16, 17;" in r.stdout


def test_info_on_the_real_folder_sample(folder_sample, tmp_path):
    r = run("data", "info", folder_sample, "--out", tmp_path / "o", "--per-class", 2)
    assert r.exit_code == 0, r.output
    total = next(line for line in r.stdout.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "84", "42", "126", "100.0%"]
    assert "val split: PublicTest_* files of test/" in r.stdout and (tmp_path / "o" / "samples.png").is_file()


@pytest.mark.parametrize("path", ["/no/such/place.csv", "README"])
def test_bad_paths_exit_2_with_one_line(tmp_path, path):
    target = tmp_path / path if path == "README" else path
    if path == "README":
        target.write_text("hello")
    r = run("data", "info", target, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "Traceback" not in r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(target) in err[0]


def test_synth_then_info(tmp_path):
    out = tmp_path / "synth"
    # n = 100: enough for every class (Disgust is 1.5 %) to have a training image.
    r = run("data", "synth", "--n", 100, "--out", out, "--seed", 1)
    assert r.exit_code == 0, r.output
    assert f"wrote 100 images and their masks to {out}" in r.stdout
    assert len(list((out / "train").rglob("*.png"))) == 80
    assert len(list((out / "masks").rglob("*.png"))) == 100
    r = run("data", "info", out, "--out", tmp_path / "o", "--per-class", 2)
    assert r.exit_code == 0, r.output
    total = next(line for line in r.stdout.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "80", "10", "10", "100", "100.0%"]
    assert "evidence masks: train, val, test" in r.stdout
    # A second write into the same folder is refused (exit 2), unless --overwrite.
    assert run("data", "synth", "--n", 10, "--out", out).exit_code == 2
    assert run("data", "synth", "--n", 10, "--out", out, "--overwrite").exit_code == 0


def test_sample_grid_rows_labels_and_mask_overlay():
    import matplotlib.pyplot as plt
    import torch

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    ds = FERDataset(torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8, generator=g), labels, ("a", "b", "c"),
                    masks=torch.rand(6, 48, 48, generator=g) > 0.5)
    fig = sample_grid(ds, per_class=2, masks=True, title="t")
    axes = fig.axes
    assert len(axes) == 3 * 2
    assert [axes[2 * c].get_ylabel().split("\n")[0] for c in range(3)] == ["a", "b", "c"]
    assert [len(ax.images) for ax in axes] == [2, 2, 2, 0, 2, 2]  # image + overlay; class b has one image
    plain = sample_grid(ds, per_class=2)
    assert [len(ax.images) for ax in plain.axes] == [1, 1, 1, 0, 1, 1]
    # Same seed, same picks.
    again = sample_grid(ds, per_class=2)
    assert all((a.images[0].get_array() == b.images[0].get_array()).all() for a, b in zip(plain.axes, again.axes) if a.images)
    for f in (fig, plain, again):
        plt.close(f)
