"""Cross-data-set evaluation (evaluate / knn-eval RUN --data OTHER) and ten-crop TTA."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.evaluation.crossdata import map_classes
from fermetric.scoring import resolve_tta, tencrop_offsets, tta_views
from tests.conftest import run_cli
from fermetric.scoring.run import dataset_predictions, split_proba

FER = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


def test_ckplus_names_map_by_emotion_and_contempt_is_unknown():
    m = map_classes(["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"], FER)
    assert m.target == {"anger": "Angry", "contempt": None, "disgust": "Disgust", "fear": "Fear", "happy": "Happy",
                        "sadness": "Sad", "surprise": "Surprise"}
    assert m.how["anger"] == "synonym" and m.how["happy"] == "same name"
    assert m.unknown == ["contempt"] and m.absent == ["Neutral"]
    assert list(m.index) == [0, -1, 1, 2, 3, 4, 5]
    assert any("contempt -> (unknown" in line for line in m.lines())


def test_ferplus_names_onto_fer2013_and_back():
    ferplus = ("Neutral", "Happiness", "Surprise", "Sadness", "Anger", "Disgust", "Fear", "Contempt")
    m = map_classes(ferplus, FER)
    assert m.target["Happiness"] == "Happy" and m.target["Anger"] == "Angry" and m.target["Contempt"] is None
    back = map_classes(FER, ferplus)
    assert back.target["Sad"] == "Sadness" and back.absent == ["Contempt"]


def test_class_map_overrides_and_errors():
    m = map_classes(["joy", "grumpy", "contempt"], FER, ["grumpy=Angry", "joy="])
    assert m.target == {"joy": None, "grumpy": "Angry", "contempt": None}
    assert m.how["grumpy"] == m.how["joy"] == "--class-map"
    with pytest.raises(ConfigError, match="data's classes are: joy"):
        map_classes(["joy"], FER, ["happy=Happy"])
    with pytest.raises(ConfigError, match="model's classes are"):
        map_classes(["joy"], FER, ["joy=Glad"])
    with pytest.raises(ConfigError, match="DATA_CLASS=MODEL_CLASS"):
        map_classes(["joy"], FER, ["joy"])
    with pytest.raises(ConfigError, match="none of the data's classes"):
        map_classes(["cat", "dog"], FER)


@pytest.fixture(scope="module")
def ck_folder(tmp_path_factory) -> Path:
    """A CK+-style folder (anger / happiness / sadness / contempt) of SynthFER faces."""
    from PIL import Image

    from fermetric.data.synthetic import load_synthfer

    ds = load_synthfer(n_train=70, n_val=7, n_test=140, seed=11)["test"]
    root = tmp_path_factory.mktemp("ck") / "CK+"
    folders = {0: "anger", 3: "happiness", 4: "sadness", 1: "contempt"}  # Disgust faces stand in for contempt
    for i in range(len(ds)):
        name = folders.get(int(ds.labels[i]))
        if name is not None:
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i, 0].numpy()).save(root / name / f"{i}.png")
    return root


def test_evaluate_on_another_data_set(classifier_run, ck_folder, tmp_path):
    res = run_cli(["evaluate", str(classifier_run), "--data", str(ck_folder), "--out", str(tmp_path)])
    assert "anger -> Angry (synonym)" in res.output and "contempt -> (unknown to the model" in res.output
    m = json.loads((tmp_path / "CK_all.json").read_text())
    cross = m["cross_data"]
    n_contempt = len(list((ck_folder / "contempt").iterdir()))
    assert cross["left_out"] == {"contempt": n_contempt} and cross["n_scored"] == cross["n_images"] - n_contempt
    assert m["n"] == cross["n_scored"] and m["class_names"] == list(FER)
    support = {c: v["support"] for c, v in m["per_class"].items()}
    assert support["Angry"] == len(list((ck_folder / "anger").iterdir())) and support["Disgust"] == 0
    # the same images scored directly by the run agree with the file
    from fermetric.evaluation.crossdata import load_other_data
    from fermetric.runs import load_run

    r = load_run(classifier_run)
    ds, _, _ = load_other_data(r, str(ck_folder))
    keep = [i for i in range(len(ds)) if ds.class_names[int(ds.labels[i])] != "contempt"]
    pred, _ = dataset_predictions(r, ds.subset(keep))
    truth = [FER.index({"anger": "Angry", "happiness": "Happy", "sadness": "Sad"}[ds.class_names[int(ds.labels[i])]])
             for i in keep]
    assert m["accuracy"] == pytest.approx(float(np.mean(pred == np.array(truth))))


def test_knn_eval_on_another_data_set(triplet_run, ck_folder, tmp_path):
    res = run_cli(["knn-eval", str(triplet_run), "--data", str(ck_folder), "--class-map", "contempt=Disgust",
                   "--out", str(tmp_path)])
    assert "contempt -> Disgust (--class-map)" in res.output
    rep = json.loads((tmp_path / "knn_report.json").read_text())
    assert rep["cross_data"]["left_out"] == {} and rep["n_query"] == rep["cross_data"]["n_images"]


def test_class_map_needs_data(classifier_run):
    res = run_cli(["evaluate", str(classifier_run), "--class-map", "a=Angry"], expect=2)
    assert "--data" in res.output


def test_tencrop_views_sit_at_the_training_crop_offsets():
    x = torch.zeros(1, 1, 48, 48)
    x[0, 0, 20, 30] = 1.0
    views = tta_views(x, "tencrop", crop_padding=4)
    assert len(views) == 10
    # crop at offset (dy, dx) shows the pixel moved by (-dy, -dx); odd views are the flips
    where = [tuple(int(v) for v in torch.nonzero(views[i][0, 0])[0]) for i in range(0, 10, 2)]
    assert where == [(20, 30), (24, 34), (24, 26), (16, 34), (16, 26)]
    assert torch.equal(views[1], views[0].flip(-1))
    assert tencrop_offsets(2)[1] == (-2, -2)
    with pytest.raises(ConfigError, match="without random crops"):
        tencrop_offsets(0)
    assert resolve_tta(True) == "shift" and resolve_tta(False) is None and resolve_tta("tencrop") == "tencrop"
    with pytest.raises(ConfigError, match="unknown TTA"):
        resolve_tta("twelve")


def test_evaluate_tencrop_differs_from_shift_and_is_the_mean_of_its_views(classifier_run, tmp_path):
    from fermetric.runs import load_run

    run_cli(["evaluate", str(classifier_run), "--tta", "tencrop", "--split", "test", "--out", str(tmp_path)])
    m = json.loads((tmp_path / "test_tencrop.json").read_text())
    assert m["tta"] == "tencrop"
    r = load_run(classifier_run)
    x = r.load_data()["test"].float_images()
    with torch.no_grad():
        r.model.eval()
        probs = torch.stack([torch.softmax(r.model(v), 1) for v in tta_views(x, "tencrop", r.crop_padding)]).mean(0)
    assert np.allclose(split_proba(r, "test", tta="tencrop"), probs.numpy(), atol=1e-5)
    assert not np.allclose(split_proba(r, "test", tta="tencrop"), split_proba(r, "test", tta="shift"))
