"""Hamming-ranking retrieval metrics: mAP (two tie modes), precision@k, radius metrics, PR curve.

Every function takes query codes and labels and database codes and labels. Codes are +-1
arrays, or packed uint8 with an explicit ``bits``; labels are integer class ids ``(n,)`` or
multi-hot ``(n, classes)``. Two items are relevant when they share at least one label.

Ties. Items at equal Hamming distance tie, and the order inside a tie group changes AP:

* ``ties="expected"`` (default): the exact expectation over uniformly random orders within
  each tie group, in closed form from per-distance counts. No sort is needed and the value
  does not depend on the database order.
* ``ties="index"``: ties broken by ascending database index, as published code does.

The work is vectorized over blocks of queries (no per-query Python loop).

Example:

>>> import numpy as np
>>> from tfhash.metrics import mean_average_precision
>>> q = np.array([[1, 1], [-1, -1]]); ql = np.array([0, 1])
>>> db = np.array([[1, 1], [1, -1], [-1, -1]]); dbl = np.array([0, 0, 1])
>>> float(mean_average_precision(q, ql, db, dbl))
1.0
"""

import numpy as np

from tfhash.codes import as_packed, hamming_words, to_words
from tfhash.errors import check, check_int

TIE_MODES = ("expected", "index")
_BLOCK_ELEMENTS = 1 << 20  # queries x database entries per block: cache-sized


def mean_average_precision(
    q_codes, q_labels, db_codes, db_labels, top_k=None, ties="expected", bits=None
):
    """Mean average precision of Hamming ranking (mAP@all, or mAP@k with ``top_k``).

    Args:
        q_codes, db_codes: +-1 codes ``(n, bits)`` or packed uint8 codes with ``bits``.
        q_labels, db_labels: class ids ``(n,)`` or multi-hot ``(n, classes)``.
        top_k: ``None`` for mAP@all, else the rank cut-off k >= 1.
        ties: ``"expected"`` or ``"index"`` (see the module docstring).
        bits: code length, required for packed codes.

    Returns:
        The mean of AP over queries that have at least one relevant database item.
    """
    ties = _check_ties(ties)
    scores, has_relevant = [], []
    for block in _blocks(q_codes, q_labels, db_codes, db_labels, bits, top_k):
        if ties == "expected":
            ap = _expected_ap(block)
        else:
            ap = _index_ap(block)
        scores.append(ap)
        has_relevant.append(block.n_relevant > 0)
    return _mean_over_relevant(np.concatenate(scores), np.concatenate(has_relevant))


def _mean_over_relevant(scores, has_relevant):
    """Mean AP over queries with at least one relevant database item (0 if none has)."""
    return float(scores[has_relevant].mean()) if has_relevant.any() else 0.0


def precision_at_k(q_codes, q_labels, db_codes, db_labels, k, ties="expected", bits=None):
    """Mean precision of the top ``k`` of the Hamming ranking over all queries."""
    ties = _check_ties(ties)
    values = []
    for block in _blocks(q_codes, q_labels, db_codes, db_labels, bits, k):
        kk = block.top_k
        if ties == "index":
            values.append(block.sorted_relevance()[:, :kk].sum(axis=1) / kk)
            continue
        before = _exclusive_cumsum(block.hist)
        taken = np.clip(kk - before, 0, block.hist)
        with np.errstate(invalid="ignore", divide="ignore"):
            expected_rel = np.where(block.hist > 0, taken * block.rel_hist / block.hist, 0.0)
        values.append(expected_rel.sum(axis=1) / kk)
    return float(np.concatenate(values).mean())


def precision_recall_curve(q_codes, q_labels, db_codes, db_labels, bits=None):
    """Precision and recall within Hamming radius r, for every r from 0 to ``bits``.

    Precision of a query with an empty ball is 0; recall is averaged over queries with at
    least one relevant database item.

    Returns:
        ``(radii, precision, recall)``: three arrays of length ``bits + 1``.
    """
    curve = _CurveSums()
    for block in _blocks(q_codes, q_labels, db_codes, db_labels, bits, None):
        curve.add(block)
    return curve.result()


