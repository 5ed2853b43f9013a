"""The run directory's format, in one place: the trainer writes it, the reader reads it, and the
commands that derive files from a run (embeddings, kNN index, calibration) put them where this
module says.

    RUN/
      config.yaml          the resolved config the run was trained with
      checkpoints/last.pt  the latest epoch (what --resume continues)
      checkpoints/best.pt  the epoch selected on val
      history.csv          one row per epoch
      metrics.json         written when training finishes (a finished run has it)
      train.log            the training's log
      embeddings/          cached split embeddings, keyed to the checkpoint (fermetric.retrieval)
      index/               the kNN index of `build-index` (fermetric.retrieval)
      temperature.json     the fitted temperature (fermetric calibrate)
      similarity.json      the same-expression calibration on val pairs (fermetric similarity)
"""
from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST = "last"
INTERRUPTED = "interrupted"  # the state of an epoch a signal cut short (not resumed from)
BEST = "best"
HISTORY = "history.csv"
METRICS = "metrics.json"
TRAIN_LOG = "train.log"
EMBEDDINGS = "embeddings"
INDEX = "index"
TEMPERATURE = "temperature.json"
# what temperature.json records: the calibration's method and the name of its one parameter (a
# record without "method" is a temperature: records from before vote smoothing)
CALIBRATION_PARAMS = {"temperature": "temperature", "vote_smoothing": "alpha"}
SIMILARITY = "similarity.json"  # the same-expression calibration (fermetric similarity)


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_path(run_dir: str | Path, which: str = BEST) -> Path:
    """RUN/checkpoints/<which>.pt (which: "best", "last" or another saved epoch's name)."""
    return checkpoints_dir(run_dir) / f"{which}.pt"


def path_of(run_dir: str | Path, entry: str) -> Path:
    """RUN/<entry> for one of the names above (HISTORY, METRICS, TRAIN_LOG, EMBEDDINGS, INDEX, TEMPERATURE)."""
    return Path(run_dir) / entry


def is_run_dir(path: str | Path) -> bool:
    """A fermetric run directory: its config.yaml beside a checkpoints/ folder."""
    return config_path(path).is_file() and checkpoints_dir(path).is_dir()
