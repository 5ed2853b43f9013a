"""The installed package's version, in the lowest layer so that any module may record it
(checkpoints, zoo cards, kNN indexes, reports) without importing the package's top."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fermetric")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"
