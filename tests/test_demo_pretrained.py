"""`fermetric demo --pretrained` on tiny zoo entries ($FERMETRIC_ZOO), and the bundled real face."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fermetric.data.bundled import bundled_faces
from fermetric.errors import ConfigError


@pytest.fixture
def zoo_env(tiny_zoo, monkeypatch, tmp_path):
    monkeypatch.setenv("FERMETRIC_ZOO", str(tiny_zoo))
    monkeypatch.setenv("FERMETRIC_CACHE", str(tmp_path / "cache"))
    return tiny_zoo


def test_bundled_face_loads_with_its_label():
    faces = bundled_faces()
    astronaut = next(f for f in faces if f.name == "astronaut")
    assert astronaut.label == "Happy" and astronaut.label_id == 3  # FER2013 id of Happy
    img = astronaut.image()
    assert img.shape == (48, 48) and img.dtype == np.uint8 and img.std() > 20  # a picture, not a flat patch
    assert astronaut.crop.stat().st_size < 10_000 and astronaut.photo.stat().st_size < 20_000
    assert (astronaut.crop.parent / "README.md").read_text().count("public domain")


def test_bundled_photo_gives_the_bundled_crop_through_predicts_detection():
    """The photo goes through predict's detection path and yields exactly the shipped crop."""
    from fermetric.inference.faces import DEFAULT_MARGIN, crop_face, detect_faces, read_photo

    face = bundled_faces()[0]
    photo = read_photo(face.photo)
    assert photo.size[0] > 64  # large enough that predict searches it for a face
    boxes = detect_faces(photo.gray, min_face=40)
    assert len(boxes) == 1
    crop, _ = crop_face(photo.gray, boxes[0], margin=DEFAULT_MARGIN)
    assert np.array_equal(crop, face.image())


def test_demo_pretrained_writes_figures_and_report(zoo_env, tmp_path, classifier_run):
    from fermetric.runs import load_run

    photo = tmp_path / "me.png"  # a user's face crop (<= 64 px: used whole, as predict does)
    Image.fromarray(load_run(classifier_run, device="cpu").load_data()["val"].images[0, 0].numpy()).save(photo)
    out = tmp_path / "demo"
    res = run_cli(["demo", "--pretrained", "--model", "tiny-clf", str(photo), str(tmp_path / "missing.jpg"),
                   "--methods", "gradcam,lime", "--lime-samples", "60", "--out", str(out)])
    assert "bundled: astronaut:" in res.output and "(known: Happy)" in res.output
    assert "skipped" in res.output and "missing.jpg" in res.output
    for group in ("bundled", "synthfer", "photos"):
        for method in ("gradcam", "lime"):
            assert (out / "explain" / f"{method}_{group}.png").is_file(), (group, method)
            assert np.load(out / "explain" / f"{method}_{group}.npy").shape[1:] == (48, 48)
    rec = json.loads((out / "demo.json").read_text())
    assert rec["model"] == "tiny-clf" and rec["groups"]["bundled"]["faces"][0]["label"] == "Happy"
    assert len(rec["groups"]["synthfer"]["faces"]) == 7 and len(rec["groups"]["photos"]["faces"]) == 1
    assert (out / "predict" / "astronaut_photo_pred.png").is_file()  # the bundled photo went through detection
    html = (out / "report.html").read_text()
    assert "Pretrained model tiny-clf" in html and "gradcam_bundled" in html and "astronaut" in html
    # the predicted class and probability shown are predict's
    from fermetric.api import predict

    batch = predict("tiny-clf", [photo], out=None, device="cpu")
    shown = rec["groups"]["photos"]["faces"][0]
    assert shown["prediction"] == batch.images[0].faces[0].label
    assert shown["probability"] == pytest.approx(batch.images[0].faces[0].probabilities.max(), abs=1e-6)
    # a second demo into the same folder is refused, the first left as it was
    before = (out / "report.html").read_bytes()
    res = run_cli(["demo", "--pretrained", "--model", "tiny-clf", "--out", str(out)], expect=2)
    assert "already exists and is not empty" in res.output
    assert (out / "report.html").read_bytes() == before


def test_demo_pretrained_on_an_embedding_entry(zoo_env, tmp_path):
    """An embedding entry: kNN-vote predictions, prototype-scorer maps; no SynthFER with --per-class 0."""
    from fermetric.api import demo_pretrained

    res = demo_pretrained("tiny-tri", out=tmp_path / "d", synth_per_class=0, methods=("gradcam", "occlusion"),
                          device="cpu")
    assert set(res["groups"]) == {"bundled"} and res["scorer"] == "PrototypeScorer"
    assert res["groups"]["bundled"]["methods"] == ["gradcam", "occlusion"]
    assert (tmp_path / "d" / "report.html").is_file()


def test_demo_pretrained_without_an_installed_model_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("FERMETRIC_ZOO", str(tmp_path / "empty-zoo"))
    res = run_cli(["demo", "--pretrained", "--out", str(tmp_path / "d")], expect=2)
    assert "default pretrained model 'fer2013-baseline' is not installed" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
    res = run_cli(["demo", "--pretrained", "--model", "nope", "--out", str(tmp_path / "d")], expect=2)
    assert "no pretrained model named 'nope'" in res.output and not (tmp_path / "d").exists()


def test_demo_options_that_train_are_refused_with_pretrained(tmp_path):
    res = run_cli(["demo", "--pretrained", "--epochs", "2", "--out", str(tmp_path / "d")], expect=2)
    assert "--epochs: --pretrained trains nothing" in res.output
    res = run_cli(["demo", str(tmp_path / "face.png"), "--out", str(tmp_path / "d")], expect=2)
    assert "add --pretrained" in res.output
    res = run_cli(["demo", "--per-class", "2", "--out", str(tmp_path / "d")], expect=2)
    assert "--per-class belongs to --pretrained" in res.output
    assert not (tmp_path / "d").exists()
    # the training demo still reads its own options (it stops here, before training: the folder
    # holds files that are not a study's)
    (tmp_path / "old" / "classifier" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "classifier" / "checkpoints" / "last.pt").write_bytes(b"x")
    res = run_cli(["demo", "--model", "resnet18", "--epochs", "1", "--out", str(tmp_path / "old")], expect=2)
    assert "already holds files fermetric did not write (classifier)" in res.output
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["classifier"]


def test_demo_pretrained_bad_arguments(zoo_env, tmp_path):
    from fermetric.api import demo_pretrained

    with pytest.raises(ConfigError, match="unknown or none"):
        demo_pretrained("tiny-clf", out=tmp_path / "a", methods=("saliency", "nope"))
    with pytest.raises(ConfigError, match="nothing to explain"):
        demo_pretrained("tiny-clf", out=tmp_path / "b", bundled=False, synth_per_class=0)
    with pytest.raises(ConfigError, match="no face to explain"):
        demo_pretrained("tiny-clf", [tmp_path / "missing.jpg"], out=tmp_path / "c", bundled=False, synth_per_class=0)
    assert not (tmp_path / "c").exists()  # no half-written demo left
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no face to explain"):
        demo_pretrained("tiny-clf", [tmp_path / "missing.jpg"], out=tmp_path / "empty", bundled=False, synth_per_class=0)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
