"""The BlazeFace face detector (fermetric.inference.blazeface) and the choice between it and the
Haar cascade (fermetric.inference.faces.resolve_detector): anchors, decoding and weighted NMS by
hand, the tile pyramid's coverage, the shipped graph's integrity, both runtimes, real faces at
several scales, and the fallback to Haar."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is needed for face detection")

from fermetric.data.bundled import bundled_faces  # noqa: E402
from fermetric.errors import DataError, FermetricError  # noqa: E402
import fermetric.inference.blazeface as bf  # noqa: E402
import fermetric.inference.faces as faces  # noqa: E402


def test_anchors_follow_mediapipes_short_range_layout():
    a = bf.anchors()
    assert a.shape == (896, 2)
    # 16x16 cells with 2 anchors each, then 8x8 cells with 6 each, row by row, centred in the cell
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_decode_by_hand():
    reg = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -10.0, np.float32)
    k = 600  # an anchor of the 8x8 grid
    logits[0, k, 0] = 3.0  # sigmoid 0.9526
    reg[0, k, :4] = [12.8, -6.4, 32.0, 64.0]  # offsets and size in input pixels (128)
    (boxes, scores), = bf.decode(reg, logits)
    ax, ay = bf.anchors()[k]
    assert boxes.shape == (1, 4)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-3.0))])
    cx, cy, w, h = ax + 0.1, ay - 0.05, 0.25, 0.5
    np.testing.assert_allclose(boxes[0], [cx - w / 2, cy - h / 2, w, h], atol=1e-6)
    # below the threshold: nothing
    logits[0, k, 0] = 0.0  # 0.5 < SCORE_THRESHOLD
    assert len(bf.decode(reg, logits)[0][0]) == 0


def test_weighted_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 10, 10]], float)
    scores = np.array([0.6, 0.9, 0.8])
    out, s = bf.weighted_nms(boxes, scores)
    # the two overlapping boxes (IoU 0.82) merge into their score-weighted mean, with the best score
    np.testing.assert_allclose(out[0], [(0 * 0.6 + 1 * 0.9) / 1.5, 0, 10, 10])
    np.testing.assert_allclose(out[1], boxes[2])
    np.testing.assert_allclose(s, [0.9, 0.8])
    empty, s = bf.weighted_nms(np.zeros((0, 4)), np.zeros(0))
    assert empty.shape == (0, 4) and s.shape == (0,)


@pytest.mark.parametrize("size", [(640, 480), (1280, 886), (300, 900), (200, 150)])
def test_tile_pyramid_holds_every_face_whole_at_a_scale_the_network_sees(size):
    """Every square face of min_face px or more lies whole inside a tile in which it fills at least
    FACE_SHARE and at most LARGEST_IN_TILE (the level that keeps it), or is the whole photo's."""
    w, h = size
    min_face = 40
    tiles = bf.tile_pyramid(w, h, min_face)
    assert tiles[0] == bf.Tile(0, 0, max(w, h), 0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        f = int(rng.integers(min_face, min(w, h) + 1))
        x, y = int(rng.integers(0, w - f + 1)), int(rng.integers(0, h - f + 1))
        ok = [t for t in tiles if t.x <= x and t.y <= y and x + f <= t.x + t.side and y + f <= t.y + t.side
              and (t.level == 0 or bf.FACE_SHARE * 0.999 <= f / t.side <= bf.LARGEST_IN_TILE)]
        assert ok, (size, f, x, y)
        # and the face fills enough of the finest tile that holds it for the network to see it
        assert max(f / t.side for t in ok) >= min(bf.FACE_SHARE, f / max(w, h)) * 0.999


def test_the_shipped_graph_is_checked_and_an_altered_one_refused(tmp_path):
    assert bf.GRAPH.is_file() and (bf.GRAPH.parent / "LICENSE-Apache-2.0.txt").is_file()
    bad = tmp_path / "g.onnx"
    data = bytearray(bf.GRAPH.read_bytes())
    data[-100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(FermetricError, match="missing or altered"):
        bf.BlazeFace(bad)
    with pytest.raises(FermetricError, match="missing or altered"):
        bf.BlazeFace(tmp_path / "none.onnx")
    with pytest.raises(FermetricError, match="runtime"):
        bf.BlazeFace(runtime="tensorflow")


def test_both_runtimes_give_the_same_outputs_and_faces():
    pytest.importorskip("onnxruntime", reason="onnxruntime (fermetric[fast]) runs the graph faster; compared with OpenCV's dnn")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 128, 128)).astype(np.float32)
    ort_net, cv_net = bf.BlazeFace(runtime="onnxruntime", threads=1), bf.BlazeFace(runtime="opencv-dnn")
    for a, b in zip(ort_net.network(x), cv_net.network(x)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3)
    rgb = faces.read_photo(bundled_faces()[0].photo).rgb
    (ba, sa), (bb, sb) = ort_net(rgb), cv_net(rgb)
    np.testing.assert_allclose(ba, bb, atol=0.05)
    np.testing.assert_allclose(sa, sb, atol=1e-4)


