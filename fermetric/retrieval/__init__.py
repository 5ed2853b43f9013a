"""Retrieval: a FAISS k-nearest-neighbour classifier over embeddings, and its evaluation report."""
from fermetric.retrieval.knn import KNNClassifier, NotFittedError, faiss_threads, vote
from fermetric.retrieval.report import knn_report, write_knn_report

__all__ = ["KNNClassifier", "NotFittedError", "faiss_threads", "vote", "knn_report", "write_knn_report"]
