"""The error type raised for bad arguments, and the one-line check that raises it."""

import numbers


class TfhashError(ValueError):
    """Bad input to a tfhash function or command; the message names the argument."""


def check(condition, message):
    """Raises `TfhashError(message)` unless `condition` holds."""
    if not condition:
        raise TfhashError(message)


def check_non_negative(value, name):
    """``value`` as a float if it is a number >= 0, else a clear error naming ``name``.

    >>> check_non_negative(0.5, "quantization")
    0.5
    """
    check(isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0,
          f"`{name}` must be a number >= 0, got {value!r}")
    return float(value)


def check_int(value, name, low=None, high=None):
    """``value`` as an int if it is an integer from ``low`` to ``high``, else a clear error.

    Python and NumPy integers pass; bools, floats (even ``2.0``) and strings do not. Either
    bound may be None (no bound on that side); the error names ``name`` and the bounds.

    >>> check_int(3, "k", low=1)
    3
    >>> check_int(0, "k", low=1)
    Traceback (most recent call last):
    ...
    tfhash.errors.TfhashError: `k` must be an integer >= 1, got 0
    """
    if low is not None and high is not None:
        expected = f"an integer from {low} to {high}"
    elif low is not None:
        expected = f"an integer >= {low}"
    elif high is not None:
        expected = f"an integer <= {high}"
    else:
        expected = "an integer"
    check(isinstance(value, numbers.Integral) and not isinstance(value, bool)
          and (low is None or value >= low) and (high is None or value <= high),
          f"`{name}` must be {expected}, got {value!r}")
    return int(value)


def check_unit_interval(value, name):
    """``value`` as a float if it is a number in (0, 1], else a clear error naming ``name``.

    >>> check_unit_interval(0.5, "margin")
    0.5
    """
    check(isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value <= 1,
          f"`{name}` must be a number in (0, 1], got {value!r}")
    return float(value)
