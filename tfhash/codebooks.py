"""Class codebooks: one binary codeword per class, as far apart as a greedy search finds.

`class_codebook` picks codewords one at a time, each the candidate farthest (in Hamming
distance) from the nearest codeword already picked. For codes of up to
`EXHAUSTIVE_MAX_BITS` bits every word is a candidate, so the search is deterministic (for
12 bits and 10 classes it reaches minimum distance 6, the most any 10 words of 12 bits
can have); longer codes draw `POOL_SIZE` random candidates from ``seed``.

Example:

>>> book = class_codebook(10, 12)
>>> book.shape, book.dtype
((10, 12), dtype('int8'))
>>> min_distance(book)
6
"""

import numpy as np

from tfhash.codes import check_bits, hamming, pack
from tfhash.errors import check

EXHAUSTIVE_MAX_BITS = 16
POOL_SIZE = 8192


def class_codebook(num_classes, bits, seed=0):
    """``num_classes`` codewords of ``bits`` bits, int8 +-1 of shape ``(num_classes, bits)``,
    chosen greedily for the largest minimum pairwise Hamming distance.

    Args:
        num_classes: number of codewords, an integer >= 2 and at most ``2**bits``.
        bits: code length, 1 to 1024.
        seed: seed of the random candidates drawn for codes longer than
            `EXHAUSTIVE_MAX_BITS` bits (shorter codes do not depend on it).

    Example:

    >>> min_distance(class_codebook(10, 32))
    15
    """
    bits = check_bits(bits)
    check(isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
          and 2 <= num_classes <= min(2 ** min(bits, 62), POOL_SIZE),
          f"`num_classes` must be an integer from 2 to min(2**bits, {POOL_SIZE}), "
          f"got {num_classes!r} for {bits} bits")
    check(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool),
          f"`seed` must be an integer, got {seed!r}")
    if bits <= EXHAUSTIVE_MAX_BITS:
        words = np.arange(2 ** bits)[:, None] >> np.arange(bits - 1, -1, -1) & 1
    else:
        words = np.random.default_rng(seed).integers(0, 2, (POOL_SIZE, bits))
    pool = (2 * words - 1).astype(np.int8)
    packed = pack(pool)
    chosen = [0]
    nearest = hamming(packed, packed[:1])[:, 0]
    while len(chosen) < num_classes:
        nearest[chosen] = -1
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, hamming(packed, packed[chosen[-1:]])[:, 0])
    return pool[chosen]


def min_distance(codebook):
    """The smallest Hamming distance between two rows of a +-1 ``codebook``."""
    codebook = np.asarray(codebook)
    check(codebook.ndim == 2 and len(codebook) >= 2,
          f"`codebook` must be a 2-D array with at least 2 rows, got shape {codebook.shape}")
    distances = hamming(pack(codebook), pack(codebook))
    return int(distances[~np.eye(len(codebook), dtype=bool)].min())
