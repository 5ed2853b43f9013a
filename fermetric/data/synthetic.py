"""SynthFER: procedural 48x48 grayscale faces in the 7 FER2013 classes, with ground-truth
evidence masks.

Real FER data cannot be shipped, so SynthFER is the default data of every command and of the
fast tests, and the ground truth against which explanation methods are measured.

How a face is made
------------------
Every image is rendered from a handful of per-image parameters (see `sample_params`):

* **expression** (the class information): brow height above the eye, brow slope (inner ends
  raised or lowered), brow knit (inner ends pulled together), eye openness, mouth curvature
  (corners up or down), mouth opening, mouth width, nose wrinkles and nasolabial folds. Each
  class has a prototype offset from the neutral face (`CLASS_PROTOTYPES`); a face gets
  ``neutral + intensity * prototype + jitter``. The intensity is drawn per face (some faces are
  only weakly expressive, so they look nearly neutral) and the jitter (the person's own
  resting face) is shared by all classes, so classes overlap: Fear and Surprise share raised
  brows and open eyes, Angry and Disgust lowered brows and nose wrinkles, Sad and Angry a
  down-turned mouth.
* **nuisance** (identity, capture): face width, height and jaw, feature positions, skin tone,
  hair, background, contrast, in-plane rotation, a yaw-like horizontal squeeze with features
  shifted sideways, shift and scale, an illumination gradient, blur, pixel noise, and
  occasional occluders (glasses frames, a dark sunglasses bar, a hand-like blob, a bar across
  the image).

Everything is drawn as soft shapes on coordinate grids (ellipses, and curves as distance fields,
anti-aliased with sigmoids), vectorised over whole batches: 10,000 faces take about 2.6 s on
one CPU thread.

Difficulty
----------
`difficulty` scales the overlap and the nuisance together: the floor of the expression
intensity (1 - 0.6 d), the resting-face jitter, pose, lighting, blur, noise and the occluder
rate (0.08 d + 0.02 d^2). 0 gives full-strength expressions on clean, frontal faces. Measured
with scripts/bench_synthfer.py (baseline CNN at width 16, 5 epochs on 4,000 images with the
default augmentation, 1,000 val images; chance = majority class = 0.25): val accuracy 0.97 at
difficulty 0.5, 0.80 at 1.0 (the default), 0.35 at 1.5 (still learning: 0.67 after 15 epochs).
Disgust (1.5 % of the faces, as in FER2013) is rarely predicted at all after 5 epochs.

What the evidence mask covers
-----------------------------
``masks[i]`` (bool, 48x48) is True on the pixels of the features *as drawn for that face* whose
appearance depends on the class:

* both brows (the stroke),
* both eyes (lid outline, white and pupil),
* the mouth (lips, the line between them, and the open interior),
* the nose-wrinkle lines and the nasolabial folds, wherever they are drawn with at least
  `MIN_LINE_STRENGTH` of full contrast (mostly Disgust, stronger Angry faces, Happy's folds).

Each feature counts where its coverage exceeds `MASK_THRESHOLD` (for the lines: their geometric
coverage); each region is then dilated by one pixel (3x3), so the edge contrast of a feature
(which is what a CNN sees) is inside. Pixels hidden by an occluder (occluder coverage > 0.5)
are removed (hidden evidence is no evidence), and so are the few dilated pixels that step over
the face outline. The face outline, hair, nose bridge, nostrils, eye-socket shading,
background, illumination and noise are never in the mask. Neutral faces get the same brow, eye
and mouth regions: their lack of deformation is the evidence. The mask covers about 12-16 % of
the image (about 300 of 2,304 pixels), and `render_faces` also returns it per region.
"""
from __future__ import annotations

import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fermetric.data.classes import FER2013_CLASSES, FER2013_TRAIN_COUNTS, IMAGE_SIZE
from fermetric.data.dataset import DataSplits, FERDataset
from fermetric.errors import DataError
from fermetric.utils.checks import check_int, check_number

__all__ = [
    "CLASS_PROTOTYPES",
    "EXPRESSION_PARAMS",
    "MASK_THRESHOLD",
    "SynthRender",
    "generate_synthfer",
    "load_synthfer",
    "render_faces",
    "sample_params",
    "write_synthfer_folder",
]

NUM_CLASSES = len(FER2013_CLASSES)
MASK_THRESHOLD = 0.3
# Nose wrinkles / nasolabial folds fainter than this (fraction of full contrast) are not evidence.
MIN_LINE_STRENGTH = 0.1
# Faces rendered per vectorised chunk: big enough to amortise Python overhead, small enough that
# the ~40 (chunk, 48, 48) float temporaries (1.2 MB each) stay in cache: measured fastest.
_CHUNK = 128

