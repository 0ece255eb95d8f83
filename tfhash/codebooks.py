"""Class codebooks: one binary codeword per class, as far apart as a greedy search finds.

`class_codebook` picks codewords one at a time, each the candidate farthest (in Hamming
distance) from the nearest codeword already picked. For codes of up to
`EXHAUSTIVE_MAX_BITS` bits every word is a candidate, so the search is deterministic (for
12 bits and 10 classes it reaches minimum distance 6, the most any 10 words of 12 bits
can have); longer codes draw `POOL_SIZE` random candidates from ``seed``.
`capped_codebook` keeps every pair between two distances and spreads the words by their
total distance instead: nearly equidistant codewords, which short fitted codes
(`tfhash.layers.FittedClassCodes`) rank better with.

The pairwise distances of such a codebook are not all equal. `arrange_codebook` hands
the nearer pairs of codewords to the classes a classifier confuses most
(`class_similarity`), so an image coded as the wrong class still lands near its own.

Example:

>>> book = class_codebook(10, 12)
>>> book.shape, book.dtype
((10, 12), dtype('int8'))
>>> min_distance(book)
6
"""

import numpy as np

from tfhash.codes import check_bits, every_code, hamming, pack
from tfhash.errors import TfhashError, check, check_int, is_integer

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
    bits, seed = _check_book(num_classes, bits, seed)
    pool = _candidates(bits, seed)
    packed = pack(pool)
    chosen = [0]
    nearest = hamming(packed, packed[:1])[:, 0]
    while len(chosen) < num_classes:
        nearest[chosen] = -1
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, hamming(packed, packed[chosen[-1:]])[:, 0])
    return pool[chosen]


def capped_codebook(num_classes, bits, min_distance=None, max_distance=None, seed=0):
    """``num_classes`` codewords of ``bits`` bits, int8 +-1 of shape ``(num_classes, bits)``,
    every pair ``min_distance`` to ``max_distance`` apart, chosen greedily for the largest
    total pairwise Hamming distance.

    `class_codebook` maximizes the smallest distance alone: its second word is the first's
    complement, and many pairs sit at the minimum. Codes placed between codewords
    (`tfhash.layers.FittedClassCodes`) rank better when the codewords are nearly
    equidistant: here each word after the first (the same candidates as
    `class_codebook`'s, in the same order) is the candidate of largest total distance to
    those already picked among the candidates ``min_distance`` to ``max_distance`` from
    every one of them (the first such on ties). For 10 classes of 12 bits (6 to 8 apart) it
    leaves 32 pairs at distance 6 where `class_codebook` leaves 36, and none at 12.

    Args:
        num_classes: number of codewords, an integer >= 2 and at most ``2**bits``.
        bits: code length, 1 to 1024.
        min_distance: least distance of any pair; default `class_codebook`'s minimum
            distance for the same arguments.
        max_distance: largest distance of any pair, >= ``min_distance``; default the
            smallest for which the search finds all the codewords (8 for 10 classes of 12
            bits).
        seed: seed of the random candidates drawn for codes longer than
            `EXHAUSTIVE_MAX_BITS` bits (shorter codes do not depend on it).

    Example:

    >>> book = capped_codebook(10, 12)
    >>> distances = hamming(pack(book), pack(book))[~np.eye(10, dtype=bool)]
    >>> int(distances.min()), int(distances.max())
    (6, 8)
    """
    bits, seed = _check_book(num_classes, bits, seed)
    if min_distance is None:
        min_distance = _smallest_distance(pack(class_codebook(num_classes, bits, seed)))
    least = check_int(min_distance, "min_distance", 0, bits)
    caps = (range(least, bits + 1) if max_distance is None
            else [check_int(max_distance, "max_distance", least, bits)])
    pool = _candidates(bits, seed)
    packed = pack(pool)
    for most in caps:
        chosen = _capped_search(packed, num_classes, least, most)
        if chosen is not None:
            return pool[chosen]
    raise TfhashError(f"capped_codebook: no {num_classes} candidate words of {bits} bits are "
                      f"all {least} to {caps[-1]} bits apart by this search; "
                      + ("lower `min_distance`" if max_distance is None
                         else "widen `max_distance` or lower `min_distance`"))


def _capped_search(packed, num_classes, least, most):
    """`capped_codebook`'s greedy search over ``packed`` candidates: the indices of the
    words picked, or ``None`` where no candidate is left before ``num_classes``."""
    distances = np.zeros((len(packed), 0), dtype=np.int32)  # (candidates, chosen)
    chosen = [0]
    while len(chosen) < num_classes:
        distances = np.hstack([distances, hamming(packed, packed[chosen[-1:]])])
        allowed = (distances.min(axis=1) >= least) & (distances.max(axis=1) <= most)
        if not allowed.any():
            return None
        chosen.append(int(np.argmax(np.where(allowed, distances.sum(axis=1), -1))))
    return chosen


