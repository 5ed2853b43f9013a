"""`fermetric predict` on photos: face detection, crops, probabilities, annotated images, and the
handling of bad inputs (exit codes and messages, never a traceback).

The runs are conftest's session fixtures `classifier_run` and `triplet_run` (tiny, SynthFER);
nothing here writes into them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fermetric.cli import main
from fermetric.errors import DataError
from fermetric.inference import (
    CROP_MAX_SIDE,
    FacePredictor,
    crop_face,
    detect_faces,
    expand_inputs,
    predict_images,
    read_photo,
    whole_image_crop,
)
from fermetric.scoring.run import run_scorer

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed for face detection")

FACE_SIZE = 200
PASTE_AT = (120, 260)  # (y, x) of the pasted face's top-left corner


def compose(face48: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 480x640 'photo': the face upscaled to 200 px, pasted at PASTE_AT on a textured background."""
    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur((rng.random((480, 640)) * 60 + 100).astype(np.uint8), (0, 0), 3)
    y, x = PASTE_AT
    bg[y:y + FACE_SIZE, x:x + FACE_SIZE] = cv2.resize(face48, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_CUBIC)
    return bg


def _near_paste(box, tol: float = 0.3) -> bool:
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    px, py = PASTE_AT[1] + FACE_SIZE / 2, PASTE_AT[0] + FACE_SIZE / 2
    return abs(cx - px) < tol * FACE_SIZE and abs(cy - py) < tol * FACE_SIZE and 0.5 * FACE_SIZE < w < 1.5 * FACE_SIZE


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """photo.jpg (a SynthFER face the detector finds, scaled up), crop.png (48x48), corrupt.jpg,
    blank.png (no face)."""
    from fermetric.data.synthetic import load_synthfer

    d = tmp_path_factory.mktemp("photos")
    faces = load_synthfer(n_train=30, n_val=1, n_test=1, seed=3)["train"].images[:, 0].numpy()
    for i, face in enumerate(faces):
        photo = compose(face)
        if any(_near_paste(b) for b in detect_faces(photo)):
            break
    else:
        pytest.fail("the face detector found none of 30 SynthFER faces scaled to 200 px")
    Image.fromarray(np.stack([photo] * 3, axis=2)).save(d / "photo.jpg", quality=95)
    Image.fromarray(faces[i]).save(d / "crop.png")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    Image.fromarray(np.full((300, 400), 128, np.uint8)).save(d / "blank.png")
    return d


# -- geometry and reading ------------------------------------------------------------------------

def test_crop_face_is_a_centred_square_padded_at_the_edges():
    img = np.arange(100 * 120, dtype=np.int64).reshape(100, 120).astype(np.uint8)
    crop, cb = crop_face(img, (40, 30, 20, 40), margin=0.5)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    x0, y0, x1, y1 = cb
    assert x1 - x0 == y1 - y0 == 60  # 1.5 x the longer side
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (50, 50)  # same centre as the box
    # a box at the corner: the crop reaches outside and edge pixels are repeated
    corner = np.zeros((50, 50), np.uint8)
    corner[:, :5] = 255
    crop, cb = crop_face(corner, (0, 0, 20, 20), margin=1.0)
    assert cb[0] < 0 and cb[1] < 0
    assert crop[:, 0].min() == 255  # left padding repeats the white edge column
    with pytest.raises(DataError, match="margin"):
        crop_face(img, (0, 0, 10, 10), margin=-0.1)


def test_whole_image_crop_keeps_a_48px_crop_and_centres_others():
    a = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    crop, cb = whole_image_crop(a)
    assert np.array_equal(crop, a) and cb == (0, 0, 48, 48)
    crop, cb = whole_image_crop(np.zeros((40, 60), np.uint8))
    assert crop.shape == (48, 48) and cb == (10, 0, 50, 40)


