"""Argument checks shared by every package (data, models, retrieval, analysis, plotting).

One message shape everywhere: where (optional), the argument's name, what is expected, and the
value given, e.g. ``resnet18: width must be an integer >= 1; got 0``. The error class is the
caller's (ConfigError for options, DataError for data sizes, ModelError for model arguments), so
the CLI reports each as one line.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import numpy as np

from fermetric.errors import ConfigError, FermetricError


def _fail(error: type[FermetricError], where: str, arg: str, expected: str, value: Any) -> FermetricError:
    return error(f"{where + ': ' if where else ''}{arg} must be {expected}; got {value!r}")


def check_int(
    arg: str,
    value: Any,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
    *,
    where: str = "",
    allow_none: bool = False,
    error: type[FermetricError] = ConfigError,
) -> Optional[int]:
    """`value` as an int, when it is an integer (a Python or numpy integer; not a bool, not a
    float, even a whole one) within [minimum, maximum].

    Args:
        arg: the argument's name, as the user writes it.
        value: what was given.
        minimum, maximum: inclusive bounds (None: unbounded).
        where: what the argument belongs to (a model name, a file), put in front of the message.
        allow_none: None is accepted (and returned) too.
        error: the FermetricError subclass to raise.

    Raises:
        `error`: naming the argument, what is expected and the value.
    """
    if value is None and allow_none:
        return None
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an integer >= {minimum}"
    elif maximum is not None:
        expected = f"an integer <= {maximum}"
    else:
        expected = "an integer"
    if allow_none:
        expected += " (or None)"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _fail(error, where, arg, expected, value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(error, where, arg, expected, value)
    return int(value)


def check_number(arg: str, value: Any, *, minimum: Optional[float] = None, above: Optional[float] = None,
                 where: str = "", error: type[FermetricError] = ConfigError) -> float:
    """`value` as a float, when it is a finite real number (not a bool) that is >= `minimum`
    and > `above` (each None: unbounded).

    Raises:
        `error`: naming the argument, what is expected and the value.
    """
    bounds = ([f">= {minimum:g}"] if minimum is not None else []) + ([f"> {above:g}"] if above is not None else [])
    expected = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise _fail(error, where, arg, expected, value)
    if (minimum is not None and value < minimum) or (above is not None and not value > above):
        raise _fail(error, where, arg, expected, value)
    return float(value)
