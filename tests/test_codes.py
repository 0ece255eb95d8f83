import numpy as np
import pytest

from tfhash import codes
from tfhash.errors import TfhashError

from reference import hamming_bruteforce


def test_binarize_sign_zero_is_plus_one():
    b = codes.binarize(np.array([[0.0, -0.0, 1e-9, -1e-9, 3.0]]))
    np.testing.assert_array_equal(b, [[1, 1, 1, -1, 1]])
    assert b.dtype == np.int8


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 33, 64, 1024])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    b = rng.choice(np.array([-1, 1], dtype=np.int8), size=(17, bits))
    packed = codes.pack(b)
    assert packed.shape == (17, (bits + 7) // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(codes.unpack(packed, bits), b)


def test_pack_bit_order_and_zero_padding():
    b = np.array([[1, -1, -1, -1, -1, -1, -1, -1, 1, 1, -1]])
    # first bit -> MSB of byte 0; bits 8, 9 -> two MSBs of byte 1, padding zero
    np.testing.assert_array_equal(codes.pack(b), [[0b10000000, 0b11000000]])


@pytest.mark.parametrize("bits", [5, 12, 48, 100])
def test_hamming_matches_bruteforce(bits):
    rng = np.random.default_rng(0)
    a = rng.choice([-1, 1], size=(9, bits))
    b = rng.choice([-1, 1], size=(31, bits))
    d = codes.hamming(codes.pack(a), codes.pack(b))
    np.testing.assert_array_equal(d, hamming_bruteforce(a, b))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: codes.pack(np.zeros((2, 3))), "only -1 and \\+1"),
        (lambda: codes.pack(np.ones(3)), "2-D"),
        (lambda: codes.pack(np.ones((2, 1025))), "1024"),
        (lambda: codes.unpack(np.zeros((2, 3), np.uint8), 12), "shape \\(n, 2\\)"),
        (lambda: codes.unpack(np.zeros((2, 2), np.uint8), 0), "bits"),
        (lambda: codes.hamming(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8)), "same"),
        (lambda: codes.as_packed(np.zeros((2, 2), np.uint8)), "pass `bits`"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(TfhashError, match=match):
        call()


@pytest.mark.parametrize("bits", [1, 3, 12])
def test_every_code_counts_up_with_bit_zero_first(bits):
    expected = [[-1 if (i >> k) & 1 else 1 for k in range(bits)] for i in range(2 ** bits)]
    np.testing.assert_array_equal(codes.every_code(bits), expected)
    assert codes.every_code(bits).dtype == np.int8


@pytest.mark.parametrize("bits", [0, 21, 2.0])
def test_every_code_rejects_bad_lengths(bits):
    with pytest.raises(TfhashError, match="`bits`"):
        codes.every_code(bits)
