"""One table of bad inputs across data files, images, configs, CLI arguments, checkpoints and
index files. Each case asserts the error type, that the message names the offending thing, that
it is one line of sane length without a traceback, and that no partial output was left behind."""
from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import hold_run_lock, run_cli, snapshot
from fermetric.config import DataConfig, load_config
from fermetric.data.sources import load_data
from fermetric.errors import MAX_MESSAGE, CheckpointError, ConfigError, DataError, FermetricError, ModelError
from fermetric.retrieval.embeddings import split_embeddings
from fermetric.retrieval.index import build_run_index

GOOD_PIXELS = " ".join(["128"] * 2304)


def csv_file(tmp: Path, rows: list[str], header: str = "emotion,pixels,Usage", name: str = "fer.csv") -> Path:
    p = tmp / name
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def fake_image_folder(tmp: Path) -> Path:
    from PIL import Image

    root = tmp / "faces"
    for cls in ("happy", "sad"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((60, 60), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root


# Each case: build(tmp) -> a zero-argument callable that must raise; expected type; fragments the
# message must contain ("{tmp}" is replaced by the case's folder); the folder that must stay absent.
@dataclass
class Case:
    id: str
    build: Callable[[Path], Callable[[], object]]
    error: type
    fragments: tuple[str, ...]
    no_output: str | None = None
    runs: tuple[str, ...] = ()  # tiny-run fixtures (tests/conftest.py) passed to build after tmp


def _load(path, **cfg) -> Callable[[], object]:
    return lambda: load_data(str(path), DataConfig(source=str(path), **cfg))


def _train(tmp: Path, *args: str, command: str = "train-classifier") -> Callable[[], object]:
    def go():
        res = run_cli([command, "--out", str(tmp / "run"), "--epochs", "1",
                       "--set", "data.synth_train=70", "--set", "data.synth_val=14", "--set", "data.synth_test=0",
                       "--set", "model.width=4", "--set", "train.batch_size=16", *args], expect=2)
        raise FermetricError(res.output)  # the CLI's one-line message, checked like the others
    return go


def _cli(args: list[str], expect: int = 2) -> Callable[[], object]:
    def go():
        res = run_cli(args, expect=expect)
        assert "Traceback" not in res.output
        raise FermetricError(res.output)
    return go


def _corrupt_image_folder(tmp: Path) -> Callable[[], object]:
    root = fake_image_folder(tmp)
    (root / "sad" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return _load(root)


def _empty_class_folder(tmp: Path) -> Callable[[], object]:
    root = fake_image_folder(tmp)
    (root / "angry").mkdir()
    return _load(root)


def _malicious_run(tmp: Path, classifier_run: Path) -> Callable[[], object]:
    run = tmp / "evilrun"
    shutil.copytree(classifier_run, run)

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp / "pwned.txt"), "w"))

    torch.save({"format": "fermetric-checkpoint", "kind": "classifier", "x": Evil()}, run / "checkpoints" / "best.pt")
    return lambda: __import__("fermetric.runs", fromlist=["load_run"]).load_run(run)


def _truncated_run(tmp: Path, classifier_run: Path) -> Callable[[], object]:
    run = tmp / "cutrun"
    shutil.copytree(classifier_run, run)
    ck = run / "checkpoints" / "best.pt"
    ck.write_bytes(ck.read_bytes()[:5000])
    return _cli(["evaluate", str(run)])


def _other_class_count_weights(tmp: Path) -> Callable[[], object]:
    from fermetric.models import create_model

    # same architecture, but other widths in the trunk: must be refused with the keys named
    torch.save(create_model("baseline", num_classes=7, width=8).state_dict(), tmp / "w.pt")
    return lambda: create_model("baseline", num_classes=7, width=4, weights=str(tmp / "w.pt"))


def _index(tmp: Path, damage: str) -> Callable[[], object]:
    from fermetric.retrieval import KNNClassifier

    rng = np.random.default_rng(0)
    d = tmp / "index"
    KNNClassifier(k=3).fit(rng.normal(size=(50, 16)).astype("float32"), rng.integers(0, 7, 50)).save(d)
    if damage == "labels":
        np.save(d / "labels.npy", np.zeros(49, dtype=np.int64))
    elif damage == "missing":
        (d / "labels.npy").unlink()
    elif damage == "dim":
        meta = json.loads((d / "meta.json").read_text())
        meta["dimension"] = 32
        (d / "meta.json").write_text(json.dumps(meta))
    elif damage == "truncated":
        f = next(p for p in d.iterdir() if p.suffix in (".faiss", ".index"))
        f.write_bytes(f.read_bytes()[:100])
    return lambda: KNNClassifier.load(d)



# --- runs whose checkpoint, index or cache was damaged (a copy of a tiny run in the case's folder).
# Each goes through the CLI (exit 2, one line, no traceback) and leaves the run's files as they were.

