"""Retrieval: a FAISS k-nearest-neighbour classifier over embeddings (knn), a run's embeddings
(embeddings) and kNN index (index), neighbour explanations (neighbours) and same-expression
verification (similarity). The kNN report moved up to fermetric.evaluation.knn_report."""
from fermetric.retrieval.knn import KNNClassifier, NotFittedError, faiss_threads, vote

__all__ = ["KNNClassifier", "NotFittedError", "faiss_threads", "vote"]

_MOVED_UP = {"knn_report": "fermetric.evaluation.knn_report", "write_knn_report": "fermetric.evaluation.knn_report"}


def __getattr__(name: str):
    if name in _MOVED_UP:  # moved above this layer: named, not imported from here
        raise AttributeError(f"fermetric.retrieval.{name} moved to {_MOVED_UP[name]}.{name}")
    raise AttributeError(f"module 'fermetric.retrieval' has no attribute {name!r}")
