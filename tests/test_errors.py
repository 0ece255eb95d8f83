"""The shared argument checks: what they let through, what they refuse, and the message."""

import re

import numpy as np
import pytest

from tfhash.errors import TfhashError, check_int, check_non_negative, check_number, is_integer


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


@pytest.mark.parametrize("value, expected", [
    (3, True), (np.int32(3), True), (np.uint8(0), True), (True, False), (np.bool_(True), False),
    (3.0, False), (np.float64(3), False), ("3", False), (None, False)])
def test_is_integer_takes_integers_but_not_bools_or_floats(value, expected):
    assert is_integer(value) is expected


@pytest.mark.parametrize("value, low, high", [(None, None, None), (None, 1, None),
                                              (None, 0, 5)])
def test_check_int_optional_passes_none_through(value, low, high):
    assert check_int(value, "width", low, high, optional=True) is None


def test_check_int_optional_names_none_in_the_message():
    with pytest.raises(TfhashError) as raised:
        check_int(0, "width", 1, optional=True)
    assert str(raised.value) == "`width` must be None or an integer >= 1, got 0"


@pytest.mark.parametrize("value", [0, 7, 0.25, np.float32(0.5), np.float64(2.5), np.int16(3)])
def test_check_number_passes_python_and_numpy_numbers_as_a_python_float(value):
    result = check_number(value, "x")
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.5", None, [0.5], 1j,
                                   float("nan"), np.float32("nan")])
def test_check_number_refuses_what_is_not_a_real_number(value):
    with pytest.raises(TfhashError, match=re.escape(f"`x` must be a number, got {value!r}")):
        check_number(value, "x")


# every kind of bound, each at a value just outside it; the messages are written out by hand
@pytest.mark.parametrize("value, kwargs, expected", [
    (-0.5, {"low": 0}, "`x` must be a number >= 0, got -0.5"),
    (0, {"low": 0, "low_open": True}, "`x` must be a number > 0, got 0"),
    (2, {"high": 1}, "`x` must be a number <= 1, got 2"),
    (1.0, {"high": 1, "high_open": True}, "`x` must be a number < 1, got 1.0"),
    (1.5, {"low": 0, "high": 1}, "`x` must be a number in [0, 1], got 1.5"),
    (0.0, {"low": 0, "high": 1, "low_open": True}, "`x` must be a number in (0, 1], got 0.0"),
    (1, {"low": 0, "high": 1, "high_open": True}, "`x` must be a number in [0, 1), got 1"),
    (0, {"low": 0, "high": 1, "low_open": True, "high_open": True},
     "`x` must be a number in (0, 1), got 0"),
    (5, {"low": 0, "high": 4, "low_open": True, "optional": True},
     "`x` must be None or a number in (0, 4], got 5"),
])
def test_check_number_names_the_bound_it_was_given(value, kwargs, expected):
    with pytest.raises(TfhashError) as raised:
        check_number(value, "x", **kwargs)
    assert str(raised.value) == expected


@pytest.mark.parametrize("value, kwargs", [
    (0, {"low": 0}), (1, {"high": 1}), (0, {"low": 0, "high": 1}), (1, {"low": 0, "high": 1}),
    (1, {"low": 0, "high": 1, "low_open": True}), (0, {"low": 0, "high": 1, "high_open": True}),
    (1e-12, {"low": 0, "low_open": True}), (0.999, {"high": 1, "high_open": True})])
def test_check_number_closed_bounds_include_the_bound_and_open_ones_only_what_is_inside(
        value, kwargs):
    assert check_number(value, "x", **kwargs) == value


def test_check_number_optional_passes_none_but_a_required_number_does_not():
    assert check_number(None, "x", low=0, optional=True) is None
    with pytest.raises(TfhashError, match=re.escape("`x` must be a number >= 0, got None")):
        check_number(None, "x", low=0)
