"""Real faces shipped inside the package with their known expression (fermetric/data/faces/,
source and licence in its README.md): a pretrained model can be tried, tested and explained on a
real face on any machine, without a data set or a download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fermetric.data.classes import FER2013_CLASSES, IMAGE_SIZE
from fermetric.errors import DataError

__all__ = ["FACES_DIR", "BundledFace", "bundled_faces"]

FACES_DIR = Path(__file__).resolve().parent / "faces"

# name, 48x48 crop, photo it was cropped from, FER2013 class, where it comes from
_FACES = (
    ("astronaut", "astronaut_happy.png", "astronaut_photo.jpg", "Happy",
     "NASA portrait of Eileen Collins (public domain), from scikit-image's astronaut.png"),
)


@dataclass(frozen=True)
class BundledFace:
    """A bundled face.

    Attributes:
        name: short name ("astronaut").
        crop: path of the 48x48 grayscale crop (what a model sees).
        photo: path of the photo it was cropped from (for `predict`'s face detection).
        label: its expression as a FER2013 class name ("Happy").
        label_id: that class's FER2013 id.
        source: where the picture comes from.
    """

    name: str
    crop: Path
    photo: Path
    label: str
    label_id: int
    source: str

    def image(self) -> np.ndarray:
        """The crop as (48, 48) uint8."""
        from fermetric.data.images import read_face_image

        return np.asarray(read_face_image(self.crop, size=IMAGE_SIZE), dtype=np.uint8)


def bundled_faces() -> list[BundledFace]:
    """The faces shipped with fermetric, with their known FER2013 class.

    Raises:
        DataError: a bundled file is missing (a broken installation).
    """
    faces = []
    for name, crop, photo, label, source in _FACES:
        face = BundledFace(name=name, crop=FACES_DIR / crop, photo=FACES_DIR / photo, label=label,
                           label_id=FER2013_CLASSES.index(label), source=source)
        for p in (face.crop, face.photo):
            if not p.is_file():
                raise DataError(f"bundled face {p} is missing; reinstall fermetric (pip install --force-reinstall fermetric)")
        faces.append(face)
    return faces