def _run_cli_intact(run: Path, args: list[str]) -> Callable[[], object]:
    go = _cli(args)

    def intact():
        before = snapshot(run)
        try:
            go()
        finally:
            assert snapshot(run) == before, f"{run} was changed by a refused command"
    return intact


def _damaged_run(tmp: Path, src: Path, damage: str, command: str = "evaluate", other: Path | None = None) -> Callable[[], object]:
    from fermetric.runs import load_run

    run = tmp / "run"
    shutil.copytree(src, run)
    for derived in ("index", "embeddings", "eval"):
        shutil.rmtree(run / derived, ignore_errors=True)
    ckpt = run / "checkpoints" / "best.pt"
    if damage in ("stale-index", "index-truncated", "index-meta", "index-classes"):
        build_run_index(load_run(run))
    if damage == "stale-index":  # best.pt rewritten after build-index (--resume, retraining)
        ck = torch.load(ckpt, weights_only=True)
        ck["state_dict"] = {k: v * 1.1 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        torch.save(ck, ckpt)
    elif damage == "index-truncated":
        f = run / "index" / "index.faiss"
        f.write_bytes(f.read_bytes()[:200])
    elif damage == "index-meta":
        (run / "index" / "meta.json").write_text("{not json")
    elif damage == "index-classes":  # an index stamped for this checkpoint but with other class names
        meta = json.loads((run / "index" / "meta.json").read_text())
        meta["class_names"] = [c.upper() for c in meta["class_names"]]
        (run / "index" / "meta.json").write_text(json.dumps(meta))
    elif damage == "other-run-index":
        donor = tmp / "donor"
        shutil.copytree(other, donor)
        shutil.rmtree(donor / "index", ignore_errors=True)
        build_run_index(load_run(donor))
        shutil.copytree(donor / "index", run / "index")
    elif damage == "unstamped-index":  # written by an older fermetric: no checkpoint fingerprint
        from fermetric.retrieval import KNNClassifier

        r = load_run(run)
        emb, labels = split_embeddings(r, "train")
        KNNClassifier(k=3, class_names=list(r.class_names)).fit(emb, labels).save(run / "index")
        shutil.rmtree(run / "embeddings")
    elif damage in ("nan", "inf"):
        ck = torch.load(ckpt, weights_only=True)
        name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        ck["state_dict"][name].view(-1)[-1] = float("nan") if damage == "nan" else float("inf")
        torch.save(ck, ckpt)
    elif damage == "foreign":
        shutil.copy(other / "checkpoints" / "best.pt", ckpt)
    elif damage == "arch":
        ck = torch.load(ckpt, weights_only=True)
        ck["config"]["model"]["width"] = 16
        torch.save(ck, ckpt)
    elif damage == "data":
        ck = torch.load(ckpt, weights_only=True)
        ck["config"]["data"]["source"] = "fer2013.csv"
        torch.save(ck, ckpt)
    args = {"evaluate": ["evaluate", str(run)], "knn-eval": ["knn-eval", str(run)],
            "train": ["evaluate", str(run), "--split", "train"],
            "ensemble": ["ensemble", str(run), str(run), "--out", str(tmp / "ens")],
            "explain": ["explain", str(run), "--method", "occlusion", "--scorer", "knn", "--out", str(tmp / "x")],
            "explain-train": ["explain", str(run), "--method", "occlusion", "--scorer", "knn", "--split", "train",
                              "--out", str(tmp / "x")],
            "build-index": ["build-index", str(run)]}[command]
    return _run_cli_intact(run, args)


RUN_CASES = [
    Case("run-stale-index-evaluate", lambda t, tri: _damaged_run(t, tri, "stale-index"), FermetricError,
         ("stale", "index", "fermetric build-index", "-k 20 --weighting distance"), no_output="run/eval", runs=("triplet_run",)),
    Case("run-stale-index-knn-eval", lambda t, tri: _damaged_run(t, tri, "stale-index", "knn-eval"), FermetricError,
         ("stale", "fermetric build-index"), no_output="run/knn_val", runs=("triplet_run",)),
    Case("run-stale-index-ensemble", lambda t, tri: _damaged_run(t, tri, "stale-index", "ensemble"), FermetricError,
         ("stale", "fermetric build-index"), no_output="ens", runs=("triplet_run",)),
    Case("run-stale-index-explain-knn", lambda t, tri: _damaged_run(t, tri, "stale-index", "explain"), FermetricError,
         ("stale", "fermetric build-index"), no_output="x", runs=("triplet_run",)),
    Case("run-index-of-another-run", lambda t, clf, tri: _damaged_run(t, clf, "other-run-index", "knn-eval", other=tri),
         FermetricError, ("stale", "donor", "fermetric build-index"), no_output="run/knn_val",
         runs=("classifier_run", "triplet_run")),
    Case("run-index-without-fingerprint", lambda t, tri: _damaged_run(t, tri, "unstamped-index", "train"), FermetricError,
         ("stale", "did not record", "fermetric build-index"), no_output="run/eval", runs=("triplet_run",)),
    Case("run-index-truncated", lambda t, tri: _damaged_run(t, tri, "index-truncated"), FermetricError,
         ("index.faiss", "fermetric build-index"), no_output="run/eval", runs=("triplet_run",)),
    Case("run-index-meta-not-json", lambda t, tri: _damaged_run(t, tri, "index-meta", "knn-eval"), FermetricError,
         ("meta.json", "fermetric build-index"), no_output="run/knn_val", runs=("triplet_run",)),
    Case("run-index-other-classes", lambda t, tri: _damaged_run(t, tri, "index-classes"), FermetricError,
         ("ANGRY", "fermetric build-index"), no_output="run/eval", runs=("triplet_run",)),
    Case("run-explain-knn-on-gallery", lambda t, tri: _damaged_run(t, tri, "none", "explain-train"), FermetricError,
         ("--split", "match themselves"), no_output="x", runs=("triplet_run",)),
    Case("run-nan-checkpoint", lambda t, clf: _damaged_run(t, clf, "nan"), FermetricError,
         ("best.pt", "NaN/inf", "lower learning rate"), no_output="run/eval", runs=("classifier_run",)),
    Case("run-inf-checkpoint-build-index", lambda t, tri: _damaged_run(t, tri, "inf", "build-index"), FermetricError,
         ("best.pt", "NaN/inf"), no_output="run/index", runs=("triplet_run",)),
    Case("run-foreign-checkpoint", lambda t, clf, tri: _damaged_run(t, clf, "foreign", other=tri), FermetricError,
         ("best.pt", "embedding checkpoint", "classifier run", "metrics.json"), no_output="run/eval",
         runs=("classifier_run", "triplet_run")),
    Case("run-checkpoint-other-width", lambda t, clf: _damaged_run(t, clf, "arch"), FermetricError,
         ("best.pt", "config.yaml", "model.width is 16"), no_output="run/eval", runs=("classifier_run",)),
    Case("run-checkpoint-other-data", lambda t, clf: _damaged_run(t, clf, "data"), FermetricError,
         ("best.pt", "config.yaml", "data.source is 'fer2013.csv'"), no_output="run/eval", runs=("classifier_run",)),
]


# --- training: resume refusals, a run directory another process holds, divergence. A copy of the
# tiny classifier run (2 epochs, width 8, batch 32) in the case's folder; the run's files must stay as they were.

def _copy_run(tmp: Path, src: Path, prepare=None) -> Path:
    run = Path(shutil.copytree(src, tmp / "run"))
    if prepare is not None:
        prepare(run)
    return run


def _resume(tmp: Path, clf: Path, *args: str, command: str = "train-classifier", prepare=None) -> Callable[[], object]:
    run = _copy_run(tmp, clf, prepare)
    return _run_cli_intact(run, [command, "--resume", "--out", str(run), "--epochs", "3", *args])


def _nan_last(run: Path) -> None:
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    next(v for v in ck["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(ck, run / "checkpoints" / "last.pt")


def _locked(tmp: Path, clf: Path, *args: str) -> Callable[[], object]:
    """Training into tmp/run while another process (a child holding its lock) writes it."""
    run = _copy_run(tmp, clf)
    holder = hold_run_lock(run)
    go = _run_cli_intact(run, ["train-classifier", "--out", str(run), *args])

    def locked():
        try:
            go()
        finally:
            holder.kill()
            holder.wait(timeout=30)
    return locked


CLF = ("classifier_run",)
TRAINING_CASES = [
    Case("resume-other-width", lambda t, c: _resume(t, c, "--set", "model.width=16"), FermetricError,
         ("model.width is 8 in the run but 16 was given", "--out"), runs=CLF),
    Case("resume-other-model", lambda t, c: _resume(t, c, "--model", "resnet18"), FermetricError,
         ("model.name is 'baseline' in the run but 'resnet18' was given",), runs=CLF),
    Case("resume-other-data", lambda t, c: _resume(t, c, "--data", str(t / "other.csv")), FermetricError,
         ("data.source is 'synth' in the run", "other.csv"), runs=CLF),
    Case("resume-other-seed", lambda t, c: _resume(t, c, "--seed", "4"), FermetricError, ("seed is 0 in the run but 4",), runs=CLF),
    Case("resume-other-batch", lambda t, c: _resume(t, c, "--set", "train.batch_size=8"), FermetricError,
         ("train.batch_size is 32 in the run but 8",), runs=CLF),
    Case("resume-other-optimizer", lambda t, c: _resume(t, c, "--set", "optim.name=adamw"), FermetricError,
         ("optim.name is 'sgd' in the run but 'adamw'",), runs=CLF),
    Case("resume-other-augment", lambda t, c: _resume(t, c, "--set", "data.augment.hflip=0.0"), FermetricError,
         ("data.augment.hflip",), runs=CLF),
    Case("resume-other-weights", lambda t, c: _resume(t, c, "--weights", str(t / "w.pt")), FermetricError,
         ("model.weights", "w.pt"), runs=CLF),
    # (a classifier's metric.* may change on resume, fermetric.training.resume.unread_in_training)
    Case("resume-config-file", lambda t, c: (t.joinpath("c.yaml").write_text("train:\n  batch_size: 64\n"),
                                             _resume(t, c, "--config", str(t / "c.yaml")))[1],
         FermetricError, ("train.batch_size is 32 in the run but 64",), runs=CLF),
    Case("resume-no-more-epochs", lambda t, c: _resume(t, c, "--epochs", "2"), FermetricError,
         ("already trained 2 epochs;", "larger than 2"), runs=CLF),
    Case("resume-other-key-of-family", lambda t, c: _resume(t, c, "--set", "metric.m_per_class=2", command="train-triplet"),
         FermetricError, ("metric.m_per_class",), runs=CLF),
    Case("resume-other-family", lambda t, c: _resume(t, c, command="train-triplet"), FermetricError,
         ("last.pt", "it is a classifier checkpoint"), runs=CLF),
    Case("resume-not-a-run", lambda t: (t.joinpath("plain").mkdir(), _cli(["train-classifier", "--resume", "--out", str(t / "plain")]))[1],
         FermetricError, ("plain", "config.yaml"), no_output="plain/checkpoints"),
    Case("resume-without-last", lambda t, c: _resume(t, c, prepare=lambda r: (r / "checkpoints" / "last.pt").unlink()),
         FermetricError, ("last.pt", "does not exist"), runs=CLF),
    Case("resume-non-finite-last", lambda t, c: _resume(t, c, prepare=_nan_last), FermetricError,
         ("last.pt", "non-finite"), runs=CLF),
    Case("run-locked-train", lambda t, c: _locked(t, c, "--epochs", "1"), FermetricError,
         ("in use by another fermetric process (PID ", "choose another --out"), runs=CLF),
    Case("run-locked-resume", lambda t, c: _locked(t, c, "--resume", "--epochs", "3"), FermetricError,
         ("in use by another fermetric process (PID ",), runs=CLF),
    Case("threads-negative", lambda t: _cli(["--threads", "-1", "models"]), FermetricError, ("--threads", ">= 0")),
    Case("train-threads-negative", lambda t: _train(t, "--set", "train.threads=-2"), FermetricError,
         ("train.threads", ">= 0"), no_output="run"),
    Case("train-diverges", lambda t: _train(t, "--set", "optim.lr=1000000.0", "--set", "schedule.warmup_epochs=0"),
         FermetricError, ("training diverged", "optim.lr", "No epoch ended with finite weights"),
         no_output="run/checkpoints/last.pt"),
]


# --- helpers of the range, image, torch-file and CLI-path cases ---


def _set(*overrides: str) -> Callable[[], object]:
    return lambda: load_config(None, list(overrides))


def _yaml(tmp: Path, text: str) -> Callable[[], object]:
    (tmp / "c.yaml").write_text(text)
    return lambda: load_config(tmp / "c.yaml")


def _image(tmp: Path, name: str, size: tuple[int, int]) -> Path:
    from PIL import Image

    tmp.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], 90, np.uint8)).save(tmp / name)
    return tmp / name