# Expression parameters, in face units (the face is about 1.6 units wide, 2.1 high).
EXPRESSION_PARAMS: tuple[str, ...] = (
    "brow_raise",   # brow height above its resting gap to the eye (+ = up)
    "brow_slope",   # dv/du of the brow stroke (+ = inner ends raised: sad, fear)
    "brow_knit",    # inner ends pulled toward the nose (angry)
    "eye_open",     # eye half-height / half-width (resting 0.42)
    "mouth_curve",  # + = corners up (smile), - = corners down
    "mouth_open",   # jaw drop: height of the open interior at the centre, in mouth-half-widths
    "mouth_width",  # relative change of the mouth half-width
    "nose_wrinkle", # strength of the lines across the nose bridge (disgust)
    "cheek",        # strength of the nasolabial folds (happy, disgust)
)
_NEUTRAL = torch.tensor([0.0, 0.0, 0.0, 0.42, 0.0, 0.0, 0.0, 0.0, 0.0])
# Class prototypes: offsets from the neutral face at intensity 1, rows in FER2013 class order.
CLASS_PROTOTYPES = torch.tensor(
    [
        # raise  slope  knit   eye    curve  open   width  wrinkle cheek
        [-0.07, -0.55, 0.06, 0.00, -0.25, 0.00, -0.20, 0.35, 0.00],  # Angry
        [-0.05, -0.20, 0.03, -0.20, -0.45, 0.15, 0.00, 1.00, 0.40],  # Disgust
        [0.10, 0.35, 0.03, 0.40, -0.20, 0.40, 0.22, 0.00, 0.00],  # Fear
        [0.02, 0.00, 0.00, -0.15, 0.75, 0.20, 0.25, 0.00, 0.90],  # Happy
        [0.03, 0.50, 0.02, -0.15, -0.60, 0.00, -0.05, 0.00, 0.00],  # Sad
        [0.17, 0.08, 0.00, 0.55, 0.00, 1.00, -0.30, 0.00, 0.00],  # Surprise
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # Neutral
    ]
)
# Standard deviation of a person's resting-face jitter per parameter, at difficulty 1.
_JITTER = torch.tensor([0.03, 0.12, 0.02, 0.09, 0.15, 0.06, 0.08, 0.05, 0.05])
_LOWER = torch.tensor([-1.0, -2.0, -0.1, 0.08, -2.0, 0.0, -0.5, 0.0, 0.0])


def _default_proportions() -> torch.Tensor:
    counts = torch.tensor(FER2013_TRAIN_COUNTS, dtype=torch.float64)
    return counts / counts.sum()


def _check_difficulty(difficulty: float) -> float:
    return check_number("difficulty", difficulty, minimum=0, where="SynthFER", error=DataError)


def _allocate_labels(n: int, proportions: Optional[Sequence[float]], g: torch.Generator) -> torch.Tensor:
    """Exactly proportional class counts (largest remainder), shuffled: small sets keep the
    FER2013 proportions without sampling noise."""
    if proportions is None:
        p = _default_proportions()
    else:
        p = torch.as_tensor(list(proportions), dtype=torch.float64)
        if p.shape != (NUM_CLASSES,) or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise DataError(
                f"class_proportions must be {NUM_CLASSES} finite non-negative numbers with a positive sum "
                f"(order {', '.join(FER2013_CLASSES)}); got {list(proportions)}"
            )
        p = p / p.sum()
    exact = p * n
    counts = exact.floor().long()
    rest = n - int(counts.sum())
    if rest > 0:
        order = torch.argsort(exact - counts, descending=True, stable=True)
        counts[order[:rest]] += 1
    labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), counts)
    return labels[torch.randperm(n, generator=g)]


