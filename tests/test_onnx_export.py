"""`fermetric export RUN --format onnx` (issue 26): the folder predicts with ONNX Runtime alone (no
torch imported) what fermetric predicts; an embedding model's gallery and card give its kNN vote;
bad input is refused with one line and leaves nothing behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("onnxruntime", reason="the ONNX export is optional: pip install 'fermetric[fast]'")

# what the README's example does, in a process where importing torch fails
ORT_ONLY = """
import json, sys
sys.modules["torch"] = None  # onnxruntime alone: an import of torch would fail here
import numpy as np, onnxruntime as ort
folder, faces = sys.argv[1], np.load(sys.argv[2])
card = json.load(open(f"{folder}/card.json"))
session = ort.InferenceSession(f"{folder}/model.onnx")
out = session.run(None, {"images": faces.astype(np.float32)[:, None] / 255})[0]
if card["kind"] == "embedding":  # the kNN vote the card describes, over the exported gallery
    g = np.load(f"{folder}/gallery.npz")
    knn = card["knn"]
    sims = out @ g["embeddings"].T
    top = np.argsort(-sims, axis=1)[:, :knn["k"]]
    s = np.take_along_axis(sims, top, 1)
    w = np.exp((s - s.max(1, keepdims=True)) / knn["temperature"]) if knn["weighting"] == "distance" else np.ones_like(s)
    votes = np.zeros((len(out), len(card["class_names"])))
    for c in range(votes.shape[1]):
        votes[:, c] = (w * (g["labels"][top] == c)).sum(1)
    out = votes / votes.sum(1, keepdims=True)
np.save(sys.argv[3], out)
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))


def _faces(run_dir: Path, n: int = 40) -> np.ndarray:
    from fermetric.runs import load_run

    return load_run(run_dir, device="cpu").load_data()["val"].images[:n, 0].numpy()


def _ort_only(folder: Path, faces: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "faces.npy", faces)
    subprocess.run([sys.executable, "-c", ORT_ONLY, str(folder), str(tmp_path / "faces.npy"), str(tmp_path / "out.npy")],
                   check=True, capture_output=True, text=True)
    return np.load(tmp_path / "out.npy")


def test_classifier_export_predicts_what_predict_gives(classifier_run, tmp_path):
    from fermetric.inference import FacePredictor
    from fermetric.inference.predictor import DEFAULT_TTA
    from fermetric.runs import load_run

    out = tmp_path / "clf-onnx"
    res = run_cli(["export", str(classifier_run), "--out", str(out)])
    assert "largest difference from PyTorch" in res.output
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "classifier" and card["tta"] == DEFAULT_TTA and card["checked"]["max_abs_diff"] <= 1e-4
    faces = _faces(classifier_run)
    got = _ort_only(out, faces, tmp_path)
    want = FacePredictor(load_run(classifier_run, device="cpu", precision="fp32"), tta=DEFAULT_TTA).predict_proba(faces)
    assert np.abs(got - want).max() <= 1e-4 and (got.argmax(1) == want.argmax(1)).all()


def test_embedding_export_votes_like_the_knn_scorer(triplet_run, tmp_path):
    from fermetric.runs import load_run
    from fermetric.scoring.run import run_scorer

    out = tmp_path / "tri-onnx"
    run_cli(["export", str(triplet_run), "--out", str(out)])
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "embedding" and {"k", "weighting", "temperature"} <= set(card["knn"])
    faces = _faces(triplet_run)
    got = _ort_only(out, faces, tmp_path)
    want = run_scorer(load_run(triplet_run, device="cpu", precision="fp32"), "knn").scores(faces[:, None]).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_bad_exports_are_refused_and_leave_nothing(classifier_run, tmp_path, tiny_ensemble_zoo, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    res = run_cli(["export", str(classifier_run), "--out", str(taken)], expect=2)
    assert "did not write" in res.output and sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_ensemble_zoo))
    res = run_cli(["export", "tiny-ens", "--out", str(tmp_path / "ens")], expect=2)
    assert "export its members" in res.output and not (tmp_path / "ens").exists()
    res = run_cli(["export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "x")], expect=2)
    assert not (tmp_path / "x").exists()