class _CurveSums:
    """Per-radius precision and recall sums, accumulated block by block."""

    def __init__(self):
        self.prec_sum, self.rec_sum, self.n_queries, self.n_with_rel = 0.0, 0.0, 0, 0
        self.bits = None

    def add(self, block):
        self.bits = block.bits
        in_ball = np.cumsum(block.hist, axis=1)
        rel_in_ball = np.cumsum(block.rel_hist, axis=1)
        total_rel = rel_in_ball[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.prec_sum = self.prec_sum + np.where(in_ball > 0, rel_in_ball / in_ball,
                                                     0.0).sum(axis=0)
            rec = np.where(total_rel > 0, rel_in_ball / total_rel, 0.0)
        self.rec_sum = self.rec_sum + rec.sum(axis=0)
        self.n_queries += block.hist.shape[0]
        self.n_with_rel += int((total_rel > 0).sum())

    def result(self):
        radii = np.arange(self.bits + 1)
        return radii, self.prec_sum / self.n_queries, self.rec_sum / max(self.n_with_rel, 1)


def precision_recall_at_radius(q_codes, q_labels, db_codes, db_labels, radius=2, bits=None):
    """Mean precision and recall within Hamming radius ``radius`` (default 2)."""
    radius = check_int(radius, "radius", 0)
    radii, precision, recall = precision_recall_curve(
        q_codes, q_labels, db_codes, db_labels, bits=bits
    )
    r = min(radius, len(radii) - 1)
    return float(precision[r]), float(recall[r])


def retrieval_report(q_codes, q_labels, db_codes, db_labels, bits=None, radius=2):
    """All headline figures at once: mAP (both tie modes), precision/recall at ``radius``.

    Returns a dict with ``map``, ``map_index``, ``precision_r2``, ``recall_r2`` (the suffix
    follows ``radius``), the PR curve arrays under ``pr_curve``, and per query the AP with
    expected ties under ``query_ap`` (NaN for a query with no relevant database item), so
    the mAP of any subset of the queries is ``np.nanmean(report["query_ap"][subset])``.
    """
    curve = _CurveSums()
    expected, by_index, has_relevant = [], [], []
    for block in _blocks(q_codes, q_labels, db_codes, db_labels, bits, None):  # one pass
        curve.add(block)
        expected.append(_expected_ap(block))
        by_index.append(_index_ap(block))
        has_relevant.append(block.n_relevant > 0)
    radii, precision, recall = curve.result()
    r = min(int(radius), len(radii) - 1)
    expected, has_relevant = np.concatenate(expected), np.concatenate(has_relevant)
    return {
        "map": _mean_over_relevant(expected, has_relevant),
        "map_index": _mean_over_relevant(np.concatenate(by_index), has_relevant),
        f"precision_r{radius}": float(precision[r]),
        f"recall_r{radius}": float(recall[r]),
        "pr_curve": {"radius": radii, "precision": precision, "recall": recall},
        "query_ap": np.where(has_relevant, expected, np.nan),
    }


class _Block:
    """Distances and relevance of one block of queries against the whole database."""

    def __init__(self, distances, relevant, bits, top_k):
        self.distances = distances
        self.relevant = relevant
        self.bits = bits
        self.top_k = top_k
        self._hist = None

    def _histograms(self):
        if self._hist is None:
            n, bits = self.distances.shape[0], self.bits
            width = 2 * (bits + 1)
            # one bincount over (row, distance, relevant) keys gives both histograms
            keys = self.distances.astype(np.int32) * 2
            keys += self.relevant
            keys += (np.arange(n, dtype=np.int32) * width)[:, None]
            counts = np.bincount(keys.ravel(), minlength=n * width).reshape(n, bits + 1, 2)
            self._hist = (counts[:, :, 0] + counts[:, :, 1], counts[:, :, 1])
        return self._hist

    @property
    def hist(self):
        """Per query, the number of database items at each distance 0..bits."""
        return self._histograms()[0]

    @property
    def rel_hist(self):
        """Per query, the number of relevant database items at each distance."""
        return self._histograms()[1]

    @property
    def n_relevant(self):
        return self.relevant.sum(axis=1)

    def sorted_relevance(self):
        """Relevance in ranking order with ties broken by database index."""
        order = np.argsort(self.distances, axis=1, kind="stable")  # radix sort on uint8/16
        return np.take_along_axis(self.relevant, order, axis=1)


def _check_ties(ties):
    check(ties in TIE_MODES, f"`ties` must be one of {TIE_MODES}, got {ties!r}")
    return ties


def _check_labels(labels, n, name):
    labels = np.asarray(labels)
    check(
        labels.ndim in (1, 2) and labels.shape[0] == n,
        f"`{name}` must have shape ({n},) or ({n}, classes) to match its codes, "
        f"got {labels.shape}",
    )
    check(
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)
        or (labels.ndim == 2 and np.issubdtype(labels.dtype, np.floating)),
        f"`{name}` must be integer class ids or multi-hot, got dtype {labels.dtype}",
    )
    return labels


