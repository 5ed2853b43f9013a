"""`fermetric export RUN --format onnx`: a run (or zoo entry) as a folder that ONNX Runtime alone can
predict with, no torch and no fermetric needed:

- `model.onnx`: for a classifier, the probabilities `fermetric predict` gives (its TTA views and
  the calibration `fermetric calibrate` fitted are inside the graph); for an embedding model, the
  unit-length embedding its kNN classifier votes with. Input "images": (N, 1, 48, 48) float32
  grayscale face crops in [0, 1] (what predict's face detection and crop make).
- `gallery.npz` (embedding models): the training embeddings (float32) and labels the kNN index
  holds; `card.json` gives the vote (k, weighting, temperature, vote smoothing) to apply.
- `card.json`: classes, input and output, where the model came from (the run's checkpoint
  fingerprint or zoo card), the graph's SHA-256, the versions, and the largest difference from
  PyTorch measured at export; `model.json`, the graph's stamp (fermetric.models.onnx).

The graph is checked against PyTorch on the run's own faces before anything is written: an export
that would predict differently is refused, never reported as a success.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fermetric.data.classes import IMAGE_SIZE
from fermetric.errors import FermetricError
from fermetric.models import onnx
from fermetric.models.layers import PreLogits
from fermetric.utils.io import sha256_file, write_json
from fermetric.version import __version__

# the exported graph must give PyTorch's outputs to within this (the backend's bar too)
MAX_ABS_DIFF = 1e-4


class ScorerNetwork(nn.Module):
    """A scorer's forward (e.g. predict's TTA softmax, calibrated) as a network to export."""

    def __init__(self, scorer: Any):
        super().__init__()
        self.scorer = scorer
        self.net = scorer.model  # registered, so the digest and the export see its weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scorer.forward(x).float()


def _check_faces(run: Any, n: int = 64) -> torch.Tensor:
    """Faces to compare the graph with PyTorch on: the run's val images where its data is here,
    else seeded noise with a face-like range."""
    try:
        return run.load_data()["val"].float_images(torch.arange(n))
    except (FermetricError, IndexError, RuntimeError):
        return torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))


def export_onnx(run: Any, folder: Path, source: str) -> list[Path]:
    """Write the ONNX export of `run` (a classifier or embedding run, opened) into `folder` (new,
    written by the caller's staging). `source`: what the user named (a run path or zoo name).
    Returns the paths written."""
    from fermetric.inference.predictor import DEFAULT_TTA, FacePredictor
    from fermetric.scoring.calibration import CalibratedScorer

    if run.kind not in ("classifier", "embedding"):
        raise FermetricError(f"{source} is an {run.kind}: export its members one by one (an ONNX graph holds one network)")
    run.model.eval()
    card: dict[str, Any] = {"source": str(source), "kind": run.kind, "class_names": list(run.class_names),
                            "input": {"name": onnx.INPUT, "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32",
                                      "range": [0.0, 1.0], "what": "grayscale face crops, 48x48, pixels / 255"},
                            "fingerprint": getattr(run, "fingerprint", None), "fermetric_version": __version__,
                            "torch": torch.__version__, "opset": onnx.OPSET}
    if run.pretrained:
        from fermetric.zoo.registry import get_entry

        zoo_card = get_entry(run.pretrained).card
        card["zoo_entry"] = {k: zoo_card.get(k) for k in ("name", "sha256", "split", "test")}
    written = []
    if run.kind == "classifier":
        predictor = FacePredictor(run, tta=DEFAULT_TTA)
        scorer = predictor.scorer()
        if predictor.calibration is not None:
            scorer = CalibratedScorer(scorer, predictor.calibration)
        network = ScorerNetwork(scorer)
        card["output"] = {"name": onnx.OUTPUT, "shape": ["N", len(run.class_names)],
                          "what": "class probabilities, as `fermetric predict` gives them"}
        card["tta"] = predictor.tta or False
        card["calibration"] = predictor.calibration
    else:
        from fermetric.retrieval.embeddings import split_embeddings
        from fermetric.scoring.run import run_scorer

        network = PreLogits(run.model)
        knn = run_scorer(run, "knn").knn
        emb, labels = split_embeddings(run, "train")
        np.savez_compressed(folder / "gallery.npz", embeddings=emb.astype(np.float32), labels=labels.astype(np.int64))
        written.append(folder / "gallery.npz")
        card["output"] = {"name": onnx.OUTPUT, "shape": ["N", int(emb.shape[1])],
                          "what": f"unit-length embedding ({run.embedding_layer} layer)"}
        card["knn"] = {"k": int(knn.k), "weighting": str(knn.weighting), "temperature": float(knn.temperature),
                       "similarity": "cosine (dot product of unit vectors)", "gallery": "gallery.npz",
                       "vote": "weights w_j = exp((s_j - max_j s_j) / temperature) for 'distance', 1 for 'majority'; "
                               "probability of class c = sum of w_j over neighbours of class c / sum of w_j",
                       "calibration": run.stored_calibration(None)}
    digest = onnx.weights_digest(network)
    path = onnx.write_graph(network, folder / "model.onnx", digest)
    written += [path, path.with_suffix(".json")]
    faces = _check_faces(run)
    with torch.no_grad():
        want = network(faces).float()
    got = onnx.OnnxGraph(path, digest)(faces)
    diff = float((want - got).abs().max())
    if not diff <= MAX_ABS_DIFF:
        raise FermetricError(f"the ONNX graph of {source} differs from PyTorch by {diff:.2e} (> {MAX_ABS_DIFF}) on "
                             f"{len(faces)} faces: not exported")
    card["checked"] = {"faces": int(len(faces)), "max_abs_diff": diff, "same_argmax": bool(torch.equal(want.argmax(1), got.argmax(1)))}
    card["sha256"] = sha256_file(path)
    write_json(folder / "card.json", card)
    return [folder / "card.json", *written]
