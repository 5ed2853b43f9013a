"""Training shared by both families: one loop (trainer.py), one objective per family
(classifier.py, metric.py), schedules and resume rules. The run-directory format (checkpoints)
and its reader live in fermetric.runs."""
from fermetric.training.trainer import Trainer, TrainResult, TrainingError

__all__ = ["Trainer", "TrainResult", "TrainingError"]
