"""Names that moved down or up the layers keep working for one release, with a DeprecationWarning
that names the new place, and give the same numbers as the new names."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import fermetric
import fermetric.retrieval
from fermetric import scoring
from fermetric.runs import load_run


def test_old_scorer_imports_warn_and_are_the_new_classes():
    import fermetric.analysis.scorers as old

    with pytest.warns(DeprecationWarning, match="fermetric.scoring"):
        old = importlib.reload(old)
    assert old.ClassifierScorer is scoring.ClassifierScorer and old.TTAScorer is scoring.TTAScorer
    import fermetric.analysis as analysis

    with pytest.warns(DeprecationWarning, match="import it from fermetric.scoring"):
        assert analysis.EnsembleScorer is scoring.EnsembleScorer


def test_old_predict_module_warns_and_is_model_proba():
    import fermetric.evaluation.predict as old

    with pytest.warns(DeprecationWarning, match="fermetric.scoring"):
        old = importlib.reload(old)
    assert old.predict_proba is scoring.model_proba and old.tta_views is scoring.tta_views


def test_moved_run_methods_forward_with_a_warning(classifier_run):
    run = load_run(classifier_run, device="cpu")
    with pytest.warns(DeprecationWarning, match=r"Run.predict_proba\(\) is deprecated.*split_proba"):
        old = run.predict_proba("val")
    np.testing.assert_array_equal(old, scoring.split_proba(run, "val"))
    with pytest.warns(DeprecationWarning, match="run_scorer"):
        assert run.scorer("classifier").kind == "classifier"
    with pytest.raises(AttributeError, match="no attribute 'not_a_method'"):
        run.not_a_method  # noqa: B018


def test_what_moved_up_is_named_not_imported():
    with pytest.raises(AttributeError, match="moved to fermetric.evaluation.knn_report.knn_report"):
        fermetric.retrieval.knn_report  # noqa: B018