def _read_image(path: Path) -> Callable[[], object]:
    from fermetric.data.images import read_face_image

    return lambda: read_face_image(path)


def _read_photo(path: Path) -> Callable[[], object]:
    from fermetric.inference.faces import read_photo

    return lambda: read_photo(path)


def _fifo(tmp: Path, name: str) -> Path:
    os.mkfifo(tmp / name)
    return tmp / name


def _class_folders(tmp: Path, *names: str) -> Callable[[], object]:
    root = tmp / "faces"
    for n in names:
        for i in range(2):
            _image(root / n, f"{i}.png", (48, 48))
    return _load(root)


def _torch_file(tmp: Path, kind: str) -> Path:
    p = tmp / "x.pt"
    if kind == "random":
        p.write_bytes(b"\x00" + os.urandom(999))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "state_dict":
        torch.save({"w": torch.zeros(2)}, p)
    elif kind == "objects":
        class Evil:
            def __reduce__(self):
                return (open, (str(tmp / "pwned.txt"), "w"))

        torch.save({"conv.weight": Evil()}, p)
    return p


def _checkpoint(path: Path, map_location: str = "cpu") -> Callable[[], object]:
    from fermetric.runs.checkpoint import load_checkpoint

    return lambda: load_checkpoint(path, map_location=map_location)


