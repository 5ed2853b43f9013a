"""`train-*` and `report`: the training commands and the HTML report, as calls."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from fermetric.api.common import PathLike


def train(family: str, **options):
    """`fermetric train-classifier / train-siamese / train-triplet`: train a run of `family`
    ("classifier", "siamese", "triplet") with the commands' options (model=, data=, config_path=,
    overrides=["train.epochs=5"], out=, resume=, ...); returns the TrainResult
    (fermetric.training.launch.train)."""
    from fermetric.training.launch import train as _train

    return _train(family, **options)


def is_main_process() -> bool:
    """Whether this process reports a training's result (the only one, or rank 0 of a
    multi-process training: fermetric.training.distributed)."""
    from fermetric.training.distributed import dist_info_from_env

    return dist_info_from_env().is_main


def write_report(runs: Sequence[PathLike], out: PathLike = "report.html", title: Optional[str] = None,
           extras: Sequence[PathLike] = ()) -> Path:
    """`fermetric report`: one self-contained HTML page of runs (fermetric.report.build_report)."""
    from fermetric.report import build_report

    return build_report(runs, out, title=title, extra_dirs=extras)
