"""Evaluation shared by both families: classification metrics, batched prediction (with TTA),
and ensembles of anything that yields class probabilities."""
from fermetric.evaluation.metrics import classification_metrics, metrics_to_markdown

__all__ = ["classification_metrics", "metrics_to_markdown"]
