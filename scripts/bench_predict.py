"""`fermetric predict` on photos with real faces: seconds per photo (detection + prediction), how
often the detector finds the face (and boxes elsewhere) and how often the model names its expression.

The photos are FER2013 PublicTest faces (val split of the dev CSV) upscaled to 200 px and pasted
on a 640x480 textured background (the same composition as tests/test_predict.py), so the true
label and place of every face are known: a face counts as found when a box's centre lies in the
pasted square and its side is 0.3-1.5 of the face's; every other box is a false box. Run alone:

    python scripts/bench_predict.py fer2013-baseline --data fer2013.csv.gz --n 100 --threads 2
    python scripts/bench_predict.py fer2013-baseline fer2013-ensemble --data fer2013.csv.gz --n 400 --threads 2 --margin 0
    python scripts/bench_predict.py fer2013-baseline --data fer2013.csv.gz --n 400 --detector blazeface haar

Several models, detectors and margins are measured on the same photos in one run (an ensemble next
to a single classifier, BlazeFace next to Haar): seconds per photo, and the seconds per face of the
model alone (the 48x48 crops in one batch, without detection).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def compose(face48: np.ndarray, rng: np.random.Generator, size: int = 200) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """(the 480x640 photo, the pasted face's square (x, y, size, size))."""
    import cv2

    bg = cv2.GaussianBlur((rng.random((480, 640)) * 60 + 100).astype(np.uint8), (0, 0), 3)
    y, x = int(rng.integers(20, 480 - size - 20)), int(rng.integers(20, 640 - size - 20))
    bg[y:y + size, x:x + size] = cv2.resize(face48, (size, size), interpolation=cv2.INTER_CUBIC)
    return bg, (x, y, size, size)


def at_face(box, face) -> bool:
    """Whether a detector's box (x, y, w, h) is the pasted face's."""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    x, y, s, _ = face
    return x <= cx <= x + s and y <= cy <= y + s and 0.3 * s <= max(box[2], box[3]) <= 1.5 * s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="run directories or pretrained models' names")
    ap.add_argument("--data", required=True, help="fer2013.csv(.gz) with a PublicTest split")
    ap.add_argument("--n", type=int, default=100, help="photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, nargs="+", default=[0.0],
                    help="crop margins to compare (predict --margin; default 0)")
    ap.add_argument("--detector", nargs="+", default=["blazeface", "haar"], choices=["auto", "blazeface", "haar"],
                    help="face detectors to compare (predict --detector)")
    a = ap.parse_args()

    import torch
    from PIL import Image

    from fermetric.config import DataConfig
    from fermetric.data.sources import load_data
    from fermetric.inference import FacePredictor, predict_images

    torch.set_num_threads(a.threads)
    val = load_data(a.data, DataConfig())["val"]
    rng = np.random.default_rng(a.seed)
    idx = rng.choice(len(val), size=min(a.n, len(val)), replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        files, places = [], []
        for j, i in enumerate(idx):
            p = Path(tmp) / f"photo_{j:04d}.jpg"
            photo, place = compose(val.images[i, 0].numpy(), rng)
            Image.fromarray(np.stack([photo] * 3, axis=2)).save(p, quality=92)
            files.append(p)
            places.append(place)
        labels = val.labels.numpy()[idx]
        crops = val.images[idx, 0].numpy()
        print("| model | detector | margin | photos | face found | false boxes | right on the photo (found faces) | "
              "right on the FER2013 crop (same faces) | s/photo | s/face (model alone) | model load s | threads |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model in a.models:
            t0 = time.perf_counter()
            predictor = FacePredictor.from_run_dir(model, device="cpu")
            load_s = time.perf_counter() - t0
            # the reference: the same model on the data set's own 48x48 crops of the same faces
            t0 = time.perf_counter()
            on_crops = predictor.predict_proba(crops).argmax(1) == labels
            per_face = (time.perf_counter() - t0) / len(crops)
            for detector in a.detector:
                predict_images(predictor, files[:2], detector=detector)  # warm-up: detector load, first forward
                for margin in a.margin:
                    t0 = time.perf_counter()
                    batch = predict_images(predictor, files, margin=margin, detector=detector)
                    seconds = time.perf_counter() - t0
                    found = {Path(r.path).name: r for r in batch.images}
                    hits = correct = crop_correct = false = 0
                    for j, f in enumerate(files):
                        r = found.get(f.name)
                        faces = [] if r is None else r.faces
                        face = next((x for x in faces if at_face(x.box, places[j])), None)
                        false += sum(not at_face(x.box, places[j]) for x in faces)
                        if face is not None:
                            hits += 1
                            correct += int(face.label_id == labels[j])
                            crop_correct += int(on_crops[j])
                    print(f"| {model} | {detector} | {margin:g} | {len(files)} | {hits / len(files) * 100:.1f} % | {false} | "
                          f"{correct / max(hits, 1) * 100:.1f} % | {crop_correct / max(hits, 1) * 100:.1f} % | "
                          f"{seconds / len(files):.3f} | {per_face:.4f} | {load_s:.2f} | {a.threads} |", flush=True)

if __name__ == "__main__":
    main()
