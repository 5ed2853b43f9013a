"""The shared argument checks (fermetric.utils.checks) and the call sites that use them: one
message shape (where, argument, expectation, value), the caller's error class, and no input that
slips through as a float or crashes with a TypeError from deep inside."""
from __future__ import annotations

import numpy as np
import pytest

from fermetric.errors import ConfigError, DataError, FermetricError, ModelError
from fermetric.utils.checks import check_int, check_number


def test_check_int_accepts_python_and_numpy_integers_within_bounds():
    assert check_int("k", 3, 1) == 3
    got = check_int("k", np.int64(5), 1, 5)
    assert got == 5 and type(got) is int
    assert check_int("k", None, 1, allow_none=True) is None
    assert check_int("k", -7) == -7  # unbounded


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {"minimum": 1}, "k must be an integer >= 1; got 0"),
        (True, {"minimum": 0}, "k must be an integer >= 0; got True"),
        (2.0, {"minimum": 1}, "k must be an integer >= 1; got 2.0"),
        ("3", {"minimum": 1}, "k must be an integer >= 1; got '3'"),
        (None, {"minimum": 1}, "k must be an integer >= 1; got None"),
        (9, {"minimum": 1, "maximum": 8}, r"k must be an integer in \[1, 8\]; got 9"),
        (9, {"maximum": 8}, "k must be an integer <= 8; got 9"),
        (0.5, {"minimum": 1, "allow_none": True}, r"k must be an integer >= 1 \(or None\); got 0.5"),
    ],
)
def test_check_int_refuses_with_argument_expectation_and_value(value, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_int("k", value, **kwargs)


def test_check_int_names_where_and_raises_the_callers_error():
    with pytest.raises(ModelError, match="^resnet18: width must be an integer >= 1; got 0$"):
        check_int("width", 0, 1, where="resnet18", error=ModelError)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.3", True, None])
def test_check_number_refuses_negative_non_finite_and_non_numbers(value):
    with pytest.raises(DataError, match=r"^SynthFER: difficulty must be a finite number >= 0; got "):
        check_number("difficulty", value, minimum=0, where="SynthFER", error=DataError)


def test_check_number_bounds():
    assert check_number("t", np.float32(0.5), above=0) == 0.5
    assert check_number("t", 0, minimum=0) == 0.0
    with pytest.raises(ConfigError, match=r"^t must be a finite number > 0; got 0$"):
        check_number("t", 0, above=0)


# --- call sites: inputs that used to slip through or crash with a TypeError ------------------------

def test_data_sizes_refuse_none_and_fractional_values():
    from fermetric.data import BatchLoader
    from fermetric.data.synthetic import generate_synthfer, load_synthfer

    with pytest.raises(DataError, match="SynthFER: n must be an integer >= 0; got None"):
        generate_synthfer(None)  # was a TypeError from int(None)
    with pytest.raises(DataError, match="SynthFER: n_val must be an integer >= 0; got nan"):
        load_synthfer(10, float("nan"), 0)  # was a ValueError from int(nan)
    with pytest.raises(DataError, match="SynthFER: n_train must be an integer >= 1; got 0"):
        load_synthfer(0, 5, 5)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1; got 2.5"):
        BatchLoader(generate_synthfer(4), 2.5)  # was accepted and silently truncated to 2


def test_analysis_and_retrieval_arguments_refuse_fractional_and_non_numeric_values():
    from fermetric.analysis.faithfulness import pointing_game
    from fermetric.retrieval.knn import KNNClassifier

    maps = np.zeros((1, 48, 48), np.float32)
    masks = np.zeros((1, 48, 48), bool)
    with pytest.raises(ConfigError, match="tolerance must be an integer >= 0; got -0.5"):
        pointing_game(maps, masks, tolerance=-0.5)  # was accepted as int(-0.5) == 0
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0; got 'x'"):
        KNNClassifier(k=3, temperature="x")  # was a TypeError from comparing str and int
    with pytest.raises(ConfigError, match=r"nprobe must be an integer >= 1 \(or None\); got 0"):
        KNNClassifier(k=3, nprobe=0)
    assert issubclass(ConfigError, FermetricError) and issubclass(ConfigError, ValueError)