def test_read_photo_handles_modes_and_rejects_bad_files(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)  # the smallest images read are 8x8
    rgba[..., 0] = 255  # red, fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    p = read_photo(tmp_path / "a.png")
    assert p.size == (12, 10) and p.rgb.shape == (10, 12, 3) and p.gray.dtype == np.uint8
    assert p.gray.min() == 255
    g16 = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800)
    Image.fromarray(g16).save(tmp_path / "b.png")
    p = read_photo(tmp_path / "b.png")
    # scaled by the 16-bit range, not clipped: the same conversion as data-set images
    expected = np.round(g16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    assert np.array_equal(p.gray, expected) and p.gray.max() == 246
    (tmp_path / "c.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"c\.jpg: not an image"):
        read_photo(tmp_path / "c.jpg")
    with pytest.raises(DataError, match="no such file"):
        read_photo(tmp_path / "missing.png")
    with pytest.raises(DataError, match="directory"):
        read_photo(tmp_path)


def test_expand_inputs_reports_missing_and_empty(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "sub/a.JPG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs([tmp_path / "imgs", tmp_path / "empty", tmp_path / "nope.png"])
    assert [f.name for f in files] == ["b.png", "a.JPG"]
    assert [p.name for p, _ in problems] == ["empty", "nope.png"]
    assert "no images" in problems[0][1] and "no such file" in problems[1][1]


@pytest.mark.slow
@pytest.mark.parametrize("detector, share", [("haar", 0.6), ("blazeface", 0.85)])
def test_detectors_find_fer2013_faces_where_they_were_pasted(folder_sample, detector, share):
    """Real faces: most FER2013 sample faces, scaled to 200 px on a textured background, are found
    at the right place, with few boxes elsewhere (on 400 PublicTest faces BlazeFace found 96 % and
    Haar 80 %: scripts/bench_predict.py)."""
    files = sorted(folder_sample.rglob("*.jpg"))
    hits = false_boxes = 0
    for i, f in enumerate(files):
        boxes = detect_faces(compose(np.asarray(Image.open(f).convert("L")), seed=i), detector=detector)
        near = [_near_paste(b) for b in boxes]
        hits += any(near)
        false_boxes += len(near) - sum(near)
    assert hits >= share * len(files), f"found {hits} of {len(files)}"
    assert false_boxes <= 0.1 * len(files)


# -- prediction ----------------------------------------------------------------------------------

def test_predictor_matches_the_model_softmax(classifier_run, photo_dir):
    pred = FacePredictor.from_run_dir(classifier_run, device="cpu")
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    p = pred.predict_proba(crops)
    with torch.no_grad():
        ref = torch.softmax(pred.model.eval()(torch.from_numpy(crops)[:, None].float() / 255), 1).numpy()
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    # a 48x48 file is predicted whole: exactly the probabilities of its pixels
    batch = predict_images(pred, [photo_dir / "crop.png"], None)
    face = batch.images[0].faces[0]
    assert batch.images[0].mode == "whole image"
    crop = np.asarray(Image.open(photo_dir / "crop.png").convert("L"))
    np.testing.assert_allclose(face.probabilities, pred.predict_proba(crop[None])[0])


def test_predict_averages_over_the_tta_views_the_cards_report(classifier_run, photo_dir, tmp_path):
    """`fermetric predict` scores each face as the run's TTA scorer does (DEFAULT_TTA, what the zoo's
    cards call the TTA accuracy); --tta none is the one-pass softmax."""
    from fermetric.api import predict
    from fermetric.inference.predictor import DEFAULT_TTA
    from fermetric.runs import load_run

    crop = np.asarray(Image.open(photo_dir / "crop.png").convert("L"))
    x = torch.from_numpy(crop)[None, None].float() / 255
    run = load_run(classifier_run, device="cpu")
    with_tta = predict(classifier_run, [photo_dir / "crop.png"], tmp_path / "a", device="cpu")
    ref = run_scorer(run, "classifier", tta=DEFAULT_TTA, compile=False).scores(x).numpy()[0]
    np.testing.assert_allclose(with_tta.images[0].faces[0].probabilities, ref, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "a" / "predictions.json").read_text())["settings"]["tta"] == DEFAULT_TTA
    plain = predict(classifier_run, [photo_dir / "crop.png"], tmp_path / "b", tta=None, device="cpu")
    ref = run_scorer(run, "classifier", compile=False).scores(x).numpy()[0]
    np.testing.assert_allclose(plain.images[0].faces[0].probabilities, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(with_tta.images[0].faces[0].probabilities, plain.images[0].faces[0].probabilities)
    res = CliRunner().invoke(main, ["-q", "predict", str(classifier_run), str(photo_dir / "crop.png"), "--tta", "none",
                                    "--out", str(tmp_path / "c")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    face = json.loads((tmp_path / "c" / "predictions.json").read_text())["images"][0]["faces"][0]
    np.testing.assert_allclose(list(face["probabilities"].values()), plain.images[0].faces[0].probabilities, atol=2e-6)


def test_triplet_runs_predict_with_knn_votes(triplet_run, photo_dir):
    pred = FacePredictor.from_run_dir(triplet_run, device="cpu")
    assert pred.kind == "embedding"
    batch = predict_images(pred, [photo_dir / "photo.jpg", photo_dir / "crop.png"], None)
    assert len(batch.images) == 2 and not batch.errors
    for r in batch.images:
        for f in r.faces:
            emb = pred.model(torch.from_numpy(f.crop)[None, None].float() / 255).detach().numpy()
            np.testing.assert_allclose(f.probabilities, pred.knn().predict_proba(emb)[0], atol=1e-6)
            assert abs(f.probabilities.sum() - 1) < 1e-5


def test_cli_predict_photo_crop_and_bad_files(classifier_run, photo_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", str(classifier_run), str(photo_dir), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output + res.stderr
    # the batch went past the bad files and named them
    assert "skipped " + str(photo_dir / "corrupt.jpg") in res.stderr
    assert "blank.png: no face found" in res.stderr
    assert "Traceback" not in res.output + res.stderr
    data = json.loads((out / "predictions.json").read_text())
    names = data["class_names"]
    by_name = {Path(r["path"]).name: r for r in data["images"]}
    assert set(by_name) == {"photo.jpg", "crop.png"}
    assert {Path(e["path"]).name for e in data["errors"]} == {"corrupt.jpg", "blank.png"}
    photo = by_name["photo.jpg"]
    assert photo["mode"] == "detected" and (photo["width"], photo["height"]) == (640, 480)
    assert any(_near_paste(f["box"]) for f in photo["faces"])
    assert by_name["crop.png"]["mode"] == "whole image" and by_name["crop.png"]["faces"][0]["box"] == [0, 0, 48, 48]
    for r in data["images"]:
        for f in r["faces"]:
            probs = f["probabilities"]
            assert list(probs) == names
            assert abs(sum(probs.values()) - 1) < 1e-4
            assert f["label"] == max(probs, key=probs.get) == names[f["label_id"]]
            assert abs(f["probability"] - probs[f["label"]]) < 1e-5
        ann = Image.open(r["annotated"])
        assert ann.size[0] >= r["width"] and ann.mode == "RGB"
    assert str(out / "predictions.json") in res.output


def test_cli_predict_saliency_overlay_changes_the_face_only(classifier_run, photo_dir, tmp_path):
    args = ["-q", "predict", str(classifier_run), str(photo_dir / "photo.jpg"), "--device", "cpu"]
    r1 = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    r2 = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--saliency"])
    assert r1.exit_code == r2.exit_code == 0, r1.output + r2.output
    a = np.asarray(Image.open(tmp_path / "a" / "photo_pred.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "b" / "photo_pred.png"), dtype=np.int16)
    x0, y0, x1, y1 = json.loads((tmp_path / "b" / "predictions.json").read_text())["images"][0]["faces"][0]["crop_box"]
    diff = np.abs(a - b).sum(axis=2) > 0
    assert diff[max(0, y0):y1, max(0, x0):x1].any()
    diff[max(0, y0):y1, max(0, x0):x1] = False
    assert not diff.any()  # nothing outside the crop square changes


@pytest.mark.parametrize("inputs, message", [
    (["blank.png"], "no face found"),
    (["corrupt.jpg"], "corrupt.jpg: "),
    (["empty_dir"], "directory has no images"),
    (["missing.png"], "no such file"),
])
def test_cli_predict_nothing_predicted_exits_1(classifier_run, photo_dir, tmp_path, inputs, message):
    (tmp_path / "empty_dir").mkdir()
    paths = [str(photo_dir / i) if (photo_dir / i).exists() else str(tmp_path / i) for i in inputs]
    res = CliRunner().invoke(main, ["predict", str(classifier_run), *paths, "--out", str(tmp_path / "o")])
    assert res.exit_code == 1, res.output + res.stderr
    assert message in res.stderr and "error: no prediction" in res.stderr
    assert "Traceback" not in res.output + res.stderr and isinstance(res.exception, SystemExit)


def test_cli_predict_no_detect_and_bad_run(classifier_run, photo_dir, tmp_path):
    res = CliRunner().invoke(main, ["-q", "predict", str(classifier_run), str(photo_dir / "blank.png"), "--no-detect",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "predictions.json").read_text())["images"][0]["mode"] == "whole image"
    runs = tmp_path / "runs"  # the folder above a run, given as RUN
    (runs / "clf" / "checkpoints").mkdir(parents=True)
    res = CliRunner().invoke(main, ["predict", str(runs), str(photo_dir / "photo.jpg")])
    assert res.exit_code == 2 and "is not a run directory but holds runs" in res.stderr, res.output
    broken = tmp_path / "broken"  # a run without its config fails as a run
    (broken / "checkpoints").mkdir(parents=True)
    res = CliRunner().invoke(main, ["predict", str(broken), str(photo_dir / "photo.jpg")])
    assert res.exit_code == 2 and "not a fermetric run directory" in res.stderr, res.output
    res = CliRunner().invoke(main, ["predict", str(classifier_run), str(photo_dir), "--no-detect", "--detect-small"])
    assert res.exit_code == 2 and "contradict" in res.stderr
    assert CROP_MAX_SIDE == 64


def test_cli_predict_refuses_tiny_images_and_fifos(classifier_run, tmp_path):
    import os

    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(tmp_path / "dot.png")
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would hang the command
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", str(classifier_run), str(tmp_path / "dot.png"), str(tmp_path / "pipe.jpg"),
                                    "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 1, res.output  # nothing predicted is a failure, never a confident answer
    assert "dot.png" in res.output and "1x1" in res.output
    assert "pipe.jpg" in res.output and "FIFO" in res.output
    assert "Traceback" not in res.output


def test_predict_takes_a_folder_of_images(tmp_path, classifier_run):
    """`predict [RUN] photos/`: a folder (not a run) is a batch of images; other files are skipped and counted."""
    from PIL import Image

    from conftest import run_cli

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 48), 60 + 50 * i, np.uint8)).save(photos / f"{i}.png")
    (photos / "notes.txt").write_text("not an image")
    res = run_cli(["predict", str(classifier_run), str(photos), "--out", str(tmp_path / "p")])
    assert "2 image(s) predicted" in res.output and "1 file(s) in the folders given are not images" in res.output
    res = run_cli(["predict", "--model", "fer2013-baseline", str(photos), "--out", str(tmp_path / "q")])
    assert "2 image(s) predicted" in res.output
    res = run_cli(["predict", str(photos), "--out", str(tmp_path / "r")])  # the default model, the folder as images
    assert "2 image(s) predicted" in res.output, res.output
