"""Images in, class scores out: the Scorer and every kind of it, the views of test-time
augmentation, and the scorers of a run (see fermetric.scoring.base for the contract)."""
from fermetric.scoring.base import DEFAULT_BATCH_SIZE, Scorer, as_image_batch, check_batch_size, check_scores
from fermetric.scoring.classifier import ClassifierScorer
from fermetric.scoring.ensemble import EnsembleScorer, gives_probabilities
from fermetric.scoring.knn import KNNScorer
from fermetric.scoring.prototype import PrototypeScorer
from fermetric.scoring.run import (
    dataset_predictions, member_scorers, run_scorer, run_scorers, split_predictions, split_proba,
)
from fermetric.scoring.split import model_proba
from fermetric.scoring.tta import TTA_MODES, TTA_SHIFTS, TTAScorer, resolve_tta, tencrop_offsets, tta_scorer, tta_views

__all__ = [
    "Scorer", "ClassifierScorer", "PrototypeScorer", "KNNScorer", "TTAScorer", "EnsembleScorer", "DEFAULT_BATCH_SIZE",
    "gives_probabilities", "as_image_batch", "check_batch_size", "check_scores", "model_proba",
    "TTA_MODES", "TTA_SHIFTS", "resolve_tta", "tencrop_offsets", "tta_scorer", "tta_views",
    "run_scorer", "run_scorers", "member_scorers", "split_proba", "split_predictions", "dataset_predictions",
]
