"""Reading run directories (fermetric.runs.reader), their format (fermetric.run_layout), their
checkpoints (fermetric.runs.checkpoint) and ensembles of runs opened as one (fermetric.runs.ensemble)."""
from fermetric.runs.checkpoint import check_belongs, check_finite
from fermetric.runs.reader import Run, load_run, make_run

__all__ = ["Run", "check_belongs", "check_finite", "load_run", "make_run"]
