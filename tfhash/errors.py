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
    check(isinstance(value, (int, float)) and value >= 0,
          f"`{name}` must be a number >= 0, got {value!r}")
    return float(value)


def check_unit_interval(value, name):
    """``value`` as a float if it is a number in (0, 1], else a clear error naming ``name``.

    >>> check_unit_interval(0.5, "margin")
    0.5
    """
    check(isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value <= 1,
          f"`{name}` must be a number in (0, 1], got {value!r}")
    return float(value)
