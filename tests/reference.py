"""Independent brute-force references: the retrieval metrics (per-query loops, plain sorts)
and one sharpness-aware step of a linear model under squared error, in numpy."""

import numpy as np


def hamming_bruteforce(q, db):
    """Hamming distances between +-1 codes by counting unequal entries."""
    return (q[:, None, :] != db[None, :, :]).sum(axis=2)


def relevance(ql, dbl):
    if ql.ndim == 1:
        return ql[:, None] == dbl[None, :]
    return (ql[:, None, :] & dbl[None, :, :]).any(axis=2)


def ap_of_order(rel_sorted, top_k=None):
    """AP of one ranked relevance list: mean precision at the ranks of relevant items."""
    if top_k is not None:
        rel_sorted = rel_sorted[:top_k]
    hits, total = 0, 0.0
    for i, r in enumerate(rel_sorted, start=1):
        if r:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def map_index(q, ql, db, dbl, top_k=None):
    d = hamming_bruteforce(q, db)
    rel = relevance(ql, dbl)
    aps = []
    for i in range(len(q)):
        if not rel[i].any():
            continue
        order = sorted(range(len(db)), key=lambda j: (d[i, j], j))
        aps.append(ap_of_order(rel[i, order], top_k))
    return float(np.mean(aps))


def map_random_ties(q, ql, db, dbl, top_k=None, orders=2000, seed=0):
    """Average of AP over random tie orders (random secondary key per trial)."""
    rng = np.random.default_rng(seed)
    d = hamming_bruteforce(q, db)
    rel = relevance(ql, dbl)
    keep = rel.any(axis=1)
    total = 0.0
    for _ in range(orders):
        key = rng.random(d.shape)
        order = np.lexsort((key, d), axis=1)
        rs = np.take_along_axis(rel, order, axis=1)
        total += np.mean([ap_of_order(rs[i], top_k) for i in np.flatnonzero(keep)])
    return total / orders


def mse_gradient(x, y, kernel, bias):
    """The mean squared error of ``x @ kernel + bias`` against ``y``, and its gradient
    with respect to ``kernel`` and ``bias``."""
    residual = x @ kernel + bias - y
    return (residual ** 2).mean(), 2 * x.T @ residual / len(x), 2 * residual.mean(axis=0)


def sam_gradient(x, y, kernel, bias, radius):
    """The gradient (kernel, bias) of `mse_gradient` at the weights moved ``radius`` along
    its normalised gradient: what a SAM step hands its optimizer."""
    _, grad_kernel, grad_bias = mse_gradient(x, y, kernel, bias)
    norm = np.sqrt((grad_kernel ** 2).sum() + (grad_bias ** 2).sum())
    return mse_gradient(x, y, kernel + radius * grad_kernel / norm,
                        bias + radius * grad_bias / norm)[1:]
