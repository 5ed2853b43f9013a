"""Expressions over a video: `fermetric predict video.mp4`.

Frames are read with OpenCV (its wheels carry FFmpeg: mp4, avi, mov, mkv, webm), every `every`-th
frame is searched for faces exactly as a photo is (fermetric.inference.faces), each face is cropped
and predicted by the run's FacePredictor (its TTA and calibration, as for photos), and faces are
followed from frame to frame by position (`FaceTracker`: a face keeps its number while its box
overlaps the one it had, IoU >= 0.3, with gaps of up to one second). Written, all or nothing:

- `<stem>_frames.csv`: one row per face per analysed frame: frame, time, face number, box,
  predicted class, the probability of every class (and, with smoothing, the smoothed label);
- `<stem>_timeline.png`: each face's class probabilities over time (smoothed over `smooth`
  seconds, a centred moving average, when asked);
- `<stem>_annotated.mp4` (`annotate`): the video with each face's box, number, label and
  probability;
- `<stem>_video.json`: the video (frames, fps, size), the settings, the faces found and the
  analysis speed (frames per second).

A file that is not a video, a video without frames, or one in which no face is found is refused
with one line, and nothing is written.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from fermetric.errors import DataError
from fermetric.inference.boxes import box_iou
from fermetric.inference.faces import (DEFAULT_MARGIN, DETECTOR_NAMES, crop_face, detect_faces, detector_image,
                                       resolve_detector)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MIN_IOU = 0.3  # a face keeps its number while its box overlaps its last one at least this much
MAX_GAP_SECONDS = 1.0  # ... and is not lost for longer than this


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class FaceTracker:
    """Face numbers across frames by position: each new box takes the number of the live track it
    overlaps most (IoU >= min_iou; greedy, best pairs first), else a new number. A track not seen
    for more than `max_gap` frames ends."""

    max_gap: int
    min_iou: float = MIN_IOU
    tracks: dict[int, tuple[tuple[int, int, int, int], int]] = field(default_factory=dict)  # id -> (box, frame)
    next_id: int = 1

    def assign(self, frame: int, boxes: list[tuple[int, int, int, int]]) -> list[int]:
        live = {t: v for t, v in self.tracks.items() if frame - v[1] <= self.max_gap}
        pairs = sorted(((float(box_iou(b, [v[0]])[0]), i, t) for i, b in enumerate(boxes) for t, v in live.items()),
                       reverse=True)
        ids: list[Optional[int]] = [None] * len(boxes)
        taken: set[int] = set()
        for iou, i, t in pairs:
            if iou < self.min_iou:
                break
            if ids[i] is None and t not in taken:
                ids[i] = t
                taken.add(t)
        for i in range(len(boxes)):
            if ids[i] is None:
                ids[i], self.next_id = self.next_id, self.next_id + 1
        for i, b in zip(ids, boxes):
            live[i] = (b, frame)
        self.tracks = live
        return [int(i) for i in ids]


@dataclass
class VideoResult:
    """What predict_video found: per-face rows, the video's facts and the files written."""

    path: Path
    fps: float
    frames: int
    analysed: int
    size: tuple[int, int]
    class_names: tuple[str, ...]
    rows: list[dict[str, Any]]
    seconds: float
    settings: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def faces(self) -> list[int]:
        return sorted({r["face"] for r in self.rows})

    def to_json(self) -> dict[str, Any]:
        per_face = {}
        for f in self.faces:
            rows = [r for r in self.rows if r["face"] == f]
            labels = [r["label"] for r in rows]
            per_face[str(f)] = {"frames": len(rows), "first_s": rows[0]["time_s"], "last_s": rows[-1]["time_s"],
                                "most_frequent": max(set(labels), key=labels.count)}
        return {"video": str(self.path), "fps": self.fps, "frames": self.frames, "analysed_frames": self.analysed,
                "frames_with_faces": len({r["frame"] for r in self.rows}), "size": list(self.size),
                "class_names": list(self.class_names), "faces": per_face, "seconds": round(self.seconds, 2),
                "analysed_frames_per_second": round(self.analysed / self.seconds, 2) if self.seconds > 0 else None,
                "settings": self.settings, "files": [str(p) for p in self.files]}


