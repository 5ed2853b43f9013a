"""Face verification: the probability that two faces show the same expression.

The cosine similarity of two embeddings is turned into a probability by Platt scaling
(a one-feature logistic regression, p = sigmoid(a * cos + b)) fitted on pairs of val images.
The pairs are drawn uniformly from all pairs of distinct val images, so the probability is
calibrated to that population: two faces drawn like val's, with its class priors (same-class
pairs are a minority, about the sum of the squared class shares).

`verification_metrics` scores pairs of a split: ROC AUC (threshold-free), and verification
accuracy at probability 0.5 (the threshold the calibration implies), with the share of
same-expression pairs to compare it with (always answering "different" scores 1 - that share).
The calibration is kept in RUN/similarity.json, stamped with the checkpoint it came from, and is
refitted when the run's weights change.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

import fermetric.run_layout as layout
from fermetric.errors import DataError
from fermetric.retrieval.embeddings import embedding_function, split_embeddings

# Pairs drawn from a split for calibration and scoring (all pairs of FER2013's PublicTest are 6.4 M).
MAX_PAIRS = 200_000


def sample_pairs(labels: np.ndarray, max_pairs: int = MAX_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j), i != j, of up to `max_pairs` pairs drawn uniformly from all distinct pairs
    (all of them, each once, when there are fewer)."""
    n = len(labels)
    if n < 2:
        raise DataError(f"pairs need at least 2 images; the split has {n}")
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    j = (i + rng.integers(1, n, size=max_pairs)) % n  # never i itself
    return i, j


def pair_similarities(emb: np.ndarray, labels: np.ndarray, max_pairs: int = MAX_PAIRS,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, same-class flags) of pairs of rows of (N, D) `emb` (see `sample_pairs`)."""
    e = np.asarray(emb, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    labels = np.asarray(labels)
    i, j = sample_pairs(labels, max_pairs, seed)
    return np.einsum("nd,nd->n", e[i], e[j]), labels[i] == labels[j]


@dataclass
class Calibration:
    """p(same expression) = sigmoid(a * cosine + b), fitted on `n_pairs` pairs of `split`."""

    a: float
    b: float
    split: str
    n_pairs: int
    same_share: float  # share of same-expression pairs among them

    def probability(self, cosine: Any) -> np.ndarray:
        z = self.a * np.asarray(cosine, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        return cls(float(d["a"]), float(d["b"]), str(d["split"]), int(d["n_pairs"]), float(d["same_share"]))


def fit_calibration(sims: np.ndarray, same: np.ndarray, split: str = "val") -> Calibration:
    """Platt scaling of cosine similarities to the probability of the same expression.

    Raises:
        DataError: the pairs are all of one kind (nothing to calibrate against).
    """
    from sklearn.linear_model import LogisticRegression

    same = np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise DataError(f"the {split} pairs are all {'same' if same.all() else 'different'}-expression pairs; "
                        "calibration needs both kinds (a split with at least two classes)")
    # a large C: an (almost) unregularised fit, the plain maximum-likelihood Platt scaling
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(sims, dtype=np.float64)[:, None], same)
    return Calibration(float(lr.coef_[0, 0]), float(lr.intercept_[0]), split, int(len(same)), float(same.mean()))


def verification_metrics(sims: np.ndarray, same: np.ndarray, calibration: Calibration) -> dict[str, Any]:
    """ROC AUC and verification accuracy (probability >= 0.5 means "same") of pairs.

    Returns:
        {"roc_auc", "accuracy", "balanced_accuracy", "same_share", "n_pairs", "brier",
         "calibrated_on"}; roc_auc is None when the pairs are all of one kind.
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    same = np.asarray(same, dtype=bool)
    p = calibration.probability(sims)
    pred = p >= 0.5
    both = same.any() and not same.all()
    return {
        "roc_auc": float(roc_auc_score(same, sims)) if both else None,
        "accuracy": float((pred == same).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(same, pred)) if both else None,
        "brier": float(np.mean((p - same) ** 2)),
        "same_share": float(same.mean()),
        "n_pairs": int(len(same)),
        "calibrated_on": f"{calibration.split} ({calibration.n_pairs} pairs)",
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two (D,) vectors."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if not math.isfinite(den) or den == 0:
        raise DataError("an embedding is zero or not finite; the model cannot compare these images")
    return float(a @ b / den)


# --- runs -------------------------------------------------------------------------------------
CALIBRATION_FILE = layout.SIMILARITY


def run_calibration(run, refit: bool = False) -> Calibration:
    """The run's calibration (fitted on val pairs), from RUN/similarity.json when it was fitted
    on the run's current checkpoint, else fitted now and saved there."""
    from fermetric.utils.io import read_json, write_json
    from fermetric.utils.runlock import known_read_only

    path = run.path / CALIBRATION_FILE
    if path.is_file() and not refit:
        try:
            saved = read_json(path)
            if run.made_here(saved):
                return Calibration.from_dict(saved["calibration"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # unreadable or of other weights: refitted below
    emb, labels = split_embeddings(run, "val")
    cal = fit_calibration(*pair_similarities(emb, labels, seed=run.cfg.seed), split="val")
    if not known_read_only(run.path):
        try:
            write_json(path, {**run.fingerprint, "calibration": cal.to_dict()})
        except OSError:  # a read-only run still answers, it just refits next time
            pass
    return cal


def split_verification(run, split: str) -> dict[str, Any]:
    """Verification metrics of pairs of `split` with the run's val-fitted calibration."""
    emb, labels = split_embeddings(run, split)
    sims, same = pair_similarities(emb, labels, seed=run.cfg.seed + 1)  # other pairs than calibration drew
    return verification_metrics(sims, same, run_calibration(run))


@dataclass
class SimilarityResult:
    image_a: str
    image_b: str
    cosine: float
    probability: float  # that both show the same expression
    calibration: dict[str, Any]
    maps: Optional[str] = None  # the similarity-map figure, when one was drawn

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def same_expression_probability(run, face_a: np.ndarray, face_b: np.ndarray, name_a: str = "a",
                                name_b: str = "b") -> SimilarityResult:
    """The probability that two faces show the same expression, from a run's embeddings
    (embedding runs) or pre-logit features (classifier runs), calibrated on val pairs.

    Args:
        run: an opened Run (fermetric.load_run).
        face_a, face_b: (48, 48) uint8 face crops (fermetric.inference.faces.one_face reads and
            crops an image as `fermetric predict` does).
        name_a, name_b: what the result calls them (e.g. their paths).
    """
    import torch

    from fermetric.utils import runtime

    faces = np.stack([np.asarray(face_a), np.asarray(face_b)])
    if faces.shape[1:] != (48, 48) or faces.dtype != np.uint8:
        raise DataError(f"faces must be two 48x48 uint8 crops; got {faces.shape[1:]} {faces.dtype}")
    x = torch.from_numpy(faces[:, None].astype(np.float32) / 255.0).to(run.device)
    run.model.eval()
    fn = embedding_function(run.model)
    with runtime.inference(run.device, runtime.resolve_precision(run.precision, run.device)):
        emb = fn(x).float().cpu().numpy()
    cal = run_calibration(run)
    cos = cosine(emb[0], emb[1])
    return SimilarityResult(str(name_a), str(name_b), cos, float(cal.probability(cos)), cal.to_dict())
