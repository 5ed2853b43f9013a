"""BlazeFace, MediaPipe's short-range face detector, run over a pyramid of tiles.

The graph (`detector/blazeface_short_range.onnx`, Apache-2.0, see detector/README.md) is MediaPipe's
`face_detection_short_range.tflite` converted once to ONNX by `scripts/make_face_detector.py`. It
takes a 128x128 RGB image scaled to [-1, 1] and gives, for each of 896 fixed anchors, a face score
(logit) and a box + 6 keypoints relative to the anchor. It is run by ONNX Runtime when installed
(`fermetric[fast]`; 2x faster here) and else by OpenCV's dnn module, which every install has.

The model finds faces that fill at least about a quarter of its input (it was made for selfies):
on FER2013 faces pasted into 640x480 photos it found 99 % of 300 px faces, 81 % of 140 px ones
and none under 90 px when shown the whole photo. So the photo is searched at several scales: the
whole photo, then square tiles each `TILE_RATIO` the side of the last, overlapping enough, down
to tiles in which a face of `min_face` pixels fills `FACE_SHARE` of the tile. Every tile goes
through the network in one batch; a tile's detections that touch a tile edge inside the photo
(faces cut by the tile) or are larger than that level looks for are dropped, and the rest are
merged by MediaPipe's weighted non-maximum suppression.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fermetric.errors import FermetricError
from fermetric.inference.boxes import box_iou

__all__ = ["GRAPH", "GRAPH_SHA256", "BlazeFace", "anchors", "decode", "weighted_nms", "tile_pyramid", "fer_framing",
           "load_blazeface"]

GRAPH = Path(__file__).resolve().parent / "detector" / "blazeface_short_range.onnx"
# scripts/make_face_detector.py prints it; a graph that differs is refused (Haar is used instead)
GRAPH_SHA256 = "e3f51ac6a9952bd713edf192c80f1f451dbcb1b868ca3517cfebb728dd6e18c9"

INPUT_SIDE = 128
# MediaPipe's face_detection_short_range graph: SSD anchors on 16x16 (2 per cell) and 8x8 (6 per
# cell) grids, fixed size, centred in their cell; boxes are offsets in input pixels
STRIDES = (8, 16, 16, 16)
# MediaPipe's min_score_thresh for one pass is 0.5; a photo is ~60 tiles, so more chances of a false
# box. On 400 FER2013 faces pasted in 640x480 photos (scripts/bench_predict.py; Haar: 318 found, 3
# false boxes): 0.5 found 400 with 27 false boxes, 0.7 394 / 4, 0.75 385 / 2, 0.8 363 / 1; on a
# group photo of six (insightface's t1.jpg) 0.7 added a false box (0.74) to the six faces (0.93-0.95)
SCORE_THRESHOLD = 0.75
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold (weighted NMS)
# smallest face side / tile side searched at a level, and the next level's tile side / this one's
FACE_SHARE = 0.25
TILE_RATIO = 0.6
# a tile's detections larger than this share of the tile are left to the coarser levels (a level
# looks for faces of FACE_SHARE to FACE_SHARE / TILE_RATIO of its tile; twice that to spare)
LARGEST_IN_TILE = 2 * FACE_SHARE / TILE_RATIO
BATCH = 32  # tiles per forward
# BlazeFace's box is tighter than FER2013's framing and lower (eyebrows to chin): on those 400 photos
# its side was 0.852 of the pasted face's and its centre 0.085 of a face lower (medians). The boxes
# returned are re-framed to FER2013's, so that crops (and --margin) mean what they mean with Haar,
# whose box is the face's (0.96, centred).
BOX_SIDE_SHARE = 0.852
BOX_CENTRE_DROP = 0.085


@functools.lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """(896, 2) anchor centres (x, y) in [0, 1], in the network's output order."""
    out = []
    i = 0
    while i < len(STRIDES):
        j, per_cell = i, 0
        while j < len(STRIDES) and STRIDES[j] == STRIDES[i]:
            per_cell += 2  # aspect ratio 1 and the interpolated scale, both of fixed size
            j += 1
        cells = math.ceil(INPUT_SIDE / STRIDES[i])
        c = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(out)


