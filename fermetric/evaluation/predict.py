"""Deprecated: the TTA views and the class probabilities of a split moved to fermetric.scoring
(`predict_proba` is fermetric.scoring.model_proba) and `embed_dataset` to
fermetric.retrieval.embeddings. This alias keeps old imports working for one release."""
import warnings

from fermetric.retrieval.embeddings import embed_dataset
from fermetric.scoring import TTA_MODES, TTA_SHIFTS, resolve_tta, tencrop_offsets, tta_scorer, tta_views
from fermetric.scoring import model_proba as predict_proba

warnings.warn("fermetric.evaluation.predict is deprecated; use fermetric.scoring (model_proba, tta_views, ...) "
              "and fermetric.retrieval.embeddings.embed_dataset", DeprecationWarning, stacklevel=2)

__all__ = ["TTA_MODES", "TTA_SHIFTS", "embed_dataset", "predict_proba", "resolve_tta", "tencrop_offsets", "tta_scorer",
           "tta_views"]
