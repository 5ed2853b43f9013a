"""From a photo on disk to 48x48 grayscale face crops: reading, face detection and cropping.

The rule for what is a face crop already: an image no larger than `CROP_MAX_SIDE` (64) pixels on
both sides is taken as a crop (FER2013 images are 48x48) and used whole, centre-cropped to a
square; anything larger goes through face detection, unless the caller says otherwise
(`detect="never"` / `--no-detect` takes every image whole, `detect="always"` detects even in
small ones).

Two detectors (`DETECTORS`): "blazeface", MediaPipe's BlazeFace searched over a tile pyramid
(fermetric.inference.blazeface; its graph ships inside the package and runs with ONNX Runtime or
OpenCV's dnn), and "haar", OpenCV's frontal-face Haar cascade shipped with opencv-python-headless
(4.x; OpenCV 5 removed it). "auto" is BlazeFace, and Haar where BlazeFace cannot load (with a
warning). On scripts/bench_predict.py's 400 photos BlazeFace found 96 % of the faces, Haar 79 %. Both
give boxes framed as FER2013 frames its faces; each box is widened into a square with a margin and
resized to 48x48 with area averaging.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from fermetric.data.classes import IMAGE_SIZE
from fermetric.data.images import IMAGE_EXTENSIONS as _DATA_IMAGE_EXTENSIONS
from fermetric.data.images import check_image_size, check_regular_file, is_image_file, to_gray
from fermetric.errors import DataError, FermetricError
from fermetric.utils.checks import check_int, check_number

__all__ = [
    "CROP_MAX_SIDE",
    "IMAGE_EXTENSIONS",
    "Photo",
    "read_photo",
    "detect_faces",
    "square_box",
    "crop_face",
    "whole_image_crop",
    "expand_inputs",
    "find_faces",
    "one_face",
    "DETECT_MODES",
    "DETECTORS",
    "check_detector",
    "resolve_detector",
    "is_face_crop",
]

# Images no larger than this on both sides are taken as face crops, not searched for faces.
CROP_MAX_SIDE = 64
# Crop side = (1 + margin) x the detector's box. FER2013's faces are cropped tightly: on FER2013
# PublicTest faces pasted into photos (scripts/bench_predict.py, 400 photos, a 58 % model) the
# expression was right for 55.7 % of the found faces at margin 0, 54.4 % at 0.05, 53.5 % at 0.1
# and 50.3 % at 0.2, against 57.2 % on the data set's own crops of the same faces.
DEFAULT_MARGIN = 0.0

# one list of image extensions for data folders and photos alike
IMAGE_EXTENSIONS = tuple(sorted(_DATA_IMAGE_EXTENSIONS))

# Photos are searched at most this large (longest side): detection time grows with the pixel
# count, and faces the cascade can find survive the downscale.
DETECT_MAX_SIDE = 1600


@dataclass
class Photo:
    """A decoded image.

    Attributes:
        path: where it came from.
        rgb: (H, W, 3) uint8, EXIF orientation applied, transparency composited on white.
        gray: (H, W) uint8 luma (ITU-R 601-2, as PIL's "L" mode).
    """

    path: Path
    rgb: np.ndarray
    gray: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.gray.shape[1]), int(self.gray.shape[0])


def read_photo(path: str | Path) -> Photo:
    """Decode any image PIL reads (JPEG, PNG, BMP, GIF, TIFF, WebP, 8/16-bit, grayscale or colour).

    Raises:
        DataError: the file is missing, a directory, FIFO or device, not a decodable image, or
            smaller than MIN_IMAGE_SIDE (the message says which and why).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_regular_file(path)  # a FIFO named .jpg would block Image.open forever
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)  # for the annotated picture
            # the model's input: the same grayscale conversion as every data set image
            gray = to_gray(im)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file PIL can read (expected e.g. {', '.join(IMAGE_EXTENSIONS[:5])})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc})") from None
    check_image_size(path, rgb.shape[1], rgb.shape[0])
    return Photo(path=path, rgb=rgb, gray=np.ascontiguousarray(gray, dtype=np.uint8))