def _weights(path: Path) -> Callable[[], object]:
    from fermetric.models import create_model

    return lambda: create_model("baseline", width=4, weights=str(path))


def _file_then(tmp: Path, args: list[str]) -> Callable[[], object]:
    (tmp / "file").write_text("a file, not a folder")
    return _cli([a.replace("{file}", str(tmp / "file")) for a in args])



def _study(tmp: Path, text: str) -> Callable[[], object]:
    from fermetric.study.config import load_study

    (tmp / "s.yaml").write_text(text)
    return lambda: load_study(tmp / "s.yaml")


def _class_map(*items: str) -> Callable[[], object]:
    from fermetric.evaluation.crossdata import parse_class_map

    return lambda: parse_class_map(list(items))


def _noise(tmp: Path, name: str) -> Path:
    """A 300x300 noise image: searched for a face (it is larger than a crop), none found."""
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)).save(tmp / name)
    return tmp / name


STUDY_HEAD = "name: s\nmodels:\n"
# Reliability round 3 (issue 25): names are not paths, overrides address keys, files say what they mean
ROUND3_CASES = [
    Case("override-addresses-section", lambda t: _set("train=5"), ConfigError, ("train=5", "addresses the section train", "train.KEY")),
    Case("override-section-then-key", lambda t: _set("train=5", "train.epochs=3"), ConfigError, ("train=5", "section train")),
    Case("override-below-a-value", lambda t: _set("train.epochs.x=1"), ConfigError, ("train.epochs is a value",)),
    Case("yaml-repeated-key", lambda t: _yaml(t, "train:\n  epochs: 2\n  epochs: 3\n"), ConfigError,
         ("c.yaml", "'epochs' appears twice", "line 3")),
    Case("study-repeated-model", lambda t: _study(t, STUDY_HEAD + "  a: {family: classifier}\n  a: {family: triplet}\n"),
         ConfigError, ("s.yaml", "'a' appears twice", "line 4")),
    Case("study-name-escapes", lambda t: _study(t, STUDY_HEAD + "  ../../escaped: {family: classifier}\n"), ConfigError,
         ("s.yaml", "'../../escaped' is not a plain name")),
    Case("study-name-absolute", lambda t: _study(t, STUDY_HEAD + "  /srv/abs: {family: classifier}\n"), ConfigError,
         ("'/srv/abs' is not a plain name",)),
    Case("study-name-empty", lambda t: _study(t, STUDY_HEAD + "  '': {family: classifier}\n"), ConfigError, ("'' is empty",)),
    Case("study-name-number", lambda t: _study(t, STUDY_HEAD + "  1: {family: classifier}\n"), ConfigError, ("1 is not a string",)),
    Case("study-seed-bool", lambda t: _study(t, "name: s\nseeds: [true]\nmodels:\n  a: {family: classifier}\n"), ConfigError,
         ("seeds", "[True]")),
    Case("study-own-name-escapes", lambda t: _study(t, "name: ../up\nmodels:\n  a: {family: classifier}\n"), ConfigError,
         ("study name", "'../up'")),
    Case("cli-study-name-escapes", lambda t: (t.joinpath("s.yaml").write_text(STUDY_HEAD + "  ../../escaped: {family: classifier}\n"),
                                              _cli(["study", "--config", str(t / "s.yaml"), "--out", str(t / "a" / "b")]))[1],
         FermetricError, ("not a plain name",), no_output="a"),
    Case("class-map-twice", lambda t: _class_map("cats=Happy", "cats=Sad"), ConfigError, ("'cats' twice", "Happy", "Sad")),
    Case("similarity-no-face", lambda t, r: _cli(["similarity", str(r), str(_noise(t, "noise.png")), str(_noise(t, "noise.png"))]),
         FermetricError, ("noise.png", "no face found in the 300x300 image", "--no-detect"), runs=("triplet_run",)),
    Case("threads-beyond-the-machine", lambda t: _cli(["--threads", "100000", "models"]), FermetricError,
         ("--threads", "at most", "100000")),
]


