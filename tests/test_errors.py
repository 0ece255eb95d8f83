"""The shared argument checks: what they let through, what they refuse, and the message."""

import re

import numpy as np
import pytest

from tfhash.errors import TfhashError, check_int, check_non_negative


@pytest.mark.parametrize("value", [0, 7, np.int8(7), np.int64(7), np.uint16(7)])
def test_check_int_passes_python_and_numpy_integers_as_a_python_int(value):
    result = check_int(value, "k")
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [True, False, 2.0, np.float64(2), "2", None, [2], 2 + 0j])
def test_check_int_refuses_what_is_not_an_integer(value):
    with pytest.raises(TfhashError, match=re.escape(f"`k` must be an integer, got {value!r}")):
        check_int(value, "k")


@pytest.mark.parametrize("value, low, high, expected", [
    (0, 1, None, "`k` must be an integer >= 1, got 0"),
    (-3, 0, None, "`k` must be an integer >= 0, got -3"),
    (5, None, 4, "`k` must be an integer <= 4, got 5"),
    (0, 1, 1024, "`k` must be an integer from 1 to 1024, got 0"),
    (1025, 1, 1024, "`k` must be an integer from 1 to 1024, got 1025"),
])
def test_check_int_names_the_bound_it_was_given(value, low, high, expected):
    with pytest.raises(TfhashError) as raised:
        check_int(value, "k", low, high)
    assert str(raised.value) == expected


@pytest.mark.parametrize("value, low, high", [(1, 1, None), (4, None, 4), (1024, 1, 1024)])
def test_check_int_bounds_are_inclusive(value, low, high):
    assert check_int(value, "k", low, high) == value


@pytest.mark.parametrize("value", [True, -1e-9, "0.1", None, float("nan")])
def test_check_non_negative_refuses_bools_and_what_is_not_a_number_at_least_zero(value):
    with pytest.raises(TfhashError, match="`quantization` must be a number >= 0"):
        check_non_negative(value, "quantization")


@pytest.mark.parametrize("value", [0, 0.0, 3, np.float32(0.25), np.int64(2)])
def test_check_non_negative_passes_numbers_as_a_float(value):
    result = check_non_negative(value, "quantization")
    assert result == float(value) and type(result) is float