def decode(regressors: np.ndarray, logits: np.ndarray, threshold: float = SCORE_THRESHOLD) -> list[tuple[np.ndarray, np.ndarray]]:
    """The network's outputs to boxes.

    Args:
        regressors: (N, 896, 16): box centre offset, width, height, then 6 keypoints (x, y), in
            input pixels relative to each anchor's centre.
        logits: (N, 896, 1) face scores before the sigmoid.

    Returns:
        Per image: (boxes (k, 4) as x, y, w, h in [0, 1] of the input, scores (k,)) of the anchors
        scoring at least `threshold`.
    """
    a = anchors()
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits[..., 0].astype(np.float64), -100.0, 100.0)))
    out = []
    for reg, sc in zip(regressors, scores):
        keep = sc >= threshold
        r = reg[keep, :4].astype(np.float64) / INPUT_SIDE
        cx, cy = r[:, 0] + a[keep, 0], r[:, 1] + a[keep, 1]
        out.append((np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, r[:, 2], r[:, 3]], axis=1), sc[keep]))
    return out


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: the best-scoring box and every box that
    overlaps it by more than `iou` become one box, their score-weighted mean, with the best score.

    Returns:
        (boxes (m, 4), scores (m,)), best first.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    free = np.ones(len(boxes), dtype=bool)
    out_b, out_s = [], []
    for k in range(len(boxes)):
        if not free[k]:
            continue
        group = free & (box_iou(boxes[k], boxes) > iou)
        group[k] = True
        free &= ~group
        w = scores[group]
        out_b.append((boxes[group] * w[:, None]).sum(axis=0) / w.sum())
        out_s.append(scores[k])
    if not out_b:
        return np.zeros((0, 4)), np.zeros(0)
    return np.stack(out_b), np.asarray(out_s)


@dataclass(frozen=True)
class Tile:
    """A square of the photo (it may reach past the photo's right and bottom edges: zeros there).

    Attributes:
        x, y, side: position and side in photo pixels.
        level: 0 for the whole photo, then 1, 2, ... for ever smaller tiles.
    """

    x: int
    y: int
    side: int
    level: int


def _positions(length: int, side: int) -> list[int]:
    """Tile starts along one axis: the first at 0, the last ending at the edge, close enough that
    every face this level looks for (up to FACE_SHARE / TILE_RATIO of the side) lies whole in one."""
    if side >= length:
        return [0]
    step = side * (1.0 - FACE_SHARE / TILE_RATIO)
    n = math.ceil((length - side) / step) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - side, n)})


def tile_pyramid(width: int, height: int, min_face: int) -> list[Tile]:
    """The tiles searched for faces of at least `min_face` pixels in a width x height photo."""
    side, level = float(max(width, height)), 0
    tiles = [Tile(0, 0, int(side), 0)]
    smallest = min_face / FACE_SHARE
    while FACE_SHARE * side > min_face and side > INPUT_SIDE / 2:
        side = max(side * TILE_RATIO, smallest)
        level += 1
        s = int(round(side))
        tiles += [Tile(x, y, s, level) for y in _positions(height, s) for x in _positions(width, s)]
    return tiles


