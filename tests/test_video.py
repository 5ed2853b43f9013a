"""`fermetric predict video.mp4` (issue 26): per-frame CSV with faces followed by position, the
timeline, the annotated video; bad input gets one line and no output."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from fermetric.inference.boxes import box_iou
from fermetric.inference.video import FaceTracker, _moving_average

FRAMES, FPS = 12, 6.0


def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def two_faces_clip(tmp_path_factory) -> Path:
    """Two copies of the bundled astronaut photo side by side, drifting right by 2 px a frame,
    with two blank frames in the middle (the faces must keep their numbers across the gap)."""
    import cv2

    from fermetric.data.bundled import bundled_faces

    photo = cv2.imread(str(bundled_faces()[0].photo))
    pair = np.concatenate([photo, np.full_like(photo, 128)[:, :40], photo], axis=1)
    frames = []
    for i in range(FRAMES):
        canvas = np.full((pair.shape[0] + 20, pair.shape[1] + 40, 3), 128, np.uint8)
        if i not in (5, 6):
            canvas[10:10 + pair.shape[0], 2 * i:2 * i + pair.shape[1]] = pair
        frames.append(canvas)
    return write_clip(tmp_path_factory.mktemp("video") / "two_faces.mp4", frames)


def test_video_frames_csv_timeline_and_annotated_video(classifier_run, two_faces_clip, tmp_path):
    import cv2

    out = tmp_path / "pred"
    res = run_cli(["predict", str(classifier_run), str(two_faces_clip), "--out", str(out), "--annotate",
                   "--smooth", "0.5", "--tta", "none"])
    assert "2 face(s) followed" in res.output, res.output
    rows = list(csv.DictReader((out / "two_faces_frames.csv").open()))
    assert {int(r["frame"]) for r in rows} == set(range(FRAMES)) - {5, 6}
    # the left face is face 1 in every frame, the right one face 2, across the blank frames too
    for frame in {r["frame"] for r in rows}:
        faces = sorted((int(r["x"]), int(r["face"])) for r in rows if r["frame"] == frame)
        assert [f for _, f in faces] == [1, 2]
    for r in rows:
        p = np.array([float(r[k]) for k in r if k.startswith("p_")])
        assert p.shape == (7,) and abs(p.sum() - 1) < 1e-4 and r["label_smoothed"] and r["label"]
        assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / FPS, abs=1e-3)
    info = json.loads((out / "two_faces_video.json").read_text())
    assert info["frames"] == FRAMES and info["frames_with_faces"] == FRAMES - 2 and set(info["faces"]) == {"1", "2"}
    assert info["analysed_frames_per_second"] > 0 and (out / "two_faces_timeline.png").stat().st_size > 0
    cap = cv2.VideoCapture(str(out / "two_faces_annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    cap.release()
    # every other frame: half the frames analysed, the same faces
    res = run_cli(["predict", str(classifier_run), str(two_faces_clip), "--out", str(tmp_path / "every2"),
                   "--every", "2", "--tta", "none"])
    rows = list(csv.DictReader((tmp_path / "every2" / "two_faces_frames.csv").open()))
    assert {int(r["frame"]) for r in rows} == {0, 2, 4, 8, 10} and {r["face"] for r in rows} == {"1", "2"}


def test_bad_videos_get_one_line_and_no_output(classifier_run, two_faces_clip, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    blank = write_clip(tmp_path / "blank.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 4)
    for video, message in ((fake, "not a video"), (blank, "no face found in any of the 4 frame")):
        out = tmp_path / f"out-{video.stem}"
        res = run_cli(["predict", str(classifier_run), str(video), "--out", str(out)], expect=2)
        assert message in res.output and not out.exists(), res.output
    res = run_cli(["predict", str(classifier_run), str(two_faces_clip), str(fake), "--out", str(tmp_path / "x")], expect=2)
    assert "one video at a time" in res.output
    res = run_cli(["predict", str(classifier_run), str(blank.with_suffix(".png")), "--every", "2"], expect=2)
    assert "are for a video" in res.output


def test_tracker_and_smoothing_by_hand():
    assert box_iou((0, 0, 10, 10), [(5, 0, 10, 10), (0, 0, 10, 10)]) == pytest.approx([50 / 150, 1.0])
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)).tolist() == [0.0]
    t = FaceTracker(max_gap=2)
    assert t.assign(0, [(0, 0, 10, 10), (50, 0, 10, 10)]) == [1, 2]
    assert t.assign(1, [(52, 0, 10, 10), (1, 0, 10, 10)]) == [2, 1]  # by position, not by order
    assert t.assign(4, [(2, 0, 10, 10)]) == [3]  # lost for 3 frames > max_gap: a new face
    p = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert np.allclose(_moving_average(p, 3), [[0.5, 0.5], [2 / 3, 1 / 3], [2 / 3, 1 / 3], [1.0, 0.0]])
    assert np.array_equal(_moving_average(p, 1), p)


def test_a_timeline_line_stops_where_the_face_was_not_seen():
    from fermetric.inference.video import _break_gaps

    t = np.array([0.0, 0.04, 0.08, 1.0, 1.04])  # seen, seen, seen, a 0.92 s gap, seen
    q = np.arange(10, dtype=float).reshape(5, 2)
    t2, q2 = _break_gaps(t, q, 0.04)
    assert np.isnan(t2[3]) and np.isnan(q2[3]).all() and len(t2) == 6
    assert np.array_equal(q2[[0, 1, 2, 4, 5]], q) and np.array_equal(t2[[0, 1, 2, 4, 5]], t)
    t3, q3 = _break_gaps(t[:3], q[:3], 0.04)  # no gap: unchanged
    assert t3 is not None and np.array_equal(t3, t[:3]) and np.array_equal(q3, q[:3])