CODEBOOKS = {"max-min": class_codebook, "capped": capped_codebook}  # by name, for builders


def named_codebook(name, num_classes, bits, seed=0):
    """The default codebook of the rule ``name`` (a key of `CODEBOOKS`: ``"max-min"`` for
    `class_codebook`, ``"capped"`` for `capped_codebook`).

    Example:

    >>> named_codebook("capped", 10, 12).shape
    (10, 12)
    """
    check(name in CODEBOOKS, f"`codebook` must be one of {sorted(CODEBOOKS)}, got {name!r}")
    return CODEBOOKS[name](num_classes, bits, seed=seed)


def _check_book(num_classes, bits, seed):
    """``(bits, seed)`` checked for a codebook of ``num_classes`` words."""
    bits = check_bits(bits)
    check(is_integer(num_classes)
          and 2 <= num_classes <= min(2 ** min(bits, 62), POOL_SIZE),
          f"`num_classes` must be an integer from 2 to min(2**bits, {POOL_SIZE}), "
          f"got {num_classes!r} for {bits} bits")
    return bits, check_int(seed, "seed")


def _candidates(bits, seed):
    """The words a codebook is picked from, int8 +-1: every word of up to
    `EXHAUSTIVE_MAX_BITS` bits in counting order (high bit first, 0 as -1: saved codebooks
    depend on this order), else `POOL_SIZE` words drawn from ``seed``."""
    if bits <= EXHAUSTIVE_MAX_BITS:
        return -every_code(bits)[:, ::-1]
    words = np.random.default_rng(seed).integers(0, 2, (POOL_SIZE, bits))
    return (2 * words - 1).astype(np.int8)


def min_distance(codebook):
    """The smallest Hamming distance between two rows of a +-1 ``codebook``."""
    codebook = np.asarray(codebook)
    check(codebook.ndim == 2 and len(codebook) >= 2,
          f"`codebook` must be a 2-D array with at least 2 rows, got shape {codebook.shape}")
    return _smallest_distance(pack(codebook))


def _smallest_distance(packed):
    """The smallest Hamming distance between two rows of ``packed`` codes."""
    distances = hamming(packed, packed)
    return int(distances[~np.eye(len(packed), dtype=bool)].min())


def class_similarity(probabilities, labels):
    """How much a classifier mixes up each pair of classes: a symmetric
    ``(num_classes, num_classes)`` float64 matrix whose entry ``(a, b)`` is the mean
    probability it gives class ``b`` on the images of class ``a`` plus the mean it gives
    ``a`` on the images of ``b`` (zero diagonal; classes with no image contribute 0).

    Args:
        probabilities: class probabilities ``(n, num_classes)``, e.g. a classifier's
            ``predict`` on its labelled training images.
        labels: the images' class ids ``(n,)``.

    Example:

    >>> class_similarity(np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0]]), np.array([0, 1]))
    array([[0. , 0.5, 0. ],
           [0.5, 0. , 0. ],
           [0. , 0. , 0. ]])
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    check(probabilities.ndim == 2 and probabilities.shape[1] >= 2
          and np.isfinite(probabilities).all(),
          "`probabilities` must be a finite 2-D array (images, classes) with at least 2 "
          f"classes, got shape {probabilities.shape}")
    num_classes = probabilities.shape[1]
    check(labels.shape == (len(probabilities),) and np.issubdtype(labels.dtype, np.integer)
          and (len(labels) == 0 or (labels.min() >= 0 and labels.max() < num_classes)),
          f"`labels` must be {len(probabilities)} class ids from 0 to {num_classes - 1}, "
          f"got {labels.dtype} {labels.shape}")
    sums = np.zeros((num_classes, num_classes))
    np.add.at(sums, labels, probabilities)
    counts = np.bincount(labels, minlength=num_classes)
    means = sums / np.maximum(counts, 1)[:, None]
    similarity = means + means.T
    np.fill_diagonal(similarity, 0.0)
    return similarity


def class_centres(codes, labels, num_classes=None):
    """One +-1 codeword per class, the centre of that class's codes: int8 ``(num_classes,
    bits)``, bit ``k`` of class ``c`` the sign of the mean of bit ``k`` over the codes of
    ``c``'s images (sign(0) = +1, as for codes): a bitwise majority vote, the word with the
    least total Hamming distance to the class's codes. A learned hasher's training codes so
    give each class a codeword, as `class_codebook` gives graded codes theirs.

    Args:
        codes: +-1 codes (or relaxed codes in [-1, 1]) ``(n, bits)``, e.g. a hasher's codes
            of its labelled training images.
        labels: the images' class ids ``(n,)``, every class from 0 to ``num_classes - 1``
            present.
        num_classes: number of classes; default ``labels.max() + 1``.

    Example:

    >>> class_centres(np.array([[1, 1, -1], [1, -1, -1], [-1, -1, 1]]), np.array([0, 0, 1]))
    array([[ 1,  1, -1],
           [-1, -1,  1]], dtype=int8)
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    check(codes.ndim == 2 and len(codes) > 0 and np.isfinite(codes).all(),
          f"`codes` must be a finite non-empty 2-D array (images, bits), got shape {codes.shape}")
    check_bits(codes.shape[1], "codes.shape[1]")
    check(labels.shape == (len(codes),) and np.issubdtype(labels.dtype, np.integer)
          and labels.min() >= 0,
          f"`labels` must be {len(codes)} non-negative class ids, got {labels.dtype} "
          f"{labels.shape}")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    check(is_integer(num_classes) and num_classes > labels.max(),
          f"`num_classes` must be an integer above every label ({labels.max()}), "
          f"got {num_classes!r}")
    counts = np.bincount(labels, minlength=num_classes)
    check(counts.all(), f"`labels`: every class needs an image; none of class "
          f"{int(np.argmin(counts))}")
    sums = np.zeros((num_classes, codes.shape[1]))
    np.add.at(sums, labels, codes)
    return np.where(sums >= 0, 1, -1).astype(np.int8)