class BlazeFace:
    """The detector: `BlazeFace()(rgb, min_face)` -> (boxes (k, 4) x, y, w, h in photo pixels,
    framed as FER2013 frames its faces, at least `min_face` on a side; scores (k,)), best first.

    Attributes:
        runtime: "onnxruntime" or "opencv-dnn", whichever runs the graph.
    """

    def __init__(self, graph: Path = GRAPH, sha256: Optional[str] = GRAPH_SHA256, runtime: Optional[str] = None,
                 threads: Optional[int] = None):
        """
        Args:
            graph: the ONNX graph.
            sha256: its expected SHA-256 (None: not checked, for a graph being made).
            runtime: "onnxruntime", "opencv-dnn" or None (ONNX Runtime where installed).
            threads: ONNX Runtime's threads (None: torch's, which fermetric --threads sets).
        """
        data = graph.read_bytes() if graph.is_file() else b""
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise FermetricError(f"{graph}: the face detector's graph is missing or altered (sha256 {digest[:12]}..., "
                                 f"expected {sha256[:12]}...); reinstall fermetric or remake it with "
                                 "scripts/make_face_detector.py")
        if runtime is None:
            import importlib.util

            runtime = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "opencv-dnn"
        if runtime == "onnxruntime":
            from fermetric.models.onnx import cpu_session

            session = cpu_session(data, threads)
            self._forward = lambda x: session.run(["regressors", "classificators"], {"input": x})
        elif runtime == "opencv-dnn":
            import cv2

            net = cv2.dnn.readNetFromONNX(str(graph))

            def forward(x: np.ndarray) -> list[np.ndarray]:
                net.setInput(x)
                outs = dict(zip(net.getUnconnectedOutLayersNames(), net.forward(net.getUnconnectedOutLayersNames())))
                return [outs["regressors"], outs["classificators"]]

            self._forward = forward
        else:
            raise FermetricError(f"BlazeFace runtime must be onnxruntime or opencv-dnn; got {runtime!r}")
        self.runtime = runtime

    def network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 128, 128) float32 in [-1, 1] -> (regressors (N, 896, 16), logits (N, 896, 1))."""
        reg, cls = self._forward(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(reg), np.asarray(cls)

    def __call__(self, rgb: np.ndarray, min_face: int = 40) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        h, w = rgb.shape[:2]
        tiles = tile_pyramid(w, h, min_face)
        inputs = np.empty((len(tiles), INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)
        for i, t in enumerate(tiles):
            patch = np.zeros((t.side, t.side, 3), dtype=np.uint8)
            part = rgb[t.y:t.y + t.side, t.x:t.x + t.side]
            patch[:part.shape[0], :part.shape[1]] = part
            interp = cv2.INTER_AREA if t.side > INPUT_SIDE else cv2.INTER_LINEAR
            inputs[i] = cv2.resize(patch, (INPUT_SIDE, INPUT_SIDE), interpolation=interp)
        x = inputs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        found_b, found_s = [], []
        for start in range(0, len(tiles), BATCH):
            reg, cls = self.network(x[start:start + BATCH])
            for t, (b, s) in zip(tiles[start:start + BATCH], decode(reg, cls)):
                if not len(b):
                    continue
                keep = np.ones(len(b), dtype=bool)
                if t.level > 0:
                    # a face larger than this level looks for is a coarser level's, and one that
                    # touches the tile's edge inside the photo is cut by the tile
                    keep &= np.maximum(b[:, 2], b[:, 3]) <= LARGEST_IN_TILE
                    edge = 0.01
                    keep &= ~((b[:, 0] < edge) & (t.x > 0))
                    keep &= ~((b[:, 1] < edge) & (t.y > 0))
                    keep &= ~((b[:, 0] + b[:, 2] > 1 - edge) & (t.x + t.side < w))
                    keep &= ~((b[:, 1] + b[:, 3] > 1 - edge) & (t.y + t.side < h))
                found_b.append(b[keep] * t.side + np.array([t.x, t.y, 0.0, 0.0]))
                found_s.append(s[keep])
        if not found_b:
            return np.zeros((0, 4)), np.zeros(0)
        boxes, scores = weighted_nms(np.concatenate(found_b), np.concatenate(found_s))
        boxes = fer_framing(boxes)
        big = np.maximum(boxes[:, 2], boxes[:, 3]) >= min_face
        return boxes[big], scores[big]


def fer_framing(boxes: np.ndarray) -> np.ndarray:
    """BlazeFace boxes (x, y, w, h) -> FER2013-framed face boxes: sides / BOX_SIDE_SHARE, centre
    raised by BOX_CENTRE_DROP of the face."""
    side = np.maximum(boxes[:, 2], boxes[:, 3]) / BOX_SIDE_SHARE
    cx = boxes[:, 0] + boxes[:, 2] / 2
    cy = boxes[:, 1] + boxes[:, 3] / 2 - BOX_CENTRE_DROP * side
    return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)


@functools.lru_cache(maxsize=4)
def load_blazeface(runtime: Optional[str] = None) -> BlazeFace:
    """The detector, loaded once per process (and runtime)."""
    return BlazeFace(runtime=runtime)
