"""`fermetric study`: the whole FER comparison in one call (see fermetric.study.runner).

    from fermetric.study import run_study
    result = run_study("configs/study/synth.yaml", out="studies/synth")
    print(result.paths["results.md"])
"""
from fermetric.study.config import DEFAULT_STUDY, StudyConfig, load_study, study_from_dict
from fermetric.study.runner import StudyResult, run_study

__all__ = ["run_study", "StudyResult", "StudyConfig", "load_study", "study_from_dict", "DEFAULT_STUDY"]
