"""`fermetric demo`: the built-in demo study (DEMO_STUDY: a classifier and a triplet model on
SynthFER) run by the one study runner, with the command's --epochs, --model and --set."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Optional, Sequence

from fermetric.study.config import DEMO_EPOCHS, DEMO_STUDY, study_from_dict
from fermetric.study.runner import StudyResult, run_study


def run_demo(*, data: Optional[str] = None, out: Optional[str | Path] = None, epochs: int = DEMO_EPOCHS,
             model: Optional[str] = None, overrides: Sequence[str] = (), seed: int = 0, device: Optional[str] = None,
             echo: Optional[Callable[[str], None]] = None) -> StudyResult:
    """Train, evaluate, search, map, explain, vote and report the demo study (see DEMO_STUDY) into
    `out` (default fermetric-demo); a second call reuses the finished runs.

    Args:
        data: the data of both models (default SynthFER).
        epochs: epochs of each model.
        model: the backbone of both models (default baseline).
        overrides: run-config overrides (section.key=value) for both models, after the demo's own.
    """
    spec = copy.deepcopy(DEMO_STUDY)
    spec["set"] += [f"train.epochs={int(epochs)}", f"model.name={model or 'baseline'}", *overrides]
    spec["seeds"] = [int(seed)]
    study = study_from_dict(spec, where="fermetric demo: ")
    return run_study(study, data=data, out=Path(out or "fermetric-demo"), device=device, quiet=True, echo=echo)
