"""Predicting expressions on photos with a trained run: detect faces, crop them to 48x48, score
every class, and draw the result.

Both model families are served, through the run's scorer (fermetric.scoring.run_scorer): a
classifier gives its softmax, an embedding model the vote fractions of its kNN index over the
training gallery (fermetric.retrieval.index.run_knn), exactly what `evaluate` and `knn-eval`
measure; calibrated where `fermetric calibrate` fitted the run. The optional saliency overlay is
Grad-CAM of the predicted class, through a ClassifierScorer or, for embedding runs, a
PrototypeScorer (cosine to the class centroids of the gallery).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import DataError, FermetricError
from fermetric.utils.outputs import output_dir
from fermetric.inference.faces import (
    CROP_MAX_SIDE,
    DEFAULT_MARGIN,
    DETECT_MODES,
    DETECTOR_NAMES,
    Photo,
    check_detector,
    expand_inputs,
    find_faces,
    no_face_message,
    read_photo,
    resolve_detector,
)
from fermetric.retrieval.index import run_knn
from fermetric.scoring.run import run_scorer
import fermetric.run_layout as layout

log = logging.getLogger("fermetric.predict")

__all__ = ["FaceResult", "ImageResult", "BatchResult", "FacePredictor", "predict_images", "annotate"]



@dataclass
class FaceResult:
    """One face of one image.

    Attributes:
        box: (x, y, w, h) of the detected face (the whole image's square when not detected).
        crop_box: (x0, y0, x1, y1) of the square that was resized to 48x48 (may reach outside
            the image: edge pixels were repeated there).
        probabilities: (C,) class probabilities (sum 1).
        label_id, label: the predicted class.
        crop: (48, 48) uint8, what the model saw.
        saliency: (48, 48) float32 in [0, 1], or None.
    """

    box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    probabilities: np.ndarray
    label_id: int
    label: str
    crop: np.ndarray = field(repr=False)
    saliency: Optional[np.ndarray] = field(default=None, repr=False)

    def to_json(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "crop_box": list(self.crop_box),
            "label": self.label,
            "label_id": self.label_id,
            "probability": float(self.probabilities[self.label_id]),
            "probabilities": {name: round(float(p), 6) for name, p in zip(class_names, self.probabilities)},
        }


@dataclass
class ImageResult:
    path: Path
    size: tuple[int, int]
    mode: str  # "detected" or "whole image"
    faces: list[FaceResult]
    annotated: Optional[Path] = None

    def to_json(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "width": self.size[0],
            "height": self.size[1],
            "mode": self.mode,
            "annotated": None if self.annotated is None else str(self.annotated),
            "faces": [f.to_json(class_names) for f in self.faces],
        }


@dataclass
class BatchResult:
    """Results of a batch: the images that gave predictions and those that did not (with why)."""

    images: list[ImageResult]
    errors: list[tuple[Path, str]]
    class_names: tuple[str, ...]
    run: str = ""
    kind: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return sum(len(r.faces) for r in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "kind": self.kind,
            "class_names": list(self.class_names),
            "settings": self.settings,
            "images": [r.to_json(self.class_names) for r in self.images],
            "errors": [{"path": str(p), "error": msg} for p, msg in self.errors],
            "notes": self.notes,
        }


# What `fermetric predict` (and the pretrained demo) average over: the shifted crops x flip that
# the zoo's cards report as "TTA" (fer2013-baseline: 65.53 % -> 66.20 % on PublicTest); ten views
# of a 48x48 face cost milliseconds next to face detection.
DEFAULT_TTA = "shift"


# the scorer of the probabilities `predict` reports, per run kind: softmax, kNN vote, weighted vote
_PROBA_SCORER = {"classifier": "classifier", "embedding": "knn", "ensemble": "auto"}


class FacePredictor:
    """Class probabilities of 48x48 face crops from a trained run.

    Args:
        run: a fermetric.runs.Run (classifier or embedding).
        batch_size: crops per forward pass.
        tta: None (one forward pass per crop), "shift" (mean over 5 shifted crops x flip) or
            "tencrop" (fermetric.scoring.tta.tta_views); `fermetric predict` uses DEFAULT_TTA.
    """

    def __init__(self, run, batch_size: int = 256, tta: bool | str | None = None):
        from fermetric.scoring.tta import resolve_tta

        if run.kind not in _PROBA_SCORER:
            raise FermetricError(f"{run.path}: cannot predict with a run of kind {run.kind!r}")
        self.run = run
        self.kind: str = run.kind
        self.class_names: tuple[str, ...] = tuple(run.class_names)
        self.batch_size = batch_size
        # an ensemble's members carry their own TTA (its card); asking it for more is refused there
        self.tta: str | None = None if run.kind == "ensemble" else resolve_tta(tta)
        self._proba_scorer = None
        self._scorer = None

    @classmethod
    def from_run_dir(cls, path: str | Path, device: Optional[str] = "auto", **kw) -> "FacePredictor":
        from fermetric.zoo.load import open_run as load_run

        return cls(load_run(path, device=device or "auto"), **kw)

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model

    def _float_batch(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.tensor(np.asarray(crops))  # a copy: callers' arrays may be read-only views
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE) or x.dtype != torch.uint8:
            raise DataError(f"crops must be uint8 (N, 48, 48) or (N, 1, 48, 48); got {tuple(x.shape)} {x.dtype}")
        return x.float().div_(255.0)

    def knn(self):
        """The run's kNN classifier: RUN/index when built, else fitted on the train embeddings."""
        return run_knn(self.run)

    def scorer(self):
        """The run's scorer of these probabilities: softmax (classifiers) or kNN votes (embedding runs)."""
        if self._proba_scorer is None:
            # eager: photos give small batches of varying size, which a compiled graph would pad
            self._proba_scorer = run_scorer(self.run, _PROBA_SCORER[self.kind],
                                                 output="softmax", batch_size=self.batch_size, compile=False,
                                                 tta=self.tta or False)
        return self._proba_scorer

    @property
    def calibration(self) -> Optional[dict]:
        """What `fermetric calibrate` fitted for this run and this TTA: a classifier's temperature or
        an embedding run's vote smoothing (None: not calibrated, or for other weights or TTA)."""
        if not hasattr(self, "_calibration"):
            self._calibration = self.run.stored_calibration(self.tta)
        return self._calibration

    @property
    def temperature(self) -> Optional[float]:
        """The calibrated temperature of a classifier's softmax, or None."""
        from fermetric.scoring.calibration import temperature_of

        return temperature_of(self.calibration)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Crops uint8 (N, 48, 48) or (N, 1, 48, 48) -> (N, C) float64 probabilities (calibrated
        when the run was calibrated for this TTA: fermetric calibrate)."""
        p = self.scorer().scores(self._float_batch(crops)).numpy().astype(np.float64)
        if p.shape[0] == 0:
            return np.zeros((0, len(self.class_names)))
        if self.calibration is not None:
            from fermetric.scoring.calibration import apply_calibration

            p = apply_calibration(p, self.calibration)
        if p.shape[1] != len(self.class_names):
            raise FermetricError(f"{self.run.path}: the model scores {p.shape[1]} classes but the run has {len(self.class_names)}")
        return p

    def saliency(self, crops: np.ndarray, targets: Sequence[int]) -> np.ndarray:
        """Grad-CAM maps (N, 48, 48) in [0, 1] (each map scaled by its maximum) for `targets`.

        Raises:
            ImportError: fermetric.analysis is not available.
        """
        from fermetric.analysis.gradcam import gradcam

        if self._scorer is None:
            # Grad-CAM of the logits (classifiers) or of the cosine to the class centroids of the
            # train gallery (embedding runs): differentiable scores of the same decision
            self._scorer = run_scorer(self.run, "auto", output="logits")
        maps = np.asarray(gradcam(self._scorer, self._float_batch(crops), list(map(int, targets))), dtype=np.float32)
        peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
        return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def split_run_and_images(args: Sequence[str], model: Optional[str] = None) -> tuple[str, list[str]]:
    """`predict [RUN] IMAGE...`: the run and the images.

    RUN comes first as before: a run directory there is the run (a folder with config.yaml or
    checkpoints/, so a broken run fails as one), and so is a pretrained model's name. When the
    first argument is an image file or a folder of images, or with --model NAME (then every
    argument is an image or a folder of images), the pretrained model (--model, else the zoo's
    default classifier) predicts.

    Raises:
        ValueError when no image is left, or --model and a RUN are both given.
    """
    from fermetric.zoo import DEFAULT_CLASSIFIER, is_pretrained_name

    def names_a_run(arg: str) -> bool:
        p = Path(arg)
        return layout.config_path(p).is_file() or layout.checkpoints_dir(p).is_dir() or (
            not p.exists() and is_pretrained_name(arg))

    args = list(args)
    for arg in args:  # a folder of runs is a mistyped RUN, not a batch of figures to predict
        if Path(arg).is_dir() and not names_a_run(arg):
            inner = next((c.parent for c in Path(arg).glob("*/checkpoints") if c.is_dir()), None)
            if inner is not None:
                raise ValueError(f"{arg} is not a run directory but holds runs (e.g. {inner}); give one of them as RUN")
    if model is not None:
        if args and names_a_run(args[0]):
            raise ValueError(f"give either RUN ({args[0]}) or --model {model}, not both")
        run = model
    elif args and names_a_run(args[0]):
        run = args.pop(0)
    else:
        run = DEFAULT_CLASSIFIER
        if not is_pretrained_name(run):
            raise ValueError(f"no RUN given, and the default pretrained model {run!r} is not installed "
                             "(fermetric models --pretrained lists what is); give a trained run: "
                             "fermetric predict RUN IMAGE [IMAGE ...]")
    if not args:
        raise ValueError("no IMAGE given: fermetric predict [RUN] IMAGE [IMAGE ...]")
    return run, args


PREDICTIONS_LEGACY = ("predictions.json",)  # a predict --out folder of a version before output markers


def predict_images(
    predictor: FacePredictor,
    inputs: Iterable[str | Path],
    out_dir: Optional[str | Path] = None,
    *,
    detect: str = "auto",
    min_face: int = 40,
    margin: float = DEFAULT_MARGIN,
    saliency: bool = False,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    detector: str = "auto",
) -> BatchResult:
    """Predict every face in every image; directories are expanded to their images.

    Args:
        predictor: the run's FacePredictor.
        inputs: image files and/or directories.
        out_dir: where predictions.json and the annotated images go (None: write nothing); a
            folder that holds files fermetric did not write is refused, and when no image gives
            a prediction nothing is written (an earlier predictions.json stays).
        detect: "auto" (images <= 64 px on both sides are crops, others are searched),
            "always" or "never" (every image is a crop).
        min_face: smallest face side searched, in pixels.
        detector: "auto", "blazeface" or "haar" (fermetric.inference.faces.resolve_detector).
        margin: the crop is (1 + margin) x the face box's longer side.
        saliency: overlay Grad-CAM of the predicted class (skipped with a note when
            fermetric.analysis is unavailable or fails).
        progress: wraps the list of files (e.g. a tqdm factory).

    Returns:
        A BatchResult; an unreadable file, an image without a face, a missing path or an empty
        directory is an entry of `errors`, never an exception.
    """
    if detect not in DETECT_MODES:
        raise DataError(f"detect must be one of {DETECT_MODES}; got {detect!r}")
    check_detector(detector)
    if detector == "blazeface":  # asked for by name: one that cannot load fails here, before any output
        resolve_detector(detector)
    # otherwise the detector loads at the first photo searched (a batch of crops never loads it)
    not_images: list[Path] = []
    files, errors = expand_inputs(inputs, skipped=not_images)
    batch = BatchResult(
        images=[], errors=list(errors), class_names=predictor.class_names, run=str(predictor.run.path),
        kind=predictor.kind,
        settings={"detect": detect, "min_face": min_face, "margin": margin, "tta": predictor.tta,
                  "temperature": predictor.temperature, "calibration": predictor.calibration, "crop_max_side": CROP_MAX_SIDE,
                  "saliency": saliency, "detector": None},
    )
    if not_images:
        batch.notes.append(f"{len(not_images)} file(s) in the folders given are not images by their extension and were "
                           f"skipped (e.g. {not_images[0]})")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # refused before any work when it holds what is not ours; made at the first face
        output_dir(out, "predictions", legacy=PREDICTIONS_LEGACY, create=False)
    used_names: set[str] = set()
    want_saliency = saliency
    for path in (progress(files) if progress else files):
        try:
            photo = read_photo(path)
        except DataError as exc:
            errors_msg = str(exc).removeprefix(f"{path}: ")
            batch.errors.append((path, errors_msg))
            continue
        mode, faces = find_faces(photo, detect, min_face, margin, detector)
        if mode == "detected":  # the detector that searched the photos (none when every image was a crop)
            batch.settings["detector"] = DETECTOR_NAMES[resolve_detector(detector)]
        if not faces:
            batch.errors.append((path, no_face_message(photo, detect, min_face)))
            continue
        crops = np.stack([c for _, c, _ in faces])
        probs = predictor.predict_proba(crops)
        labels = probs.argmax(axis=1)
        maps: Optional[np.ndarray] = None
        if want_saliency:
            try:
                maps = predictor.saliency(crops, labels)
            except ImportError as exc:
                batch.notes.append(f"saliency overlay skipped: fermetric.analysis is not available ({exc})")
                want_saliency = False
            except FermetricError as exc:
                batch.notes.append(f"saliency overlay skipped: {exc}")
                want_saliency = False
        result = ImageResult(path=path, size=photo.size, mode=mode, faces=[])
        for i, (box, crop, cb) in enumerate(faces):
            lid = int(labels[i])
            result.faces.append(FaceResult(
                box=tuple(int(v) for v in box), crop_box=tuple(int(v) for v in cb), probabilities=probs[i],
                label_id=lid, label=predictor.class_names[lid], crop=crop,
                saliency=None if maps is None else maps[i],
            ))
        if out is not None:
            output_dir(out, "predictions", legacy=PREDICTIONS_LEGACY)
            result.annotated = _unique(out, f"{path.stem}_pred.png", used_names)
            annotate(photo, result.faces).save(result.annotated)
        batch.images.append(result)
    if out is not None and batch.images:  # nothing predicted: the command fails, an earlier predictions.json stays
        from fermetric.utils.io import write_json

        write_json(out / "predictions.json", batch.to_json())
    return batch


def _unique(folder: Path, name: str, used: set[str]) -> Path:
    stem, suffix = name.rsplit(".", 1)
    candidate, i = name, 2
    while candidate in used:
        candidate = f"{stem}_{i}.{suffix}"
        i += 1
    used.add(candidate)
    return folder / candidate


# -- drawing ---------------------------------------------------------------------------------------

BOX_COLOUR = (255, 215, 0)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def annotate(photo: Photo, faces: Sequence[FaceResult], min_side: int = 256):
    """The photo (RGB) with each face's box, label and probability; the saliency map, when a
    face has one, is blended (jet colours) over its crop square. Small images are enlarged to
    `min_side` (nearest neighbour) so the text stays readable.

    Returns:
        A PIL.Image (RGB).
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    img = Image.fromarray(photo.rgb)
    w, h = img.size
    scale = max(1.0, min_side / min(w, h))
    if scale > 1.0:
        img = img.resize((round(w * scale), round(h * scale)), Image.NEAREST)
    canvas = np.asarray(img, dtype=np.float32).copy()
    cmap = colormaps["jet"]
    for f in faces:
        if f.saliency is None:
            continue
        x0, y0, x1, y1 = (int(round(v * scale)) for v in f.crop_box)
        side = max(1, x1 - x0)
        heat = np.asarray(Image.fromarray((f.saliency * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR),
                          dtype=np.float32) / 255.0
        colour = cmap(heat)[..., :3] * 255.0
        alpha = 0.55 * heat[..., None]
        # only the part of the crop square inside the image is drawn
        ix0, iy0 = max(0, x0), max(0, y0)
        ix1, iy1 = min(canvas.shape[1], x0 + side), min(canvas.shape[0], y0 + side)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        sub = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        region = canvas[iy0:iy1, ix0:ix1]
        canvas[iy0:iy1, ix0:ix1] = region * (1 - alpha[sub]) + colour[sub] * alpha[sub]
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    W, H = img.size
    line = max(2, round(min(W, H) / 200))
    font = _font(max(12, round(min(W, H) / 28)))
    for f in faces:
        x, y, bw, bh = (v * scale for v in f.box)
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], outline=BOX_COLOUR, width=line)
        text = f"{f.label} {f.probabilities[f.label_id] * 100:.0f}%"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l, b - t
        pad = max(2, line)
        ty = y - th - 2 * pad if y - th - 2 * pad >= 0 else min(y + bh, H - th - 2 * pad)
        tx = min(max(0, x), max(0, W - tw - 2 * pad))
        draw.rectangle([tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad], fill=(0, 0, 0))
        draw.text((tx + pad - l, ty + pad - t), text, fill=BOX_COLOUR, font=font)
    return img
