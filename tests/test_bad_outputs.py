"""Bad output paths (issue 25): fermetric writes only into folders it made, empty ones, or its own
kind of output, never replaces a file it did not write, and a command that fails keeps earlier
results. Each case: exit code, a one-line message without a traceback, and every file of the
user's byte-identical afterwards."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, snapshot
from fermetric.errors import ConfigError
from fermetric.utils.outputs import MARKER, output_dir


def _refused(args: list[str], *fragments: str, expect: int = 2) -> str:
    res = run_cli(args, expect=expect)
    out = res.output
    assert "Traceback" not in out
    for f in fragments:
        assert f in out, f"{f!r} not in {out!r}"
    return out


def _user_folder(tmp: Path) -> Path:
    d = tmp / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("\\documentclass{article}")
    return d


def test_report_never_replaces_a_runs_file(tmp_path: Path, classifier_run: Path):
    run = tmp_path / "other_run"
    shutil.copytree(classifier_run, run)
    before = snapshot(run)
    for target in (run / "config.yaml", run / "checkpoints" / "best.pt"):
        _refused(["report", str(classifier_run), "--out", str(target)], str(target), "not a report written by fermetric")
    assert snapshot(run) == before


def test_report_replaces_its_own_report(tmp_path: Path, classifier_run: Path):
    out = tmp_path / "r.html"
    run_cli(["report", str(classifier_run), "--out", str(out)])
    first = out.read_text()
    assert '<meta name="generator" content="fermetric' in first
    run_cli(["report", str(classifier_run), "--out", str(out)])  # ours: replaced
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_study_refuses_a_run_directory_and_a_users_folder(tmp_path: Path, classifier_run: Path):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    before = snapshot(run)
    _refused(["study", "--out", str(run)], "is a fermetric run directory, not a study folder")
    assert snapshot(run) == before
    mine = _user_folder(tmp_path)
    _refused(["study", "--out", str(mine)], "already holds files fermetric did not write (thesis.tex)")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("command", ["evaluate", "knn-eval", "explain", "filters"])
def test_run_commands_refuse_a_users_out_folder(command: str, tmp_path: Path, classifier_run: Path):
    mine = _user_folder(tmp_path)
    before = snapshot(mine)
    _refused([command, str(classifier_run), "--out", str(mine)], str(mine), "fermetric did not write")
    assert snapshot(mine) == before


def test_data_info_refuses_a_users_folder(tmp_path: Path):
    mine = _user_folder(tmp_path)
    _refused(["data", "info", "--out", str(mine)], "fermetric did not write")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_embed_plot_never_replaces_a_users_png(tmp_path: Path, triplet_run: Path):
    from PIL import Image

    png = tmp_path / "holiday.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    before = png.read_bytes()
    _refused(["embed-plot", str(triplet_run), "--method", "pca", "--out", str(png)], "not a figure written by fermetric")
    assert png.read_bytes() == before


def test_failed_predict_keeps_the_earlier_predictions(tmp_path: Path, classifier_run: Path):
    from PIL import Image

    out = tmp_path / "pred"
    face = tmp_path / "face.png"
    Image.fromarray(np.full((48, 48), 120, np.uint8)).save(face)  # a 48x48 image is a crop: predicted
    run_cli(["predict", str(classifier_run), str(face), "--out", str(out)])
    before = snapshot(out)
    assert "predictions.json" in before
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8)).save(noise)  # no face found
    _refused(["predict", str(classifier_run), str(noise), "--out", str(out)], "no prediction", "nothing written", expect=1)
    assert snapshot(out) == before
    fresh = tmp_path / "fresh"
    _refused(["predict", str(classifier_run), str(noise), "--out", str(fresh)], "nothing written", expect=1)
    assert not fresh.exists()


def test_output_dir_rule(tmp_path: Path, classifier_run: Path):
    new = output_dir(tmp_path / "a" / "b", "study")
    assert (new / MARKER).is_file()
    output_dir(new, "evaluation")  # ours: another kind may join
    empty = tmp_path / "empty"
    empty.mkdir()
    output_dir(empty, "study")
    legacy = tmp_path / "legacy"
    (legacy / "runs").mkdir(parents=True)
    output_dir(legacy, "study", legacy=("runs",))
    before = snapshot(classifier_run)
    output_dir(classifier_run, "evaluation", runs_ok=True)
    assert snapshot(classifier_run) == before  # a run is used as it is, not marked
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        output_dir(tmp_path / "f", "study")


def _zoo_copy(tiny_zoo: Path, tmp: Path) -> Path:
    root = tmp / "zoo"
    shutil.copytree(tiny_zoo, root)
    return root


@pytest.mark.parametrize("damage", ["gallery-labels", "config-k", "card-accuracy", "extra-file", "manifest-gone"])
def test_a_zoo_entry_is_checked_whole(damage: str, tiny_zoo: Path, tmp_path: Path, monkeypatch):
    """Every file of an entry is in its manifest: predict and --verify refuse an entry whose gallery
    labels, config or card were edited, naming the file (the weights' digest alone passed them)."""
    root = _zoo_copy(tiny_zoo, tmp_path)
    entry = root / "tiny-tri"
    if damage == "gallery-labels":
        g = dict(np.load(entry / "gallery.npz"))
        g["labels"] = np.zeros_like(g["labels"])  # every label Angry
        np.savez_compressed(entry / "gallery.npz", **g)
        named = "gallery.npz has been modified"
    elif damage == "config-k":
        cfg = entry / "config.yaml"
        cfg.write_text(cfg.read_text().replace("knn_k: 20", "knn_k: 1"))
        named = "config.yaml has been modified"
    elif damage == "card-accuracy":
        card = entry / "card.json"
        card.write_text(card.read_text().replace('"accuracy": 0.', '"accuracy": 1.'))
        named = "card.json has been modified"
    elif damage == "extra-file":
        (entry / "notes.txt").write_text("x")
        named = "notes.txt is not one of the entry's files"
    else:
        (entry / "manifest.json").unlink()
        named = "manifest.json is missing or unreadable"
    monkeypatch.setenv("FERMETRIC_ZOO", str(root))
    _refused(["models", "--pretrained", "--verify"], named, expect=2)
    face = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((48, 48), 120, np.uint8)).save(face)
    _refused(["predict", "--model", "tiny-tri", str(face), "--out", str(tmp_path / "p")], named, expect=2)
    assert not (tmp_path / "p").exists()