def _u(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def sample_params(labels: torch.Tensor, g: torch.Generator, difficulty: float = 1.0) -> dict[str, torch.Tensor]:
    """Draw the rendering parameters of one face per label.

    Args:
        labels: (N,) int64 FER2013 class ids.
        g: the generator every draw comes from (the order of draws is fixed, so a seed fixes all).
        difficulty: 0 = full-intensity expressions on canonical, clean faces; 1 = the default;
            higher = weaker expressions, more jitter, pose, lighting, noise and occluders.

    Returns:
        name -> (N,) float32 tensor (occluder kind is int64); the expression parameters are
        named in EXPRESSION_PARAMS, "intensity" is the expression strength in [0, 1].
    """
    d = _check_difficulty(difficulty)
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = labels.shape[0]
    p: dict[str, torch.Tensor] = {}
    # Expression: a fraction of faces barely expressive (intensity near the floor) is what makes
    # the classes overlap with Neutral and with each other.
    floor = min(max(1.0 - 0.6 * d, 0.05), 1.0)
    inten = floor + (1.0 - floor) * torch.rand(n, generator=g) ** 0.8
    inten = torch.where(labels == 6, torch.zeros_like(inten), inten)
    jitter = torch.randn(n, len(EXPRESSION_PARAMS), generator=g) * (_JITTER * d)
    expr = _NEUTRAL + inten[:, None] * CLASS_PROTOTYPES[labels] + jitter
    expr = torch.maximum(expr, _LOWER)
    for j, name in enumerate(EXPRESSION_PARAMS):
        p[name] = expr[:, j].contiguous()
    p["intensity"] = inten
    # Identity: face outline and feature layout.
    p["face_w"] = _u(n, 0.72, 0.86, g)
    p["face_h"] = _u(n, 0.98, 1.10, g)
    p["jaw"] = _u(n, 0.05, 0.30, g)
    p["eye_x"] = p["face_w"] * _u(n, 0.41, 0.46, g)  # wide-set eyes only on wide faces
    p["eye_y"] = _u(n, -0.16, -0.06, g)
    p["eye_w"] = _u(n, 0.15, 0.19, g)
    p["brow_gap"] = _u(n, 0.19, 0.25, g)
    p["brow_arch"] = _u(n, 0.0, 0.06, g)
    p["brow_thick"] = _u(n, 0.035, 0.06, g)
    p["mouth_y"] = _u(n, 0.46, 0.56, g)
    p["mouth_w"] = _u(n, 0.26, 0.33, g)
    p["gaze"] = _u(n, -0.04, 0.04, g)
    p["hairline"] = _u(n, -0.72, -0.45, g)
    p["hair"] = (torch.rand(n, generator=g) < 0.85).float()
    # Tones.
    p["skin"] = _u(n, 0.42, 0.85, g)
    p["hair_tone"] = _u(n, 0.03, 0.45, g)
    p["bg"] = _u(n, 0.05, 0.95, g)
    p["contrast"] = _u(n, max(0.85 - 0.3 * d, 0.3), min(1.0 + 0.1 * d, 1.3), g)
    # Pose and capture.
    p["angle"] = _u(n, -1.0, 1.0, g) * (3.0 + 7.0 * d) * (math.pi / 180.0)
    p["yaw"] = _u(n, -1.0, 1.0, g) * min(0.6 * d, 1.0)
    p["scale"] = 0.92 * (1.0 + _u(n, -1.0, 1.0, g) * 0.07 * d)
    p["tx"] = _u(n, -1.0, 1.0, g) * 0.05 * d
    p["ty"] = _u(n, -1.0, 1.0, g) * 0.05 * d - 0.05  # FER crops: eyes a little above the middle
    p["light_x"] = torch.randn(n, generator=g) * 0.18 * d
    p["light_y"] = torch.randn(n, generator=g) * 0.12 * d
    p["blur"] = _u(n, 0.7, 0.7 + 0.5 * d, g)
    p["noise"] = _u(n, 0.0, 0.04 * d, g)
    # Occluders: 0 none, 1 glasses frames, 2 sunglasses bar, 3 hand-like blob, 4 bar.
    occ_p = min(0.08 * d + 0.02 * d * d, 0.5)
    has = torch.rand(n, generator=g) < occ_p
    kind = torch.randint(1, 5, (n,), generator=g)
    p["occ_kind"] = torch.where(has, kind, torch.zeros_like(kind))
    p["occ_x"] = _u(n, -0.6, 0.6, g)
    p["occ_y"] = _u(n, -0.2, 0.9, g)
    p["occ_r"] = _u(n, 0.18, 0.32, g)
    p["occ_angle"] = _u(n, 0.0, math.pi, g)
    p["occ_tone"] = _u(n, 0.05, 0.95, g)
    return p


@dataclass
class SynthRender:
    """Rendered faces.

    Attributes:
        images: (N, 48, 48) float32 in [0, 1].
        masks: (N, 48, 48) bool evidence masks (see the module docstring).
        face: (N, 48, 48) bool, the face ellipse (skin, before hair and occluders).
        regions: region name ("brows", "eyes", "mouth", "nose") -> (N, 48, 48) bool, the
            per-region parts of `masks` (each dilated and occlusion-cut the same way).
    """

    images: torch.Tensor
    masks: torch.Tensor
    face: torch.Tensor
    regions: dict[str, torch.Tensor]


def _blend(img: torch.Tensor, alpha: torch.Tensor, tone: torch.Tensor) -> torch.Tensor:
    return img.add_(alpha * (tone - img))


def _dilate(m: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of (N, H, W) bool masks (separable shifted ORs: far cheaper than
    max_pool2d on floats)."""
    out = m.clone()
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    rows = out.clone()
    out[:, 1:, :] |= rows[:, :-1, :]
    out[:, :-1, :] |= rows[:, 1:, :]
    return out


@dataclass
class _Faces:
    """One chunk of faces in face coordinates, with the drawing primitives that read them.

    Attributes:
        p: the chunk's parameters, name -> (M,) tensors.
        X, Y: pixel centres in [-1, 1] image units, (1, 1, 48) and (1, 48, 1).
        u, v: (M, 48, 48) face coordinates of every pixel (u right, v down; the face spans about
            [-0.8, 0.8] x [-1, 1]) after the inverse pose.
        uf, ua: u about the yaw-shifted midline, and its absolute value (mirrored features).
        inv_soft: (M, 1, 1) 1 / sigmoid width (anti-aliasing plus the face's blur).
    """

    p: dict[str, torch.Tensor]
    X: torch.Tensor
    Y: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    uf: torch.Tensor
    ua: torch.Tensor
    inv_soft: torch.Tensor

    def col(self, name: str) -> torch.Tensor:
        """A parameter as (M, 1, 1), to broadcast against the pixel grids."""
        return self.p[name][:, None, None]

    def inside(self, signed: torch.Tensor) -> torch.Tensor:
        """Coverage of a shape from its signed distance (positive inside, face units)."""
        return torch.sigmoid(signed * self.inv_soft)

    def tone(self, k: float) -> torch.Tensor:
        """Skin darkened by k of the face's contrast."""
        return self.col("skin") * (1.0 - k * self.col("contrast"))

    def subset(self, idx: torch.Tensor) -> "_Faces":
        """The faces `idx` alone (the image grids X, Y are shared)."""
        return _Faces({k: t[idx] for k, t in self.p.items()}, self.X, self.Y, self.u[idx], self.v[idx],
                      self.uf[idx], self.ua[idx], self.inv_soft[idx])


def _occluders(f: _Faces) -> torch.Tensor:
    """Coverage (M, 48, 48) of each face's occluder, given its face coordinates."""
    col, inside, u, v, ua = f.col, f.inside, f.u, f.v, f.ua
    kind = col("occ_kind")
    ex, ey, ew = col("eye_x"), col("eye_y"), col("eye_w")
    occ = torch.zeros_like(u)
    # 1: glasses frames, rings around both eyes plus a bridge.
    ring = torch.sqrt(((ua - ex) / (ew * 1.5)) ** 2 + ((v - ey) / (ew * 1.2)) ** 2)
    frames = torch.maximum(inside(0.03 - ((ring - 1.0) * ew * 1.2).abs()),
                           inside(0.02 - (v - ey + 0.05).abs()) * inside(ex - ew * 1.5 - ua + 0.02))
    occ = torch.where(kind == 1, frames, occ)
    # 2: sunglasses, a dark band over both eyes.
    band = inside(ew * 0.95 - (v - ey).abs()) * inside(ex + ew * 1.6 - ua)
    occ = torch.where(kind == 2, band, occ)
    # 3: a hand-like blob somewhere on the face; 4: a bar (a finger, a pen, a strand of hair).
    oc, osn = torch.cos(col("occ_angle")), torch.sin(col("occ_angle"))
    ox, oy = u - col("occ_x"), v - col("occ_y")
    ru, rv = oc * ox + osn * oy, oc * oy - osn * ox
    rr = col("occ_r")
    blob = inside((1.0 - torch.sqrt((ru / (rr * 1.6)) ** 2 + (rv / rr) ** 2)) * rr)
    occ = torch.where(kind == 3, blob, occ)
    bar = inside(rr * 0.35 - rv.abs())
    return torch.where(kind == 4, bar, occ)


def _face_coordinates(p: dict[str, torch.Tensor]) -> _Faces:
    """Invert each face's pose: image pixel -> face coordinates."""
    half = IMAGE_SIZE / 2.0
    axis = (torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5) / half - 1.0
    X = axis[None, None, :]
    Y = axis[None, :, None]

    def col(name: str) -> torch.Tensor:
        return p[name][:, None, None]

    ang, scale = col("angle"), col("scale")
    cos, sin = torch.cos(ang), torch.sin(ang)
    dx, dy = X - col("tx"), Y - col("ty")
    squeeze = 1.0 - 0.15 * col("yaw").abs()
    u = (cos * dx + sin * dy) / (scale * squeeze)
    v = (cos * dy - sin * dx) / scale
    px = 1.0 / (half * scale)  # one pixel in face units
    soft = 0.45 * px * col("blur")  # sigmoid width: anti-aliasing plus per-image blur
    # features are mirrored about the (yaw-shifted) face midline
    uf = u - 0.1 * col("yaw")
    return _Faces(p, X, Y, u, v, uf, uf.abs(), 1.0 / soft)


def _draw_head(f: _Faces) -> tuple[torch.Tensor, torch.Tensor]:
    """Background, hair, neck, shaded skin and fringe. Returns (image, face coverage)."""
    col, inside, u, v, X, Y = f.col, f.inside, f.u, f.v, f.X, f.Y
    n, skin = u.shape[0], col("skin")
    # Background with its own gradient.
    img = (col("bg") + 0.15 * col("light_y") * Y + 0.1 * (col("bg") - 0.5) * X).expand(n, IMAGE_SIZE, IMAGE_SIZE).contiguous()
    # Face outline: an ellipse narrowing toward the chin.
    fw, fh = col("face_w"), col("face_h")
    w_eff = fw * (1.0 - col("jaw") * torch.clamp(v / fh, min=0.0) ** 2)
    r = torch.sqrt((u / w_eff) ** 2 + (v / fh) ** 2)
    # Hair behind the head (a larger ellipse, upper part only), then neck, then skin.
    hair_on = col("hair")
    hair_back = inside((1.0 - torch.sqrt((u / (fw * 1.13)) ** 2 + ((v + 0.05) / (fh * 1.08)) ** 2)) * fw)
    hair_back = hair_back * inside(0.05 - v) * hair_on
    img = _blend(img, hair_back, col("hair_tone"))
    neck = inside(0.42 - u.abs()) * inside(v - 0.6)
    img = _blend(img, neck, skin * 0.8)
    face_a = inside((1.0 - r) * fw)
    # Shaded skin: darker toward the rim, for a rounded look.
    img = _blend(img, face_a, skin * (1.0 - 0.22 * r * r))
    # Hair fringe above the hairline (curving down at the temples).
    fringe = inside(col("hairline") + 0.35 * (u / fw) ** 2 - v) * torch.maximum(face_a, hair_back) * hair_on
    img = _blend(img, fringe, col("hair_tone"))
    return img, face_a


def _draw_brows_and_eyes(f: _Faces, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eye sockets, brows and eyes. Returns (image, brow coverage, eye coverage)."""
    col, inside, tone, v, uf, ua = f.col, f.inside, f.tone, f.v, f.uf, f.ua
    ex, ey, ew = col("eye_x"), col("eye_y"), col("eye_w")
    # Soft eye-socket shadow (identity, not evidence).
    sock = inside(0.9 - torch.sqrt(((ua - ex) / (ew * 1.6)) ** 2 + ((v - ey + 0.06) / (ew * 1.3)) ** 2)) * 0.6
    img = _blend(img, sock, tone(0.12))

    # Brows: a stroke y(u) = centre + slope * (u - bx) + arch * ((u - bx) / L)^2, |u - bx| < L.
    slope = col("brow_slope")
    bx = ex - col("brow_knit")
    blen = ew * 1.05
    t = ua - bx
    by = ey - col("brow_gap") - col("brow_raise") + slope * t + col("brow_arch") * (t / blen) ** 2
    bdist = (v - by).abs() * torch.rsqrt(1.0 + slope * slope)
    brow_a = inside(col("brow_thick") - bdist) * inside(blen - t.abs())
    img = _blend(img, brow_a, tone(0.6))

    # Eyes: lid outline (dark), white, pupil.
    eh = ew * col("eye_open")
    edx, edy = ua - ex, v - ey
    e_r = torch.sqrt((edx / ew) ** 2 + (edy / eh) ** 2)
    lid = 0.035
    outline_a = inside((1.0 - torch.sqrt((edx / (ew + lid)) ** 2 + (edy / (eh + lid)) ** 2)) * (eh + lid))
    img = _blend(img, outline_a, tone(0.7))
    white_a = inside((1.0 - e_r) * eh)
    img = _blend(img, white_a, torch.clamp(col("skin") + 0.25 * col("contrast"), max=1.0))
    pr = ew * 0.45
    pupil_a = inside(pr - torch.sqrt((uf.abs() - ex - col("gaze") * torch.sign(uf)) ** 2 + edy**2)) * white_a
    img = _blend(img, pupil_a, tone(0.85))
    return img, brow_a, torch.maximum(outline_a, white_a)


def _draw_nose(f: _Faces, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bridge, nostrils and wrinkles. Returns (image, wrinkle geometry, wrinkle strength (M, 1, 1))."""
    inside, tone, v, uf, ua = f.inside, f.tone, f.v, f.uf, f.ua
    # Bridge shadow on one side, nostrils (identity, not evidence).
    bridge = inside(0.025 - (uf - 0.07).abs()) * inside(0.24 - v) * inside(v + 0.02) * 0.5
    img = _blend(img, bridge, tone(0.25))
    nostril = inside(0.035 - torch.sqrt(((ua - 0.075) / 1.3) ** 2 + (v - 0.28) ** 2))
    img = _blend(img, nostril, tone(0.5))
    # Nose wrinkles: three short lines across the bridge, weighted by strength (evidence).
    wr = torch.clamp(f.col("nose_wrinkle"), 0.0, 1.0)
    wv = torch.remainder(v + 0.02, 0.075) - 0.0375  # periodic rows, one line per 0.075
    wrinkle_geom = inside(0.016 - wv.abs()) * inside(0.14 - ua) * inside(v + 0.04) * inside(0.17 - v)
    img = _blend(img, wrinkle_geom * wr, tone(0.45))
    return img, wrinkle_geom, wr


def _draw_mouth(f: _Faces, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lips, the open interior and the nasolabial folds.

    Returns (image, mouth coverage, fold geometry, fold strength (M, 1, 1)).
    """
    col, inside, tone, v, uf, ua = f.col, f.inside, f.tone, f.v, f.uf, f.ua
    # Centre line c(s) = my - curve * 0.12 * (s^2 - 0.5), s = u / W in [-1, 1]; the open
    # interior spans c - 0.35 * h .. c + 0.65 * h with h = open * W * (1 - s^2) (the jaw drops).
    mw = col("mouth_w") * (1.0 + col("mouth_width"))
    s = uf / mw
    s2 = torch.clamp(s * s, max=1.5)
    c = col("mouth_y") - col("mouth_curve") * 0.12 * (s2 - 0.5)
    h = col("mouth_open") * mw * torch.clamp(1.0 - s2, min=0.0)
    top, bot = c - 0.35 * h, c + 0.65 * h
    win = inside((1.0 - s.abs()) * mw)
    lips_a = inside(torch.minimum(v - (top - 0.06), (bot + 0.07) - v)) * inside((1.05 - s.abs()) * mw)
    img = _blend(img, lips_a, tone(0.2))
    line = 0.028
    gap_a = inside(torch.minimum(v - (top - line), (bot + line) - v)) * win
    img = _blend(img, gap_a, tone(0.75))
    mouth_a = torch.maximum(lips_a, gap_a)
    # Nasolabial folds: from beside the nostrils to just outside the mouth corners.
    ck = torch.clamp(col("cheek"), 0.0, 1.0)
    corner_u = mw + 0.04
    fold_t = torch.clamp((v - 0.2) / (col("mouth_y") + 0.05 - 0.2), 0.0, 1.0)
    fold_u = 0.14 + (corner_u - 0.14) * fold_t
    fold_geom = inside(0.02 - (ua - fold_u).abs()) * inside(v - 0.2) * inside(col("mouth_y") + 0.08 - v)
    img = _blend(img, fold_geom * ck, tone(0.35))
    return img, mouth_a, fold_geom, ck


def _draw_occluders(f: _Faces, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Occluders in face coordinates (so they follow the pose), drawn only on the faces that have
    one. Returns (image, occluder coverage)."""
    occ = torch.zeros_like(img)
    hit = torch.nonzero(f.p["occ_kind"] > 0).flatten()
    if len(hit):
        occ[hit] = _occluders(f.subset(hit))
        occ_tone = torch.where(f.col("occ_kind") == 2, f.col("occ_tone") * 0.15, f.col("occ_tone"))
        img = _blend(img, occ, occ_tone)
    return img, occ


def _capture(f: _Faces, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Illumination gradient and pixel noise; clipped to [0, 1]."""
    img = img * (1.0 + f.col("light_x") * f.X + f.col("light_y") * f.Y)
    noise = torch.randn(img.shape, generator=g) * f.col("noise")
    return torch.clamp(img + noise, 0.0, 1.0)


def _render_chunk(p: dict[str, torch.Tensor], g: torch.Generator) -> SynthRender:
    """Render one chunk of faces: draw each layer in order, then derive the evidence masks from
    the coverages of the features as drawn."""
    f = _face_coordinates(p)
    img, face_a = _draw_head(f)
    img, brow_a, eye_a = _draw_brows_and_eyes(f, img)
    img, wrinkle_geom, wr = _draw_nose(f, img)
    img, mouth_a, fold_geom, ck = _draw_mouth(f, img)
    img, occ = _draw_occluders(f, img)
    img = _capture(f, img, g)

    # Evidence is on the face and not hidden: the dilation may step over the face rim where a
    # turned head brings an eye or a fold close to it.
    visible = (occ <= 0.5) & (face_a > 0.5)
    regions = {
        "brows": brow_a > MASK_THRESHOLD,
        "eyes": eye_a > MASK_THRESHOLD,
        "mouth": mouth_a > MASK_THRESHOLD,
        # wrinkles and folds: their drawn lines, wherever drawn with at least MIN_LINE_STRENGTH
        "nose": ((wrinkle_geom > MASK_THRESHOLD) & (wr > MIN_LINE_STRENGTH))
        | ((fold_geom > MASK_THRESHOLD) & (ck > MIN_LINE_STRENGTH)),
    }
    regions = {k: _dilate(m) & visible for k, m in regions.items()}
    masks = regions["brows"] | regions["eyes"] | regions["mouth"] | regions["nose"]
    return SynthRender(images=img, masks=masks, face=face_a > 0.5, regions=regions)


def render_faces(params: dict[str, torch.Tensor], g: Optional[torch.Generator] = None) -> SynthRender:
    """Render faces from `sample_params` output, in chunks (vectorised within each).

    Args:
        params: name -> (N,) tensors, as returned by `sample_params` (edit them to render
            counterfactuals, e.g. the same face with another mouth_curve).
        g: generator of the pixel noise; None = seed 0.

    Returns:
        SynthRender with (N, 48, 48) images, masks, face and region masks.
    """
    g = g if g is not None else torch.Generator().manual_seed(0)
    n = int(next(iter(params.values())).shape[0])
    parts = []
    # One intra-op thread: the per-chunk tensors are small (128 x 48 x 48), and splitting them
    # across OpenMP threads costs more in synchronisation than it gains; on a busy machine it
    # made rendering 5-15x slower (measured: 3,000 faces, 2 threads 60 s wall vs 1 thread 5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, n, _CHUNK):
            chunk = {k: v[start:start + _CHUNK] for k, v in params.items()}
            parts.append(_render_chunk(chunk, g))
    finally:
        torch.set_num_threads(threads)
    if not parts:
        empty = torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE)
        return SynthRender(empty, empty.bool(), empty.bool(), {k: empty.bool() for k in ("brows", "eyes", "mouth", "nose")})
    return SynthRender(
        images=torch.cat([r.images for r in parts]),
        masks=torch.cat([r.masks for r in parts]),
        face=torch.cat([r.face for r in parts]),
        regions={k: torch.cat([r.regions[k] for r in parts]) for k in parts[0].regions},
    )


def _source_prefix(seed: int, difficulty: float) -> str:
    if difficulty == 1.0:
        return f"synthfer:seed={seed}"
    return f"synthfer:seed={seed}:difficulty={difficulty:g}"


def generate_synthfer(
    n: int,
    seed: int = 0,
    difficulty: float = 1.0,
    class_proportions: Optional[Sequence[float]] = None,
    labels: Optional[Sequence[int] | torch.Tensor] = None,
) -> FERDataset:
    """Generate `n` SynthFER faces with their evidence masks.

    Args:
        n: number of images.
        seed: fixes everything (same seed and arguments -> identical tensors).
        difficulty: 0 easy ... 1 default ... 2 hard (see `sample_params`).
        class_proportions: 7 non-negative weights in FER2013 class order; default FER2013's
            training proportions (Disgust ~1.5 %). Class counts are allocated exactly
            (largest remainder) and shuffled.
        labels: (n,) class ids to render instead of drawing them (balanced sets, tests).

    Returns:
        FERDataset with images (n, 1, 48, 48) uint8, labels (n,), masks (n, 48, 48) bool,
        class_names FER2013_CLASSES and sources "synthfer:seed=<seed>:i=<index>".

    Raises:
        DataError: negative n, bad difficulty, proportions or labels.
    """
    n = check_int("n", n, 0, where="SynthFER", error=DataError)
    difficulty = _check_difficulty(difficulty)
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    if labels is not None:
        lab = torch.as_tensor(labels).flatten()
        if lab.is_floating_point() or lab.shape[0] != n:
            raise DataError(f"labels must be {n} integer class ids (one per image); got {lab.dtype} of length {lab.shape[0]}")
        lab = lab.long()
        if n and (int(lab.min()) < 0 or int(lab.max()) >= NUM_CLASSES):
            raise DataError(f"labels must lie in 0..{NUM_CLASSES - 1} (FER2013 ids); got {int(lab.min())}..{int(lab.max())}")
    else:
        lab = _allocate_labels(n, class_proportions, g)
    params = sample_params(lab, g, difficulty)
    out = render_faces(params, g)
    images = (out.images * 255.0).round_().to(torch.uint8)[:, None]
    prefix = _source_prefix(int(seed), difficulty)
    return FERDataset(
        images=images,
        labels=lab.clone(),
        class_names=FER2013_CLASSES,
        masks=out.masks,
        sources=[f"{prefix}:i={i}" for i in range(n)],
    )


def _split_seeds(seed: int) -> dict[str, int]:
    """Independent, well-mixed sub-seeds for the three splits of one SynthFER seed."""
    state = np.random.SeedSequence([int(seed) % (2**63), 0x53594E]).generate_state(3, dtype=np.uint32)
    return {"train": int(state[0]), "val": int(state[1]), "test": int(state[2])}


def load_synthfer(
    n_train: int = 4000, n_val: int = 1000, n_test: int = 1000, seed: int = 0, difficulty: float = 1.0
) -> DataSplits:
    """SynthFER train/val/test splits, generated in memory (a second or two; nothing cached).

    Each split comes from its own sub-seed of `seed` (listed in `info["split_seeds"]`), so the
    splits are independent and `generate_synthfer(n, seed=info["split_seeds"][split], ...)`
    rebuilds a split on its own. Splits of size 0 are left out.
    """
    difficulty = _check_difficulty(difficulty)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for name, k in sizes.items():
        check_int(f"n_{name}", k, 1 if name == "train" else 0, where="SynthFER", error=DataError)
    seeds = _split_seeds(seed)
    splits = {
        name: generate_synthfer(int(k), seed=seeds[name], difficulty=difficulty)
        for name, k in sizes.items()
        if k > 0
    }
    info = {
        "source": "synthfer",
        "seed": int(seed),
        "difficulty": difficulty,
        "sizes": {k: int(v) for k, v in sizes.items()},
        "split_seeds": {k: seeds[k] for k in splits},
        "class_proportions": "FER2013 train",
        "masks": "evidence masks: brows, eyes, mouth, visible nose wrinkles / nasolabial folds (fermetric.data.synthetic)",
    }
    name = f"SynthFER(seed={int(seed)})" if difficulty == 1.0 else f"SynthFER(seed={int(seed)}, difficulty={difficulty:g})"
    return DataSplits(name=name, splits=splits, info=info)


_README = """SynthFER: synthetic 48x48 grayscale faces in the Kaggle FER2013 image-folder layout.

Generated by fermetric (fermetric.data.synthetic.write_synthfer_folder) with seed={seed},
difficulty={difficulty:g}. These are procedural drawings, not photographs of people.

  train/<class>/Training_NNNNN.png      training images
  test/<class>/PublicTest_NNNNN.png     validation images (FER2013 "PublicTest")
  test/<class>/PrivateTest_NNNNN.png    test images (FER2013 "PrivateTest")
  masks/<train|test>/<class>/<same name>.png
      ground-truth evidence masks (0 or 255): the pixels of the brows, eyes, mouth and any
      visible nose wrinkles / nasolabial folds as drawn on that face, dilated by one pixel,
      minus pixels hidden by an occluder. See fermetric/data/synthetic.py.

Classes: {classes}.
Counts: {counts}
"""

_FOLDER_PREFIX = {"train": ("train", "Training"), "val": ("test", "PublicTest"), "test": ("test", "PrivateTest")}


def write_synthfer_folder(
    out: str | Path,
    n: int = 1000,
    seed: int = 0,
    difficulty: float = 1.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    overwrite: bool = False,
) -> dict[str, dict[str, int]]:
    """Write SynthFER as PNG files in the Kaggle FER2013 image-folder layout (see the README it
    writes), with the evidence masks mirrored under `out/masks/`.

    The splits are exactly those of `load_synthfer(n_train, n_val, n_test, seed, difficulty)`
    with n_val = round(n * val_fraction), n_test = round(n * test_fraction), n_train the rest.

    Args:
        out: target folder (created).
        overwrite: replace a SynthFER folder written before (its train/, test/ and masks/ are
            deleted first, so no file of a larger earlier set is left behind). A folder without
            SynthFER's README.txt is never deleted.

    Returns:
        split ("train", "val", "test") -> lower-case class folder name -> images written.

    Raises:
        DataError: bad sizes or fractions, or `out` already holds a data set and not overwrite.
    """
    from PIL import Image

    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(frac) < 1.0:
            raise DataError(f"{name} must lie in [0, 1); got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1; got {val_fraction} + {test_fraction}")
    check_int("n", n, 1, error=DataError)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    n_train = int(n) - n_val - n_test
    out = Path(out)
    existing = [d for d in ("train", "test", "masks") if (out / d).exists()]
    if existing and not overwrite:
        raise DataError(f"{out} already holds {', '.join(existing)}/; choose an empty folder or pass overwrite=True")
    if existing:
        readme = out / "README.txt"
        if not (readme.is_file() and readme.read_text(errors="replace").startswith("SynthFER")):
            raise DataError(f"{out} holds {', '.join(existing)}/ but no SynthFER README.txt; refusing to delete "
                            "a folder SynthFER did not write")
        for d in existing:
            shutil.rmtree(out / d)
    data = load_synthfer(n_train, n_val, n_test, seed=seed, difficulty=difficulty)
    folders = [c.lower() for c in FER2013_CLASSES]
    jobs: list[tuple[np.ndarray, np.ndarray, Path, Path]] = []
    counts: dict[str, dict[str, int]] = {}
    width = max(5, len(str(n)))
    for split, (top, prefix) in _FOLDER_PREFIX.items():
        counts[split] = {cls: 0 for cls in sorted(folders)}
        if split not in data:
            continue
        ds = data[split]
        imgs = ds.images[:, 0].numpy()
        masks = (ds.masks.numpy().astype(np.uint8) * 255) if ds.masks is not None else None
        for i, label in enumerate(ds.labels.tolist()):
            cls = folders[label]
            fname = f"{prefix}_{i + 1:0{width}d}.png"
            jobs.append((imgs[i], masks[i], out / top / cls / fname, out / "masks" / top / cls / fname))
            counts[split][cls] += 1

    def save(job: tuple[np.ndarray, np.ndarray, Path, Path]) -> None:
        img, mask, p_img, p_mask = job
        # compress_level=1: 48x48 files are tiny either way; the default level costs 3x the time.
        Image.fromarray(img).save(p_img, compress_level=1)
        Image.fromarray(mask).save(p_mask, compress_level=1)

    # only the class folders that receive images: an empty class folder reads as a broken data set
    for p in sorted({p.parent for job in jobs for p in job[2:]}):
        p.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(save, jobs, chunksize=64))
    (out / "README.txt").write_text(
        _README.format(
            seed=seed, difficulty=float(difficulty), classes=", ".join(folders),
            counts="; ".join(f"{s}: {sum(c.values())}" for s, c in counts.items()),
        )
    )
    return counts
