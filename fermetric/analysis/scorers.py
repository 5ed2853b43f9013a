"""Deprecated: the scorers moved to fermetric.scoring (and the explanation targets to
fermetric.analysis.targets). This alias keeps old imports working for one release."""
import warnings

from fermetric.analysis.targets import require_differentiable, resolve_targets
from fermetric.scoring import (
    DEFAULT_BATCH_SIZE, ClassifierScorer, EnsembleScorer, KNNScorer, PrototypeScorer, Scorer, TTAScorer, as_image_batch,
    check_batch_size, check_scores, gives_probabilities,
)

warnings.warn("fermetric.analysis.scorers is deprecated; import the scorers from fermetric.scoring",
              DeprecationWarning, stacklevel=2)

__all__ = ["DEFAULT_BATCH_SIZE", "ClassifierScorer", "EnsembleScorer", "KNNScorer", "PrototypeScorer", "Scorer", "TTAScorer",
           "as_image_batch", "check_batch_size", "check_scores", "gives_probabilities", "require_differentiable",
           "resolve_targets"]
