"""Binary codes: binarize relaxed outputs, pack bits into bytes, Hamming distances.

Conventions (see DESIGN.md): the binary code is ``b = sign(z)`` with ``sign(0) = +1``;
bit ``k`` is 1 where ``b_k = +1``; packed codes follow ``numpy.packbits`` order (first bit
is the most significant bit of byte 0), ``ceil(bits / 8)`` bytes, padding bits 0.

Example:

>>> import numpy as np
>>> from tfhash import codes
>>> b = codes.binarize(np.array([[0.3, -0.2, 0.0]]))
>>> b
array([[ 1, -1,  1]], dtype=int8)
>>> codes.pack(b)
array([[160]], dtype=uint8)
>>> codes.hamming(codes.pack(b), codes.pack(-b))
array([[3]], dtype=int32)
"""

import numpy as np

from tfhash.errors import check, check_int

MAX_BITS = 1024


def check_bits(bits, name="bits"):
    """Validates a code length and returns it as an int (1 to 1024)."""
    return check_int(bits, name, 1, MAX_BITS)


def every_code(bits):
    """Every +-1 code of ``bits`` bits (1 to 20), int8 ``(2**bits, bits)``: row ``i`` has
    ``-1`` where bit ``k`` of the integer ``i`` is set (bit 0 first), so row 0 is all +1.

    Example:

    >>> every_code(2)
    array([[ 1,  1],
           [-1,  1],
           [ 1, -1],
           [-1, -1]], dtype=int8)
    """
    bits = check_int(bits, "bits", 1, 20)
    return (1 - 2 * ((np.arange(2 ** bits)[:, None] >> np.arange(bits)) & 1)).astype(np.int8)


def binarize(u):
    """Maps relaxed codes (any real array, shape ``(n, bits)``) to int8 +-1, sign(0) = +1."""
    u = np.asarray(u)
    check(u.ndim == 2, f"`u` must be a 2-D array (n, bits), got shape {u.shape}")
    check(np.issubdtype(u.dtype, np.number), f"`u` must be numeric, got dtype {u.dtype}")
    return np.where(u >= 0, 1, -1).astype(np.int8)


def pack(b):
    """Packs +-1 codes (shape ``(n, bits)``) into uint8 rows of ``ceil(bits / 8)`` bytes."""
    b = np.asarray(b)
    check(b.ndim == 2, f"`b` must be a 2-D array (n, bits), got shape {b.shape}")
    check_bits(b.shape[1], "b.shape[1]")
    check(np.isin(b, (-1, 1)).all(), "`b` must hold only -1 and +1 (use binarize first)")
    return np.packbits(b > 0, axis=1)


def unpack(packed, bits):
    """Inverse of `pack`: uint8 rows back to int8 +-1 codes of length ``bits``."""
    packed = _check_packed(packed, bits, "packed")
    return np.unpackbits(packed, axis=1, count=bits).astype(np.int8) * 2 - 1


def as_packed(codes, bits=None, name="codes"):
    """Accepts +-1 codes or packed uint8 codes (with ``bits``); returns ``(packed, bits)``."""
    codes = np.asarray(codes)
    check(codes.ndim == 2, f"`{name}` must be a 2-D array, got shape {codes.shape}")
    if codes.dtype == np.uint8 and bits is not None:
        return _check_packed(codes, bits, name), int(bits)
    check(
        codes.dtype != np.uint8,
        f"`{name}` is packed uint8; pass `bits` with it (or pass +-1 codes)",
    )
    check(
        bits is None or bits == codes.shape[1],
        f"`bits`={bits} does not match `{name}` with {codes.shape[1]} columns of +-1 values",
    )
    check(np.isin(codes, (-1, 1)).all(), f"`{name}` must hold only -1 and +1, or packed uint8")
    return np.packbits(codes > 0, axis=1), codes.shape[1]


def hamming(a, b):
    """All-pairs Hamming distances between packed codes: ``(n, m)`` int32.

    Computed as the popcount of XOR on 64-bit words, one row block at a time.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    for name, arr in (("a", a), ("b", b)):
        check(
            arr.ndim == 2 and arr.dtype == np.uint8,
            f"`{name}` must be packed uint8 codes of shape (n, bytes), got {arr.dtype} {arr.shape}",
        )
    check(
        a.shape[1] == b.shape[1],
        f"`a` and `b` must have the same bytes per code, got {a.shape[1]} and {b.shape[1]}",
    )
    a_words, b_words = to_words(a), to_words(b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    block = max(1, (1 << 20) // max(1, b.shape[0]))
    for start in range(0, a.shape[0], block):
        out[start : start + block] = hamming_words(a_words[start : start + block], b_words)
    return out


def to_words(packed):
    """Packed uint8 codes as rows of uint64 words (zero-padded), for fast popcount."""
    n, n_bytes = packed.shape
    n_words = (n_bytes + 7) // 8
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, :n_bytes] = packed
    return padded.view(np.uint64)


def hamming_words(a_words, b_words):
    """Hamming distances between two sets of word rows: uint8 up to 255 bits, else uint16."""
    dist = None
    for w in range(a_words.shape[1]):
        count = np.bitwise_count(a_words[:, w, None] ^ b_words[None, :, w])
        dist = count if dist is None else dist + count.astype(np.uint16)
    return dist


def _check_packed(packed, bits, name):
    bits = check_bits(bits)
    packed = np.asarray(packed)
    n_bytes = (bits + 7) // 8
    check(
        packed.ndim == 2 and packed.dtype == np.uint8 and packed.shape[1] == n_bytes,
        f"`{name}` must be uint8 of shape (n, {n_bytes}) for {bits} bits, "
        f"got {packed.dtype} {packed.shape}",
    )
    return packed