def open_video(path: str | Path):
    """(cv2.VideoCapture, fps, frame count, (width, height)), or a one-line DataError."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such video file")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise DataError(f"{p}: not a video OpenCV can read (mp4, avi, mov, mkv, webm through its FFmpeg)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return cap, (fps if 0 < fps < 1000 else 25.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), size


def predict_video(predictor: Any, path: str | Path, out_dir: Optional[Path], *, every: int = 1, min_face: int = 40,
                  margin: float = DEFAULT_MARGIN, smooth: float = 0.0, annotate: bool = False,
                  progress: Optional[Callable[[int], Any]] = None, detector: str = "auto") -> VideoResult:
    """Predict the faces of every `every`-th frame of a video and write the outputs into `out_dir`
    (a new staging folder the caller moves into place; None: write nothing).

    Args:
        predictor: a FacePredictor (its TTA and calibration apply to every face).
        every: analyse one frame in `every` (1: all).
        smooth: seconds of the centred moving average of each face's probabilities drawn in the
            timeline and given as `label_smoothed` in the CSV (0: none).
        annotate: also write the video with boxes and labels.
        detector: "auto", "blazeface" or "haar" (fermetric.inference.faces.resolve_detector).
        progress: called with the number of frames read so far (e.g. a tqdm's update).

    Raises:
        DataError: not a video, no frames, or no face in any analysed frame.
    """
    import cv2

    if every < 1:
        raise DataError(f"every must be >= 1 (analyse one frame in N); got {every}")
    if smooth < 0:
        raise DataError(f"smooth must be >= 0 seconds; got {smooth}")
    path = Path(path)
    detector = resolve_detector(detector)
    cap, fps, count, size = open_video(path)
    tracker = FaceTracker(max_gap=max(1, int(round(MAX_GAP_SECONDS * fps))))
    rows: list[dict[str, Any]] = []
    writer, last_faces = None, []
    t0, frame, analysed = time.perf_counter(), 0, 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if frame % every == 0:
                analysed += 1
                gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                seen = detector_image(detector, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), gray)
                boxes = detect_faces(seen, min_face=min_face, detector=detector)
                last_faces = []
                if boxes:
                    crops = np.stack([crop_face(gray, b, margin=margin)[0] for b in boxes])
                    probs = predictor.predict_proba(crops)
                    for b, face, p in zip(boxes, tracker.assign(frame, boxes), probs):
                        lid = int(p.argmax())
                        rows.append({"frame": frame, "time_s": round(frame / fps, 4), "face": face,
                                     "x": b[0], "y": b[1], "w": b[2], "h": b[3],
                                     "label": predictor.class_names[lid], "probability": float(p[lid]),
                                     "probabilities": p.astype(np.float64)})
                        last_faces.append((b, face, predictor.class_names[lid], float(p[lid])))
            if annotate and out_dir is not None:
                if writer is None:
                    writer = _video_writer(out_dir / f"{path.stem}_annotated.mp4", fps, bgr.shape[1], bgr.shape[0])
                writer.write(_draw(bgr, last_faces))
            frame += 1
            if progress is not None:
                progress(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - t0
    if frame == 0:
        raise DataError(f"{path}: the video has no frame OpenCV can decode")
    if not rows:
        raise DataError(f"{path}: no face found in any of the {analysed} frame(s) analysed (faces of at least "
                        f"{min_face} px, frontal); try a smaller --min-face or --every 1")
    settings = {"every": every, "min_face": min_face, "margin": margin, "smooth_seconds": smooth, "tta": predictor.tta,
                "calibration": predictor.calibration, "tracking": f"IoU >= {MIN_IOU}, gaps <= {MAX_GAP_SECONDS} s",
                "detector": DETECTOR_NAMES[detector], "run": str(predictor.run.path)}
    result = VideoResult(path=path, fps=fps, frames=frame, analysed=analysed, size=size,
                         class_names=tuple(predictor.class_names), rows=rows, seconds=seconds, settings=settings)
    if smooth > 0:
        _smooth_labels(result, max(1, int(round(smooth * fps / every))))
    if out_dir is not None:
        result.files = _write(result, out_dir, annotate)
    return result


def _video_writer(path: Path, fps: float, width: int, height: int):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write an mp4 video here")
    return writer


def _draw(bgr: np.ndarray, faces: list) -> np.ndarray:
    import cv2

    img = bgr.copy()
    for (x, y, w, h), face, label, p in faces:
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 215, 255), 2)
        cv2.putText(img, f"{face}: {label} {p * 100:.0f}%", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, w / 250), (0, 215, 255), 1, cv2.LINE_AA)
    return img


def _moving_average(p: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the rows of (T, C), shorter at the ends."""
    if window <= 1 or len(p) < 2:
        return p
    c = np.cumsum(np.vstack([np.zeros((1, p.shape[1])), p]), axis=0)
    half = window // 2
    lo = np.clip(np.arange(len(p)) - half, 0, len(p))
    hi = np.clip(np.arange(len(p)) + window - half, 0, len(p))
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


def _break_gaps(t: np.ndarray, q: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(t, q) with a NaN row inserted wherever the face went unseen for more than one analysed
    frame (`step` seconds apart), so a timeline's lines stop there instead of bridging the gap."""
    gaps = np.flatnonzero(np.diff(t) > 1.5 * step) + 1
    if not len(gaps):
        return t, q
    return (np.insert(t.astype(float), gaps, np.nan),
            np.insert(q.astype(float), gaps, np.full(q.shape[1], np.nan), axis=0))


def _face_series(result: VideoResult, face: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    rows = [r for r in result.rows if r["face"] == face]
    return np.array([r["time_s"] for r in rows]), np.stack([r["probabilities"] for r in rows]), rows


def _smooth_labels(result: VideoResult, window: int) -> None:
    for face in result.faces:
        _, p, rows = _face_series(result, face)
        for r, q in zip(rows, _moving_average(p, window)):
            r["label_smoothed"] = result.class_names[int(q.argmax())]


def _write(result: VideoResult, out: Path, annotate: bool) -> list[Path]:
    from fermetric.plotting import save_figure
    from fermetric.utils.io import write_json

    stem = result.path.stem
    files = [out / f"{stem}_frames.csv", out / f"{stem}_timeline.png"]
    smoothed = result.settings["smooth_seconds"] > 0
    with open(files[0], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "face", "x", "y", "w", "h", "label", "probability"]
                   + (["label_smoothed"] if smoothed else []) + [f"p_{c}" for c in result.class_names])
        for r in result.rows:
            w.writerow([r["frame"], r["time_s"], r["face"], r["x"], r["y"], r["w"], r["h"], r["label"],
                        f"{r['probability']:.6f}"] + ([r["label_smoothed"]] if smoothed else [])
                       + [f"{v:.6f}" for v in r["probabilities"]])
    save_figure(_timeline(result), files[1])
    if annotate:
        files.append(out / f"{stem}_annotated.mp4")
    files.append(out / f"{stem}_video.json")
    write_json(files[-1], {**result.to_json(), "files": [f.name for f in files]})
    return files


TIMELINE_FACES = 4  # the faces seen in the most frames get a panel each


def _timeline(result: VideoResult):
    import matplotlib.pyplot as plt

    faces = sorted(result.faces, key=lambda f: -sum(r["face"] == f for r in result.rows))[:TIMELINE_FACES]
    window = max(1, int(round(result.settings["smooth_seconds"] * result.fps / result.settings["every"])))
    fig, axes = plt.subplots(len(faces), 1, figsize=(9, 2.4 * len(faces)), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, face in zip(axes[:, 0], sorted(faces)):
        t, p, _ = _face_series(result, face)
        t, q = _break_gaps(t, _moving_average(p, window), result.settings["every"] / result.fps)
        for c, name in enumerate(result.class_names):
            ax.plot(t, q[:, c], color=colours(c), label=name, lw=1.4)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"face {face}\nprobability")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    smooth = result.settings["smooth_seconds"]
    fig.suptitle(f"{result.path.name}: expression probabilities per face"
                 + (f" (moving average over {smooth:g} s)" if smooth > 0 else ""))
    fig.tight_layout()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.subplots_adjust(right=0.84)  # the classes' legend to the right of the panels
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    return fig