def _to_rgb(im) -> np.ndarray:
    """(H, W, 3) uint8 of any PIL mode; 16-bit and float images are scaled by their range."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def is_face_crop(width: int, height: int) -> bool:
    """Whether an image this size is taken as a face crop (no detection): both sides <= 64 px."""
    return width <= CROP_MAX_SIDE and height <= CROP_MAX_SIDE


@functools.lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError as exc:
        raise FermetricError(
            "face detection needs OpenCV: pip install 'opencv-python-headless>=4.8,<5' "
            f"(or pass --no-detect to use whole images) [{exc}]"
        ) from None
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise FermetricError(
            f"OpenCV {cv2.__version__} has no Haar cascade classifier (OpenCV 5 removed it): "
            "pip install 'opencv-python-headless>=4.8,<5'"
        )
    xml = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    clf = cv2.CascadeClassifier(str(xml))
    if clf.empty():
        raise FermetricError(f"cannot load the Haar cascade {xml}; reinstall opencv-python-headless (<5)")
    return clf


DETECTORS = ("auto", "blazeface", "haar")
# what each detector is, for predictions.json and the video's JSON
DETECTOR_NAMES = {"blazeface": "MediaPipe BlazeFace short-range, tile pyramid",
                  "haar": "OpenCV haarcascade_frontalface_default"}


def check_detector(detector: str) -> None:
    """Raises DataError unless `detector` is one of DETECTORS."""
    if detector not in DETECTORS:
        raise DataError(f"detector must be one of {', '.join(DETECTORS)}; got {detector!r}")


@functools.lru_cache(maxsize=None)
def resolve_detector(detector: str = "auto") -> str:
    """"blazeface" or "haar": `auto` is BlazeFace unless its graph cannot be loaded here (then Haar,
    with a warning saying why).

    Raises:
        DataError: an unknown detector name.
        FermetricError: "blazeface" asked for and it cannot be loaded (the message says why).
    """
    check_detector(detector)
    if detector == "haar":
        return "haar"
    from fermetric.inference.blazeface import load_blazeface

    try:
        load_blazeface()
    except Exception as exc:  # FermetricError (missing or altered graph), ImportError, cv2.error
        if detector == "blazeface":
            raise FermetricError(f"the BlazeFace face detector cannot be loaded: {exc}") from None
        import warnings

        warnings.warn(f"BlazeFace cannot be loaded ({exc}); detecting faces with OpenCV's Haar cascade", stacklevel=2)
        return "haar"
    return "blazeface"


def detector_image(detector: str, rgb: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """The picture `detector` (resolved: "blazeface" or "haar") searches: BlazeFace the colour image
    (its network was trained on colour), Haar the grayscale the crops are cut from."""
    return rgb if detector == "blazeface" else gray


def detect_faces(
    image: np.ndarray,
    min_face: int = 40,
    detector: str = "auto",
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
) -> list[tuple[int, int, int, int]]:
    """Faces in an image.

    Args:
        image: (H, W) uint8 grayscale or (H, W, 3) uint8 RGB (BlazeFace sees colour; Haar gray).
        min_face: smallest face side to look for, in pixels of `image`.
        detector: "auto", "blazeface" or "haar" (see resolve_detector).
        scale_factor, min_neighbors: Haar only: the cascade's search step and its vote threshold
            (higher = fewer, surer detections).

    Returns:
        Boxes (x, y, w, h) in pixels of `image`, framed as FER2013 frames its faces, left to right.
    """
    import cv2

    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataError(f"detect_faces needs a (H, W) or (H, W, 3) uint8 image; got {image.shape} {image.dtype}")
    check_int("min_face", min_face, 1, where="detect_faces", error=DataError)
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    img = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    m = max(1, int(round(min_face * scale)))
    if resolve_detector(detector) == "blazeface":
        from fermetric.inference.blazeface import load_blazeface

        found, _ = load_blazeface()(img, m)
    else:
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        # No global histogram equalisation (OpenCV's sample does it): the cascade normalises each
        # window's variance itself, and on FER2013 faces pasted on textured backgrounds equalising
        # found 62 of 126 faces (39 false boxes) against 95 (4) without.
        found = _cascade().detectMultiScale(img, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(m, m))
    boxes = [tuple(int(round(v / scale)) for v in b) for b in found]
    return sorted(boxes, key=lambda b: (b[0], b[1]))  # type: ignore[return-value]


def square_box(box: Sequence[int], margin: float) -> tuple[int, int, int, int]:
    """The square crop (x0, y0, x1, y1) around a box (x, y, w, h): side = max(w, h) * (1 + margin),
    same centre. It may reach outside the image (crop_face pads by edge replication)."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    s = max(1, int(round(side)))
    return x0, y0, x0 + s, y0 + s


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if img.shape[0] >= size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def crop_face(gray: np.ndarray, box: Sequence[int], margin: float = DEFAULT_MARGIN, size: int = IMAGE_SIZE) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A square face crop, resized.

    Args:
        gray: (H, W) uint8.
        box: (x, y, w, h) of the face.
        margin: the crop is (1 + margin) times the box's longer side (0.2: 10 % each side).
        size: output side.

    Returns:
        ((size, size) uint8 crop, (x0, y0, x1, y1) crop box in image pixels). Parts of the crop
        outside the image repeat its edge pixels, so the face stays centred.
    """
    import cv2

    check_number("margin", margin, minimum=0.0, where="crop_face", error=DataError)
    h, w = gray.shape
    x0, y0, x1, y1 = square_box(box, margin)
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    src = gray if pad == 0 else cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = src[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    return _resize(np.ascontiguousarray(crop), size), (x0, y0, x1, y1)


def whole_image_crop(gray: np.ndarray, size: int = IMAGE_SIZE) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The image taken as a face crop: its centred square, resized. Returns (crop, (x0, y0, x1, y1))."""
    h, w = gray.shape
    s = min(h, w)
    x0, y0 = (w - s) // 2, (h - s) // 2
    crop = gray[y0:y0 + s, x0:x0 + s].copy()  # owned and writable, whatever `gray` is
    return (crop if s == size else _resize(crop, size)), (x0, y0, x0 + s, y0 + s)


