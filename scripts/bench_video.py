"""`fermetric predict video.mp4`: frames analysed per second, per face detector.

The clip is made here: the bundled photo (fermetric/data/faces/astronaut_photo.jpg) at 384 px
moving across a 640x480 gray frame, 25 fps, `--seconds` long (mp4v through OpenCV). Each detector
runs `fermetric.api.predict.predict_video` on it with the model's default TTA, every frame, detection
and crops included; the table gives frames/s, the frames with a face and the faces followed. Run
alone on the machine:

    python scripts/bench_video.py fer2013-baseline --threads 2 --seconds 10 [--min-face 100]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clip(path: Path, seconds: float, fps: int = 25) -> Path:
    import cv2

    from fermetric.data.bundled import bundled_faces

    face = cv2.resize(cv2.imread(str(bundled_faces()[0].photo)), (384, 384), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    n = int(round(seconds * fps))
    for i in range(n):
        frame = np.full((480, 640, 3), 128, np.uint8)
        x = int(round((640 - 384) * i / max(1, n - 1)))
        frame[48:48 + 384, x:x + 384] = face
        writer.write(frame)
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a run directory or a pretrained model's name")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--min-face", type=int, default=40, help="predict --min-face (the pyramid BlazeFace searches)")
    ap.add_argument("--detector", nargs="+", default=["blazeface", "haar"], choices=["auto", "blazeface", "haar"])
    a = ap.parse_args()
    import torch

    from fermetric.api.predict import predict_video

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", a.seconds)
        print("| model | detector | min face | frames | frames with a face | faces followed | frames/s (analysed) | wall s | threads |")
        print("|---|---|---|---|---|---|---|---|---|")
        for detector in a.detector:
            kw = dict(detector=detector, min_face=a.min_face)
            predict_video(a.model, clip, Path(tmp) / f"warm-{detector}", **kw)  # loads, first forwards
            t0 = time.perf_counter()
            res = predict_video(a.model, clip, Path(tmp) / detector, **kw)
            wall = time.perf_counter() - t0
            info = res.to_json()
            print(f"| {a.model} | {detector} | {a.min_face} | {res.frames} | {info['frames_with_faces']} | {len(res.faces)} | "
                  f"{info['analysed_frames_per_second']} | {wall:.1f} | {a.threads} |", flush=True)


if __name__ == "__main__":
    main()