CASES = [
    # --- FER2013 CSV ---
    Case("csv-header", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS},Training"], header="label,image,split")),
         DataError, ("fer.csv", "emotion")),
    Case("csv-short-pixels", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS},Training", f"1,{' '.join(['5'] * 2303)},Training"])),
         DataError, ("fer.csv", "line 3", "2304")),
    Case("csv-pixel-256", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS[:-3]}256,Training"])),
         DataError, ("fer.csv", "line 2", "256")),
    Case("csv-pixel-text", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS[:-3]}abc,Training"])),
         DataError, ("fer.csv", "line 2")),
    Case("csv-label-7", lambda t: _load(csv_file(t, [f"7,{GOOD_PIXELS},Training"])),
         DataError, ("fer.csv", "line 2", "7")),
    Case("csv-usage", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS},Validation"])),
         DataError, ("fer.csv", "line 2", "Validation", "PublicTest")),
    Case("csv-empty", lambda t: _load(csv_file(t, [], header="")), DataError, ("fer.csv",)),
    Case("csv-gz-corrupt", lambda t: (t.joinpath("f.csv.gz").write_bytes(gzip.compress(b"emotion,pixels,Usage\n")[:20]), _load(t / "f.csv.gz"))[1],
         DataError, ("f.csv.gz",)),
    Case("data-not-csv", lambda t: (t.joinpath("x.txt").write_text("hi"), _load(t / "x.txt"))[1], DataError, ("x.txt", "csv")),
    Case("data-missing", lambda t: _load(t / "nope"), DataError, ("nope", "does not exist")),
    # --- folders and images ---
    Case("folder-corrupt-image", _corrupt_image_folder, DataError, ("broken.jpg",)),
    Case("folder-empty-class", _empty_class_folder, DataError, ("angry",)),
    Case("folder-no-classes", lambda t: (t.joinpath("flat").mkdir(), _load(t / "flat"))[1], DataError, ("flat",)),
    Case("ferplus-on-folder", lambda t: _load(fake_image_folder(t), ferplus=str(t / "f.csv")), DataError, ("fer2013.csv",)),
    Case("ferplus-bad-columns", lambda t: _load(csv_file(t, [f"0,{GOOD_PIXELS},Training"]),
                                               ferplus=str(csv_file(t, ["a,b"], header="x,y", name="plus.csv"))),
         DataError, ("plus.csv",)),
    # --- configs ---
    Case("config-unknown-key", lambda t: (t.joinpath("c.yaml").write_text("train:\n  epoch: 3\n"), lambda: load_config(t / "c.yaml"))[1],
         ConfigError, ("c.yaml", "train.epoch", "epochs")),
    Case("config-bad-yaml", lambda t: (t.joinpath("c.yaml").write_text("train: [1,\n"), lambda: load_config(t / "c.yaml"))[1],
         ConfigError, ("c.yaml", "YAML")),
    Case("config-bad-type", lambda t: lambda: load_config(None, ["train.batch_size=big"]), ConfigError, ("train.batch_size", "integer")),
    Case("config-missing-file", lambda t: lambda: load_config(t / "none.yaml"), ConfigError, ("none.yaml", "does not exist")),
    # --- CLI arguments (training leaves no run directory behind) ---
    Case("cli-unknown-model", lambda t: _train(t, "--model", "resnet7"), FermetricError, ("resnet7", "resnet18"), no_output="run"),
    Case("cli-unknown-optimizer", lambda t: _train(t, "--set", "optim.name=adam"), FermetricError, ("optim.name", "adamw"), no_output="run"),
    Case("cli-bad-schedule", lambda t: _train(t, "--set", "schedule.name=step"), FermetricError, ("schedule.name", "cosine"), no_output="run"),
    Case("cli-unknown-loss", lambda t: _train(t, "--set", "metric.loss=Magic", command="train-triplet"),
         FermetricError, ("Magic", "TripletMarginLoss"), no_output="run"),
    Case("cli-resume-without-out", lambda t: _cli(["train-classifier", "--resume"]), FermetricError, ("--resume", "--out")),
    Case("cli-not-a-run", lambda t: (t.joinpath("plain").mkdir(), _cli(["evaluate", str(t / "plain")]))[1], FermetricError, ("plain", "config.yaml")),
    Case("cli-bad-method", lambda t: _cli(["explain-eval", str(t), "--methods", "magic"]), FermetricError, ("magic",)),
    Case("cli-bad-override", lambda t: _train(t, "--set", "train.epochs"), FermetricError, ("train.epochs", "section.key=value"), no_output="run"),
    # --- models and checkpoints ---
    Case("weights-mismatch", _other_class_count_weights, ModelError, ("w.pt",)),
    # --- config ranges: every numeric key is checked, naming key, value and allowed range ---
    Case("range-lr-zero", lambda t: _set("optim.lr=0"), ConfigError, ("optim.lr=0", "> 0")),
    Case("range-lr-negative-in-file", lambda t: _yaml(t, "optim:\n  lr: -0.1\n"), ConfigError, ("c.yaml", "optim.lr=-0.1")),
    Case("range-batch-size-zero", lambda t: _set("train.batch_size=0"), ConfigError, ("train.batch_size=0", ">= 1")),
    Case("range-eval-batch-negative", lambda t: _set("train.eval_batch_size=-8"), ConfigError, ("train.eval_batch_size=-8",)),
    Case("range-epochs-negative", lambda t: _set("train.epochs=-3"), ConfigError, ("train.epochs=-3", ">= 1")),
    Case("range-label-smoothing-one", lambda t: _set("train.label_smoothing=1.0"), ConfigError, ("train.label_smoothing=1.0", "[0, 1)")),
    Case("range-margin-negative", lambda t: _set("metric.margin=-0.2"), ConfigError, ("metric.margin=-0.2",)),
    Case("range-warmup-negative", lambda t: _set("schedule.warmup_epochs=-1"), ConfigError, ("schedule.warmup_epochs=-1",)),
    Case("range-mixup-negative", lambda t: _set("train.mixup_alpha=-0.5"), ConfigError, ("train.mixup_alpha=-0.5",)),
    Case("range-knn-k-zero", lambda t: _set("metric.knn_k=0"), ConfigError, ("metric.knn_k=0", ">= 1")),
    Case("range-m-per-class-one", lambda t: _set("metric.m_per_class=1"), ConfigError, ("metric.m_per_class=1", ">= 2")),
    Case("range-nan", lambda t: _set("optim.weight_decay=.nan"), ConfigError, ("optim.weight_decay=nan", "finite")),
    Case("range-inf", lambda t: _set("train.grad_clip=.inf"), ConfigError, ("train.grad_clip=inf", "finite")),
    Case("range-tuple-element", lambda t: _set("optim.betas=[0.9, 1.5]"), ConfigError, ("optim.betas[1]=1.5", "[0, 1)")),
    Case("range-probability", lambda t: _set("data.augment.hflip=1.5"), ConfigError, ("data.augment.hflip=1.5", "[0, 1]")),
    Case("range-val-fraction-one", lambda t: _set("data.val_fraction=1"), ConfigError, ("data.val_fraction=1",)),
    Case("range-width-zero", lambda t: _set("model.width=0"), ConfigError, ("model.width=0",)),
    Case("range-dropout-one", lambda t: _set("model.dropout=1"), ConfigError, ("model.dropout=1",)),
    Case("range-seed-negative", lambda t: _set("seed=-1"), ConfigError, ("seed=-1",)),
    Case("range-plateau-factor", lambda t: _set("schedule.plateau_factor=1.5"), ConfigError, ("schedule.plateau_factor=1.5", "(0, 1)")),
    Case("range-erasing-area-order", lambda t: _set("data.augment.erasing_area=[0.5, 0.1]"), ConfigError, ("erasing_area", "minimum 0.5")),
    Case("range-min-lr-above-lr", lambda t: _set("schedule.min_lr=0.1"), ConfigError, ("schedule.min_lr=0.1", "optim.lr=0.05")),
    Case("config-ferplus-mode-unknown", lambda t: _set("data.ferplus_mode=votes"), ConfigError, ("data.ferplus_mode='votes'", "crossentropy")),
    Case("config-ferplus-mode-without-ferplus", lambda t: _set("data.ferplus_mode=probability"), ConfigError,
         ("data.ferplus_mode=probability", "--ferplus")),
    Case("config-nested-too-deep", lambda t: _yaml(t, "train: " + "[" * 20000 + "\n"), ConfigError, ("c.yaml", "nested too deeply")),
    # --- CLI: numbers and paths checked before any work (no run directory left) ---
    Case("cli-lr-zero", lambda t: _train(t, "--set", "optim.lr=0"), FermetricError, ("optim.lr=0", "> 0"), no_output="run"),
    Case("cli-label-smoothing", lambda t: _train(t, "--set", "train.label_smoothing=2"), FermetricError,
         ("train.label_smoothing=2",), no_output="run"),
    Case("cli-epochs-zero", lambda t: _train(t, "--epochs", "0"), FermetricError, ("--epochs", "0"), no_output="run"),
    Case("cli-seed-negative", lambda t: _train(t, "--seed", "-5"), FermetricError, ("--seed", "-5"), no_output="run"),
    Case("cli-knn-k-zero", lambda t: _cli(["knn-eval", str(t), "-k", "0"]), FermetricError, ("--k", "0")),
    Case("cli-lime-samples", lambda t: _cli(["explain-eval", str(t), "--lime-samples", "1"]), FermetricError, ("--lime-samples", "1")),
    Case("cli-ferplus-without-data", lambda t: (t.joinpath("fp.csv").write_text("x"), _train(t, "--ferplus", str(t / "fp.csv")))[1],
         FermetricError, ("fp.csv", "SynthFER", "--data"), no_output="run"),
    Case("cli-out-below-a-file", lambda t: _file_then(t, ["train-classifier", "--out", "{file}/run"]), FermetricError,
         ("--out", "is a file, not a folder")),
    Case("cli-report-out-below-a-file", lambda t: _file_then(t, ["report", str(t), "--out", "{file}/r.html"]), FermetricError,
         ("--out", "is a file, not a folder")),
    # --- images: special files never opened, tiny images refused, class folders that collide ---
    Case("image-fifo", lambda t: _read_image(_fifo(t, "pipe.jpg")), DataError, ("pipe.jpg", "FIFO")),
    Case("photo-fifo", lambda t: _read_photo(_fifo(t, "pipe.jpg")), DataError, ("pipe.jpg", "FIFO")),
    Case("image-1x1", lambda t: _read_image(_image(t, "dot.png", (1, 1))), DataError, ("dot.png", "1x1", "8x8")),
    Case("photo-1x1", lambda t: _read_photo(_image(t, "dot.png", (1, 1))), DataError, ("dot.png", "1x1", "8x8")),
    Case("photo-thin", lambda t: _read_photo(_image(t, "line.png", (300, 4))), DataError, ("line.png", "300x4")),
    Case("folder-tiny-image", lambda t: (_image(t / "faces" / "sad", "tiny.png", (4, 4)), _image(t / "faces" / "happy", "ok.png", (48, 48)),
                                         _load(t / "faces"))[2], DataError, ("tiny.png", "4x4")),
    Case("folder-classes-differ-in-case", lambda t: _class_folders(t, "happy", "Happy", "sad"), DataError,
         ("'Happy'", "'happy'", "differ only in case")),
    Case("folder-classes-differ-in-separator", lambda t: _class_folders(t, "very happy", "very_happy", "sad"), DataError,
         ("'very happy'", "'very_happy'")),
    Case("data-fifo", lambda t: _load(_fifo(t, "fer.csv")), DataError, ("fer.csv", "FIFO")),
    Case("data-huge-header", lambda t: (t.joinpath("big.csv").write_text("x" * 100_000 + "\n"), _load(t / "big.csv"))[1],
         DataError, ("big.csv", "more characters")),
    Case("ferplus-on-synthfer", lambda t: _load("synth", ferplus=str(t / "fp.csv")), DataError, ("fp.csv", "SynthFER")),
    # --- torch files: the real cause named (not "arbitrary objects" for random bytes, not "truncated" for a device) ---
    Case("checkpoint-random-bytes", lambda t: _checkpoint(_torch_file(t, "random")), CheckpointError, ("x.pt", "not a torch file")),
    Case("checkpoint-empty", lambda t: _checkpoint(_torch_file(t, "empty")), CheckpointError, ("x.pt", "empty")),
    Case("checkpoint-fifo", lambda t: _checkpoint(_fifo(t, "x.pt")), CheckpointError, ("x.pt", "not a regular file")),
    Case("checkpoint-device", lambda t: _checkpoint(_torch_file(t, "state_dict"), "nodevice"), CheckpointError,
         ("x.pt", "device 'nodevice'", "--device cpu")),
    Case("checkpoint-plain-state-dict", lambda t: _checkpoint(_torch_file(t, "state_dict")), CheckpointError,
         ("x.pt", "not a fermetric checkpoint", "train-classifier --weights")),
    Case("weights-random-bytes", lambda t: _weights(_torch_file(t, "random")), CheckpointError, ("x.pt", "not a torch file")),
    Case("weights-objects", lambda t: _weights(_torch_file(t, "objects")), CheckpointError, ("x.pt", "arbitrary Python objects")),
    # --- index files ---
    Case("index-labels", lambda t: _index(t, "labels"), CheckpointError, ("labels.npy",)),
    Case("index-missing-file", lambda t: _index(t, "missing"), CheckpointError, ("labels.npy",)),
    Case("index-dimension", lambda t: _index(t, "dim"), CheckpointError, ("meta.json",)),
    Case("index-truncated", lambda t: _index(t, "truncated"), CheckpointError, ("index",)),
] + RUN_CASES + TRAINING_CASES + ROUND3_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, request):
    action = case.build(tmp_path, *[request.getfixturevalue(name) for name in case.runs])
    with pytest.raises(case.error) as err:
        action()
    msg = str(err.value)
    for fragment in case.fragments:
        assert fragment in msg, f"{case.id}: {fragment!r} not in message: {msg}"
    assert "Traceback" not in msg
    assert len(msg) <= MAX_MESSAGE + 120, f"{case.id}: a {len(msg)}-character message"
    assert not (tmp_path / "pwned.txt").exists()
    if case.no_output:
        assert not (tmp_path / case.no_output).exists(), f"{case.id}: partial output left in {case.no_output}"