def arrange_codebook(codebook, similarity, restarts=8, seed=0):
    """The rows of ``codebook`` reordered so that similar classes get near codewords.

    Finds an order with a low ``sum over a, b of similarity[a, b] * hamming(a, b)``: from
    the given order and ``restarts - 1`` random ones, it swaps two classes' codewords as
    long as a swap lowers the sum, and keeps the best order found. The codewords stay the
    same (so does the minimum distance); only which class gets which changes.

    Args:
        codebook: +-1 codewords ``(num_classes, bits)``, e.g. `class_codebook`'s.
        similarity: symmetric non-negative ``(num_classes, num_classes)`` weights, e.g.
            `class_similarity`'s.
        restarts: number of starting orders, an integer >= 1.
        seed: seed of the random starting orders.

    Example:

    >>> sim = np.zeros((10, 10)); sim[3, 5] = sim[5, 3] = 1.0  # classes 3 and 5 alike
    >>> book = arrange_codebook(class_codebook(10, 12), sim)
    >>> int((book[3] != book[5]).sum()) == min_distance(book)
    True
    """
    codebook = np.asarray(codebook)
    similarity = np.asarray(similarity, dtype=np.float64)
    check(codebook.ndim == 2 and len(codebook) >= 2,
          f"`codebook` must be a 2-D array with at least 2 rows, got shape {codebook.shape}")
    n = len(codebook)
    check(similarity.shape == (n, n) and np.isfinite(similarity).all()
          and np.allclose(similarity, similarity.T) and (similarity >= 0).all(),
          f"`similarity` must be a symmetric non-negative finite ({n}, {n}) matrix, got "
          f"shape {similarity.shape}")
    restarts = check_int(restarts, "restarts", 1)
    similarity = similarity * (1 - np.eye(n))
    distances = hamming(pack(codebook), pack(codebook)).astype(np.float64)
    rng = np.random.default_rng(seed)
    starts = [np.arange(n)] + [rng.permutation(n) for _ in range(restarts - 1)]
    best, best_cost = None, np.inf
    for order in starts:
        order, cost = _swap_down(similarity, distances, order)
        if cost < best_cost - 1e-9:
            best, best_cost = order, cost
    return codebook[best]


def _swap_down(similarity, distances, order):
    """Local search: swaps the codewords of two classes while one swap lowers the cost
    ``sum similarity * distances[order][:, order]``; each class's best swap is computed
    for all partners at once. Returns the order reached and its cost."""
    order = order.copy()
    placed = distances[np.ix_(order, order)]
    own = (similarity * placed).sum(axis=1)
    improved = True
    while improved:
        improved = False
        for i in range(len(order)):
            # cost change of swapping i with every j (a symmetric, zero-diagonal sum)
            change = 2 * (placed @ similarity[i] - own[i] - own + similarity @ placed[i]
                          + 2 * similarity[i] * placed[i])
            change[i] = 0.0
            j = int(np.argmin(change))
            if change[j] < -1e-9:
                order[[i, j]] = order[[j, i]]
                placed[[i, j]] = placed[[j, i]]
                placed[:, [i, j]] = placed[:, [j, i]]
                own = (similarity * placed).sum(axis=1)
                improved = True
    return order, own.sum()