def _canvas(photo: np.ndarray, side: int, shape=(960, 1280), at=(500, 700)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo resized to `side` and pasted at `at` (y, x) of a gray canvas; returns it and the
    pasted square (x, y, side, side)."""
    canvas = np.full((*shape, 3), 90, np.uint8)
    y, x = at
    canvas[y:y + side, x:x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    return canvas, (x, y, side, side)


@pytest.mark.parametrize("side", [600, 300, 150, 90])
def test_finds_the_bundled_face_at_every_scale_down_to_min_face(side):
    """The bundled photo (a 192 px head and shoulders, the face ~45 % of it) shrunk into a 1280x960
    canvas: found once, inside the pasted photo, whether the face is ~270 px or ~40 px."""
    photo = faces.read_photo(bundled_faces()[0].photo).rgb
    canvas, (x, y, s, _) = _canvas(photo, side, at=(960 - side - 10, 1280 - side - 10) if side > 300 else (500, 700))
    boxes = faces.detect_faces(canvas, min_face=30, detector="blazeface")
    assert len(boxes) == 1, boxes
    bx, by, bw, bh = boxes[0]
    assert x <= bx + bw / 2 <= x + s and y <= by + bh / 2 <= y + s
    assert 0.3 * s <= bw <= 0.7 * s  # the face, not the photo


def test_no_face_in_a_blank_or_noisy_image():
    rng = np.random.default_rng(0)
    noisy = cv2.GaussianBlur((rng.random((480, 640)) * 60 + 100).astype(np.uint8), (0, 0), 3)
    for img in (np.full((300, 400, 3), 128, np.uint8), noisy):
        assert faces.detect_faces(img, detector="blazeface") == []


def test_bundled_photo_same_face_with_both_detectors():
    """BlazeFace's boxes are framed as FER2013's: on the bundled photo, near the Haar cascade's."""
    photo = faces.read_photo(bundled_faces()[0].photo)
    (b,) = faces.detect_faces(photo.rgb, detector="blazeface")
    (h,) = faces.detect_faces(photo.gray, detector="haar")
    assert abs((b[0] + b[2] / 2) - (h[0] + h[2] / 2)) < 0.15 * h[2]
    assert abs((b[1] + b[3] / 2) - (h[1] + h[3] / 2)) < 0.15 * h[2]
    assert 0.8 < b[2] / h[2] < 1.35
    # the gray image works too (replicated to three channels)
    assert len(faces.detect_faces(photo.gray, detector="blazeface")) == 1


def test_auto_falls_back_to_haar_when_blazeface_cannot_load(monkeypatch):
    def broken(runtime=None):
        raise FermetricError("graph missing")

    faces.resolve_detector.cache_clear()
    monkeypatch.setattr(bf, "load_blazeface", broken)
    try:
        with pytest.warns(UserWarning, match="Haar"):
            assert faces.resolve_detector("auto") == "haar"
        with pytest.raises(FermetricError, match="BlazeFace.*graph missing"):
            faces.resolve_detector("blazeface")
        photo = faces.read_photo(bundled_faces()[0].photo)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mode, found = faces.find_faces(photo)
        assert mode == "detected" and len(found) == 1  # Haar found it
    finally:
        faces.resolve_detector.cache_clear()
    with pytest.raises(DataError, match="detector must be one of"):
        faces.resolve_detector("mtcnn")


def test_predict_loads_the_detector_only_to_search_a_photo(monkeypatch, classifier_run, tmp_path):
    """A batch of crops never loads a detector (its settings name none); a detector asked for by
    name that cannot load is refused before anything is written."""
    from PIL import Image

    from fermetric.inference import FacePredictor, predict_images

    def broken(runtime=None):
        raise FermetricError("graph missing")

    faces.resolve_detector.cache_clear()
    monkeypatch.setattr(bf, "load_blazeface", broken)
    try:
        crop = tmp_path / "crop.png"
        Image.fromarray(np.full((48, 48), 120, np.uint8)).save(crop)
        pred = FacePredictor.from_run_dir(classifier_run, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto would warn if it tried BlazeFace
            batch = predict_images(pred, [crop], None)
        assert batch.n_faces == 1 and batch.settings["detector"] is None
        out = tmp_path / "out"
        with pytest.raises(FermetricError, match="graph missing"):
            predict_images(pred, [crop, bundled_faces()[0].photo], out, detector="blazeface")
        assert not out.exists()
        with pytest.raises(DataError, match="detector must be one of"):
            predict_images(pred, [crop], None, detector="mtcnn")
    finally:
        faces.resolve_detector.cache_clear()


def test_auto_is_blazeface_here():
    faces.resolve_detector.cache_clear()
    assert faces.resolve_detector("auto") == "blazeface"


def test_the_graphs_provenance_and_hash_are_written_down():
    """Where the graph comes from is beside it, and the pinned hash is the shipped file's (the
    script that makes it needs the network and tflite2onnx, so it is not rerun here)."""
    import hashlib

    readme = (bf.GRAPH.parent / "README.md").read_text()
    assert "face_detection_short_range.tflite" in readme and "Apache" in readme
    assert "scripts/make_face_detector.py" in readme
    assert hashlib.sha256(bf.GRAPH.read_bytes()).hexdigest() == bf.GRAPH_SHA256