DETECT_MODES = ("auto", "always", "never")
# one face of a photo: (detector box x, y, w, h), the 48x48 gray crop, the crop's box in the photo
Face = tuple[tuple[int, int, int, int], np.ndarray, tuple[int, int, int, int]]


def find_faces(photo: Photo, detect: str = "auto", min_face: int = 40, margin: float = DEFAULT_MARGIN,
               detector: str = "auto") -> tuple[str, list[Face]]:
    """The faces of a photo as predict and similarity take them: ("whole image", [the centre
    square]) for a crop-sized image (detect "auto") or with detect "never", else ("detected",
    every face the detector finds, possibly none)."""
    w, h = photo.size
    if detect == "never" or (detect == "auto" and is_face_crop(w, h)):
        crop, cb = whole_image_crop(photo.gray)
        return "whole image", [((cb[0], cb[1], cb[2] - cb[0], cb[3] - cb[1]), crop, cb)]
    out = []
    detector = resolve_detector(detector)
    for b in detect_faces(detector_image(detector, photo.rgb, photo.gray), min_face=min_face, detector=detector):
        crop, cb = crop_face(photo.gray, b, margin=margin)
        out.append((b, crop, cb))
    return "detected", out


def no_face_message(photo: Photo, detect: str, min_face: int, min_face_option: bool = True) -> str:
    """Why a photo gave no face, and what to try (`min_face_option`: the command has --min-face)."""
    w, h = photo.size
    hints = []
    if min_face > 24 and min_face_option:
        hints.append(f"a smaller --min-face (now {min_face})")
    hints.append("--no-detect to use the whole image as the face")
    msg = f"no face found in the {w}x{h} image; try " + " or ".join(hints)
    if detect == "always" and is_face_crop(w, h):
        msg += f" (images up to {CROP_MAX_SIDE} px are normally taken as crops)"
    return msg


def one_face(path: str | Path, detect: str = "auto", min_face: int = 40, margin: float = DEFAULT_MARGIN,
             detector: str = "auto") -> np.ndarray:
    """The 48x48 gray face of an image that should show one face (similarity): the image itself
    when it is a crop, else the largest face the detector finds.

    Raises:
        DataError: the image cannot be read, or no face is found in it (with what to try).
    """
    photo = read_photo(path)
    _, faces = find_faces(photo, detect, min_face, margin, detector)
    if not faces:
        raise DataError(f"{path}: {no_face_message(photo, detect, min_face, min_face_option=False)}")
    return max(faces, key=lambda f: f[0][2] * f[0][3])[1]


def expand_inputs(paths: Iterable[str | Path], skipped: Optional[list[Path]] = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given; directories expanded (recursively, sorted) to their image files.

    Args:
        skipped: when given, the other files found in the directories (not images by their
            extension) are appended to it, so that the caller can count them.

    Returns:
        (image paths, [(path, why it gives nothing)]): a missing path or a directory without
        images is reported, not raised, so a batch goes on.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            found = [f for f in inside if is_image_file(f)]
            if skipped is not None:
                skipped += [f for f in inside if not is_image_file(f)]
            if not found:
                problems.append((p, f"directory has no images (looked for {', '.join(IMAGE_EXTENSIONS)})"))
            files += found
        elif p.exists():
            files.append(p)
        else:
            problems.append((p, "no such file or directory"))
    return files, problems
