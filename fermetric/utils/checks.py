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


def is_path_name(name: Any, hidden_ok: bool = False) -> bool:
    """Whether `name` can be one path component that stays where it is put (see `check_path_name`);
    `hidden_ok`: a leading dot is allowed (fermetric's own staging folders), "." and ".." never."""
    return (isinstance(name, str) and bool(name.strip()) and name == name.strip() and "/" not in name
            and "\\" not in name and name not in (".", "..") and (hidden_ok or not name.startswith("."))
            and not any(ord(c) < 32 or c == "\x7f" for c in name))


def check_path_name(kind: str, name: Any, *, error: type[FermetricError] = ConfigError, example: str = "") -> str:
    """`name` when it can be one path component that stays where it is put: a non-empty string
    without a path separator, not `.` or `..`, not hidden (a leading dot), no control characters.
    Every name fermetric turns into a file or folder (study models, zoo entries, run names) is
    checked here, so that `../../escaped` or `/srv/abs` cannot write outside its folder.

    Raises:
        `error`: naming the kind of name, the value and what a good one looks like.
    """
    hint = f", such as {example}" if example else ""
    if not isinstance(name, str) or not name.strip():
        raise error(f"{kind} {name!r} is empty; give a plain name{hint}")
    if not is_path_name(name):
        raise error(f"{kind} {name!r} is not a plain name: it becomes a folder, so it must not contain / or \\, "
                    f"start with a dot, or carry spaces at its ends or control characters; give a plain name{hint}")
    return name
