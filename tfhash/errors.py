"""The error type raised for bad arguments, and the one-line checks that raise it."""

import numbers


class TfhashError(ValueError):
    """Bad input to a tfhash function or command; the message names the argument."""


def check(condition, message):
    """Raises `TfhashError(message)` unless `condition` holds."""
    if not condition:
        raise TfhashError(message)


def is_integer(value):
    """Whether ``value`` is a Python or NumPy integer (a bool is not).

    >>> is_integer(3), is_integer(True), is_integer(3.0)
    (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """Whether ``value`` is a Python or NumPy real number other than NaN (a bool is not).

    >>> is_number(0.5), is_number(2), is_number(True), is_number(float("nan"))
    (True, True, False, False)
    """
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and value == value)  # NaN is not equal to itself


def _check_bounded(value, name, noun, is_kind, low, high, low_open=False, high_open=False,
                   optional=False, integer=False):
    """The body `check_int` and `check_number` share: ``is_kind`` says whether ``value`` is
    of the expected kind, the bounds (None: none on that side) where it may lie, ``noun``
    names the kind in the message; with ``integer`` two bounds read "from low to high"."""
    if low is not None and high is not None:
        span = (f" from {low} to {high}" if integer else
                f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    elif low is not None:
        span = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        span = f" {'<' if high_open else '<='} {high}"
    else:
        span = ""
    check(is_kind and (low is None or (value > low if low_open else value >= low))
          and (high is None or (value < high if high_open else value <= high)),
          f"`{name}` must be {'None or ' if optional else ''}{noun}{span}, got {value!r}")


def check_int(value, name, low=None, high=None, optional=False):
    """``value`` as an int if it is an integer from ``low`` to ``high``, else a clear error.

    Python and NumPy integers pass; bools, floats (even ``2.0``) and strings do not. Either
    bound may be None (no bound on that side); the error names ``name`` and the bounds. With
    ``optional``, None passes too (and comes back as None).

    >>> check_int(3, "k", low=1)
    3
    >>> check_int(0, "k", low=1)
    Traceback (most recent call last):
    ...
    tfhash.errors.TfhashError: `k` must be an integer >= 1, got 0
    """
    if optional and value is None:
        return None
    _check_bounded(value, name, "an integer", is_integer(value), low, high, optional=optional,
                   integer=True)
    return int(value)


def check_number(value, name, low=None, high=None, low_open=False, high_open=False,
                 optional=False):
    """``value`` as a float if it is a real number within the bounds, else a clear error.

    Python and NumPy numbers pass; bools, strings and NaN do not. A bound of None is no bound
    on that side; ``low_open`` / ``high_open`` leave the bound itself out. With ``optional``,
    None passes too (and comes back as None).

    >>> check_number(0.5, "momentum", 0, 1, low_open=True, high_open=True)
    0.5
    >>> check_number(1, "momentum", 0, 1, low_open=True, high_open=True)
    Traceback (most recent call last):
    ...
    tfhash.errors.TfhashError: `momentum` must be a number in (0, 1), got 1
    """
    if optional and value is None:
        return None
    _check_bounded(value, name, "a number", is_number(value), low, high, low_open, high_open,
                   optional)
    return float(value)


def check_non_negative(value, name):
    """``value`` as a float if it is a number >= 0, else a clear error naming ``name``.

    >>> check_non_negative(0.5, "quantization")
    0.5
    """
    return check_number(value, name, low=0)


def check_unit_interval(value, name):
    """``value`` as a float if it is a number in (0, 1], else a clear error naming ``name``.

    >>> check_unit_interval(0.5, "margin")
    0.5
    """
    return check_number(value, name, 0, 1, low_open=True)
