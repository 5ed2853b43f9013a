"""Reading one face image of any size and mode into fermetric's 48x48 grayscale format.

Used by the folder loader and by `fermetric predict`, so a photo is prepared exactly as the
training images were.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import DataError
from fermetric.utils.io import file_kind

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
)


# Smaller pictures hold no face: a 1x1 or 4x4 image resized to 48x48 is a flat patch, and a
# prediction on it would be reported with a confidence it cannot have. 8 px is where a face is
# still a few pixels per feature (FER2013's are 48).
MIN_IMAGE_SIDE = 8


def check_regular_file(path: str | os.PathLike) -> Path:
    """Refuse what is not a regular file before anything opens it: reading a FIFO blocks forever,
    a device may never end.

    Raises:
        DataError: missing, a folder, or a FIFO, socket or device.
    """
    path = Path(path)
    try:
        kind = file_kind(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if kind == "directory":
        raise DataError(f"{path}: is a directory, not an image")
    if kind != "regular":
        raise DataError(f"{path}: is a {kind}, not a regular file; only regular image files are read")
    return path


def check_image_size(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse images with a side under MIN_IMAGE_SIDE (naming the file and its size)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DataError(
            f"{path}: the image is {width}x{height} pixels; a face image needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} (FER2013's are 48x48)"
        )


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a name with one of IMAGE_EXTENSIONS (case-insensitive) that is not hidden."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def to_gray(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W) uint8 luminance.

    Transparent pixels are composited onto white (what a viewer shows), so hidden colour
    values under alpha = 0 cannot leak in. High-bit-depth images are rescaled, not clipped.
    """
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"))
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 255.0
        return np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if a.max(initial=0) <= 1.0:  # float images are usually in [0, 1]
            a = a * 255.0
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.asarray(img)
    # RGB, CMYK, YCbCr, LAB, HSV, 1: PIL knows the conversion (ITU-R 601-2 luma for RGB).
    if mode not in ("RGB", "1"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"))


def read_face_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read an image file as a square grayscale face crop.

    Steps: apply the EXIF orientation; convert to 8-bit luminance (alpha composited onto white,
    16-bit and float images rescaled); centre-crop to a square of the shorter side; resize to
    `size` x `size` with PIL's bicubic filter, which antialiases when shrinking (its support
    widens with the scale factor). A 48x48 grayscale image comes back unchanged. Animated
    images give their first frame.

    Args:
        path: an image file (jpg jpeg png bmp gif tif tiff webp pgm, or anything PIL reads).
        size: output side.

    Returns:
        (size, size) uint8.

    Raises:
        DataError: the file is missing, not a regular file (a FIFO is never opened), not an image,
            truncated or corrupt, or smaller than MIN_IMAGE_SIDE (naming the file).
    """
    path = check_regular_file(path)
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is an error here: a face crop is never 90 Mpixel.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG" and min(img.size) > 2 * size:
                    # Decode big JPEGs at a reduced scale (by DCT): much faster, same result
                    # after the final resize; draft keeps both sides >= the requested size.
                    img.draft("L", (2 * size, 2 * size))
                img.load()
                img = ImageOps.exif_transpose(img)
                gray = to_gray(img)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such image file") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image (PIL cannot identify the file); remove it or fix its extension") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc})") from exc
    if gray.ndim != 2 or gray.size == 0:
        raise DataError(f"{path}: image of shape {gray.shape}; expected a 2-D picture")
    h, w = gray.shape
    check_image_size(path, w, h)
    if (h, w) == (size, size):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(gray[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def read_mask_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read a ground-truth evidence mask: (size, size) bool, True where the pixel is > 127.

    The mask goes through the same crop and resize as its image, so they stay aligned.
    """
    return read_face_image(path, size) > 127