@pytest.mark.parametrize("kind", ["malicious", "truncated"])
def test_bad_checkpoints_in_runs(kind: str, tmp_path: Path, classifier_run: Path):
    if kind == "malicious":
        with pytest.raises(CheckpointError, match="arbitrary Python objects"):
            _malicious_run(tmp_path, classifier_run)()
        assert not (tmp_path / "pwned.txt").exists()
    else:
        with pytest.raises(FermetricError, match="truncated"):
            _truncated_run(tmp_path, classifier_run)()


def test_suite_is_large_enough():
    assert len(CASES) + 2 >= 80


def test_ensemble_refuses_members_of_other_data(tmp_path: Path, classifier_run: Path):
    """Runs trained on SynthFER drawn with another seed hold other val faces: voting them against the
    first run's labels would report a wrong result as a success (issue 25)."""
    from conftest import TINY_TRAIN_ARGS

    other = tmp_path / "seed1"
    run_cli(["train-classifier", "--model", "baseline", "--epochs", "1", "--seed", "1", "--out", str(other), *TINY_TRAIN_ARGS])
    res = run_cli(["ensemble", str(classifier_run), str(other), "--out", str(tmp_path / "ens")], expect=2)
    assert "not trained on the same data" in res.output and "seed 1" in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "ens").exists()
