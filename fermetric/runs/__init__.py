"""Run directories: the format a training writes (checkpoints, config.yaml, metrics.json) and
the reader every command and the Python API use to load a run back (`load_run` -> `Run`).

Nothing outside `fermetric.training` needs the training package to read a run: the reader and
the checkpoint format live here, and training writes through `fermetric.runs.checkpoint`."""
from fermetric.runs.reader import Run, check_belongs, check_finite, load_run

__all__ = ["Run", "check_belongs", "check_finite", "load_run"]
