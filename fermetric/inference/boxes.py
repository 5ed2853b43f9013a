"""Face boxes (x, y, w, h): their overlap, for the detector's non-maximum suppression and the
video's face tracking."""
from __future__ import annotations

import numpy as np


def box_iou(box, boxes) -> np.ndarray:
    """Intersection over union of one (x, y, w, h) box with each row of `boxes` (k, 4): (k,)
    floats, 0 where a union is empty."""
    box, boxes = np.asarray(box, dtype=np.float64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
