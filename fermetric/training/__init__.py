"""Training shared by both families: one loop (trainer.py), one objective per family
(classifier.py, metric.py), checkpoints, schedules, and run directories read back (runs.py)."""
from fermetric.training.checkpoint import load_checkpoint, save_checkpoint
from fermetric.training.trainer import Trainer, TrainResult, TrainingError

__all__ = ["Trainer", "TrainResult", "TrainingError", "load_checkpoint", "save_checkpoint"]