def test_an_intact_zoo_entry_verifies(tiny_ensemble_zoo: Path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    out = run_cli(["models", "--pretrained", "--verify"]).output
    assert out.count("every file matches its manifest") == 3


@pytest.fixture()
def read_only_fs(monkeypatch):
    """Every run directory behaves as on a read-only file system when its lock is taken (tests run
    as root, for whom chmod does not stop writes): EROFS, as a read-only mount gives."""
    import errno

    from fermetric.utils import runlock

    def refuse(run_dir):
        raise OSError(errno.EROFS, "Read-only file system", str(run_dir / runlock.LOCK_NAME))

    monkeypatch.setattr(runlock, "_acquire", refuse)
    yield
    runlock._READ_ONLY.clear()


def test_read_only_runs_are_readable(tmp_path: Path, triplet_run: Path, read_only_fs):
    from PIL import Image

    run = tmp_path / "archived"
    shutil.copytree(triplet_run, run)
    before = snapshot(run)
    faces = []
    for i, level in enumerate((90, 160)):
        faces.append(tmp_path / f"f{i}.png")
        Image.fromarray(np.full((48, 48), level, np.uint8)).save(faces[-1])
    elsewhere = tmp_path / "out"
    run_cli(["evaluate", str(run), "--out", str(elsewhere / "eval")])
    run_cli(["knn-eval", str(run), "--out", str(elsewhere / "knn")])
    assert "same expression: probability" in run_cli(["similarity", str(run), str(faces[0]), str(faces[1])]).output
    run_cli(["embed-plot", str(run), "--method", "pca", "--out", str(elsewhere / "plot.png")])
    assert (elsewhere / "val_pca_2d.npy").is_file()  # the coordinates beside the figure
    assert snapshot(run) == before
    # commands that must write into the run say so in one line
    for args, fragment in ((["evaluate", str(run)], "give --out elsewhere"),
                           (["build-index", str(run)], "copy the run somewhere writable"),
                           (["calibrate", str(run)], "copy the run somewhere writable")):
        out = _refused(args, "is read-only (Read-only file system), and this command writes into it", fragment)
        assert len(out.strip().splitlines()) == 1, out
    assert snapshot(run) == before


@pytest.fixture()
def full_disk(monkeypatch):
    """Every file fermetric writes through its atomic writer fails as on a full device (ENOSPC at
    the flush to disk, after the bytes were handed over: the late failure a full disk gives)."""
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


TINY = ["--set", "data.synth_train=70", "--set", "data.synth_val=14", "--set", "data.synth_test=0",
        "--set", "model.width=4", "--set", "train.batch_size=16"]


def test_full_disk_new_run_leaves_nothing(tmp_path: Path, full_disk):
    out = _refused(["train-classifier", "--out", str(tmp_path / "run"), "--epochs", "1", *TINY], "no space left on the device")
    assert len(out.strip().splitlines()[-1]) < 400 and "Traceback" not in out
    assert not (tmp_path / "run").exists()


def test_full_disk_resume_leaves_the_run_as_it_was(tmp_path: Path, classifier_run: Path, full_disk):
    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    before = snapshot(run)
    _refused(["train-classifier", "--out", str(run), "--resume", "--epochs", "3"], "no space left on the device")
    assert snapshot(run) == before


def test_full_disk_build_index_keeps_the_earlier_index(tmp_path: Path, triplet_run: Path, monkeypatch):
    import errno
    import os

    run = tmp_path / "run"
    shutil.copytree(triplet_run, run)
    run_cli(["build-index", str(run)])
    before = snapshot(run)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    _refused(["build-index", str(run), "--index", "hnsw"], "no space left on the device")
    assert snapshot(run) == before


def test_full_disk_train_log_warns_once_without_a_traceback(tmp_path: Path, capsys):
    import errno
    import logging

    from fermetric.training.trainer import RunLogHandler

    handler = RunLogHandler(tmp_path / "train.log")
    log = logging.getLogger("fermetric.test_full_disk_log")
    log.addHandler(handler)
    log.propagate = False

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    handler.stream.write = full
    try:
        log.warning("epoch 1")
        log.warning("epoch 2")
    finally:
        log.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count("can no longer be written") == 1 and "No space left on device" in err