def _relevance(q_labels, db_labels):
    if q_labels.ndim == 1:
        return q_labels[:, None] == db_labels[None, :]
    return (q_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def _blocks(q_codes, q_labels, db_codes, db_labels, bits, top_k):
    q_packed, q_bits = as_packed(q_codes, bits, "q_codes")
    db_packed, db_bits = as_packed(db_codes, bits, "db_codes")
    check(q_bits == db_bits, f"query codes have {q_bits} bits, database codes {db_bits}")
    q_labels = _check_labels(q_labels, len(q_packed), "q_labels")
    db_labels = _check_labels(db_labels, len(db_packed), "db_labels")
    check(
        q_labels.ndim == db_labels.ndim and q_labels.shape[1:] == db_labels.shape[1:],
        f"`q_labels` {q_labels.shape} and `db_labels` {db_labels.shape} must be the same kind",
    )
    check(len(db_packed) > 0, "`db_codes` must hold at least one code")
    check(len(q_packed) > 0, "`q_codes` must hold at least one code")
    if top_k is not None:
        top_k = min(check_int(top_k, "top_k", 1), len(db_packed))
    q_words, db_words = to_words(q_packed), to_words(db_packed)
    step = max(1, _BLOCK_ELEMENTS // len(db_packed))
    for start in range(0, len(q_packed), step):
        stop = start + step
        dist = hamming_words(q_words[start:stop], db_words)
        relevant = _relevance(q_labels[start:stop], db_labels)
        yield _Block(dist, relevant, q_bits, top_k)


def _exclusive_cumsum(x):
    out = np.zeros_like(x)
    np.cumsum(x[:, :-1], axis=1, out=out[:, 1:])
    return out


def _harmonic(n):
    """Table of harmonic numbers H[0..n]."""
    h = np.zeros(n + 1)
    np.cumsum(1.0 / np.arange(1, n + 1), out=h[1:])
    return h


def _expected_precision_sum(n, r, before, rel_before, m, harmonic):
    """Expected sum of precision over relevant items in the first ``m`` slots of a tie group.

    A tie group of ``n`` items, ``r`` relevant, follows ``before`` items of which
    ``rel_before`` are relevant. Slot j (1-based) holds a relevant item with probability
    r / n and then has, on average, (j - 1)(r - 1)/(n - 1) relevant items ahead of it in the
    group, so E = (r/n) * sum_j (rel_before + 1 + (j-1)(r-1)/(n-1)) / (before + j), which
    the harmonic numbers give in closed form.
    """
    h = harmonic[before + m] - harmonic[before]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
        value = (r / n) * ((rel_before + 1) * h + share * (m - (before + 1) * h))
    return np.where((n > 0) & (r > 0) & (m > 0), value, 0.0)


def _expected_ap(block):
    hist = block.hist.astype(np.int64)
    rel = block.rel_hist.astype(np.int64)
    before = _exclusive_cumsum(hist)
    rel_before = _exclusive_cumsum(rel)
    n_db = block.distances.shape[1]
    harmonic = _harmonic(n_db)
    k = n_db if block.top_k is None else block.top_k
    full = before + hist <= k
    sums = _expected_precision_sum(hist, rel, before, rel_before, hist, harmonic)
    full_sum = np.where(full, sums, 0.0).sum(axis=1)
    full_rel = np.where(full, rel, 0).sum(axis=1)
    if block.top_k is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(full_rel > 0, full_sum / full_rel, 0.0)
    return _expected_ap_with_cut(hist, rel, before, rel_before, k, full_sum, full_rel, harmonic)


def _expected_ap_with_cut(hist, rel, before, rel_before, k, full_sum, full_rel, harmonic):
    """AP@k with the tie group cut by rank k summed over its hypergeometric split."""
    rows = np.arange(hist.shape[0])
    is_cut = (before < k) & (before + hist > k)
    has_cut = is_cut.any(axis=1)
    g = np.argmax(is_cut, axis=1)
    n = np.where(has_cut, hist[rows, g], 0)
    r = np.where(has_cut, rel[rows, g], 0)
    nb = before[rows, g]
    rb = rel_before[rows, g]
    m = np.where(has_cut, k - nb, 0)
    x_max = int(np.minimum(r, m).max(initial=0))
    x = np.arange(x_max + 1)[None, :]
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, hist.sum(axis=1).max() + 1)))])

    def log_choose(a, b):
        valid = (b >= 0) & (b <= a)
        return np.where(valid, log_fact[a] - log_fact[np.clip(b, 0, None)]
                        - log_fact[np.clip(a - b, 0, None)], -np.inf), valid

    n_, r_, m_ = n[:, None], r[:, None], m[:, None]
    lc1, v1 = log_choose(r_, x)
    lc2, v2 = log_choose(n_ - r_, m_ - x)
    lc3, _ = log_choose(n_, m_)
    with np.errstate(invalid="ignore"):
        pmf = np.where(v1 & v2, np.exp(lc1 + lc2 - lc3), 0.0)
    h = harmonic[nb + m] - harmonic[nb]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(m_ > 1, (x - 1) / np.maximum(m_ - 1, 1), 0.0)
        cut_sum = (x / np.maximum(m_, 1)) * (
            (rb[:, None] + 1) * h[:, None] + share * (m_ - (nb[:, None] + 1) * h[:, None])
        )
        denom = full_rel[:, None] + x
        ap_x = np.where(denom > 0, (full_sum[:, None] + np.where(x > 0, cut_sum, 0.0)) / denom, 0.0)
    ap_cut = (pmf * ap_x).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap_plain = np.where(full_rel > 0, full_sum / full_rel, 0.0)
    return np.where(has_cut, ap_cut, ap_plain)


def _index_ap(block):
    """AP with ties by index: (1 / R) sum over the k-th relevant item of k / its rank."""
    relevant = block.sorted_relevance()
    if block.top_k is not None:
        relevant = relevant[:, : block.top_k]
    n = relevant.shape[0]
    rows, cols = np.nonzero(relevant)
    n_rel = np.bincount(rows, minlength=n)
    first = np.concatenate([[0], np.cumsum(n_rel)[:-1]])
    kth = np.arange(1, len(rows) + 1) - first[rows]
    precision_sum = np.bincount(rows, weights=kth / (cols + 1.0), minlength=n)
    return np.where(n_rel > 0, precision_sum / np.maximum(n_rel, 1), 0.0)
