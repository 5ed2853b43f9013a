"""Remake the real faces bundled in fermetric/data/faces/ from scikit-image's astronaut.png.

    python scripts/make_bundled_faces.py [--out fermetric/data/faces]

astronaut.png (NASA portrait of Eileen Collins, public domain; shipped inside the scikit-image
wheel as skimage/data/astronaut.png, no download) becomes

    astronaut_photo.jpg  the head and shoulders, grayscale, 192x192: a small photo that
                         `fermetric predict` searches for a face (detection path)
    astronaut_happy.png  the 48x48 face crop exactly as predict makes it from that photo
                         (the default detector's box, DEFAULT_MARGIN, area resize): what the
                         model sees

The crop is made from the bundled photo, not from the original, so predict on the photo and the
crop give the same input to the model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

# the head and shoulders in astronaut.png (512x512; the face box is about (177, 66, 95, 95))
REGION = (112, 0, 368, 256)  # x0, y0, x1, y1: the detectors find exactly one face in it at 128-256 px
PHOTO_SIDE = 192


def main() -> None:
    import skimage

    from fermetric.inference.faces import DEFAULT_MARGIN, crop_face, detect_faces, read_photo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "fermetric" / "data" / "faces"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(skimage.__file__).parent / "data" / "astronaut.png"
    with Image.open(src) as im:
        photo = im.convert("L").crop(REGION).resize((PHOTO_SIDE, PHOTO_SIDE), Image.LANCZOS)
    photo_path = out / "astronaut_photo.jpg"
    photo.save(photo_path, quality=90, optimize=True)
    gray = read_photo(photo_path).gray
    boxes = detect_faces(gray, min_face=40)
    if len(boxes) != 1:
        raise SystemExit(f"expected one face in {photo_path}, the detector found {len(boxes)}: {boxes}")
    crop, _ = crop_face(gray, boxes[0], margin=DEFAULT_MARGIN)
    Image.fromarray(np.asarray(crop, dtype=np.uint8)).save(out / "astronaut_happy.png", optimize=True)
    for p in (photo_path, out / "astronaut_happy.png"):
        print(f"{p}: {p.stat().st_size} bytes")
    print(f"face box in the photo: {boxes[0]}")


if __name__ == "__main__":
    main()
