"""fermetric: facial expression recognition with classifiers and metric-learning models,
explained by one toolkit.

Images everywhere are 48x48 grayscale; in memory they are uint8 tensors of shape (N, 1, 48, 48),
and models take float tensors in [0, 1] of the same shape (normalisation lives inside the model).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fermetric")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
