"""Times `mean_average_precision` against a plain per-query argsort implementation.

1,000 queries x 59,000 database codes at 48 bits (the CIFAR-10 cnnh sizes), codes drawn
around 10 class prototypes so the ranking has realistic ties. Both run in this process on
the same data; the index-mode values must be identical.

    python benchmarks/map_speed.py [--queries 1000] [--database 59000] [--bits 48]
"""

import argparse
import time

import numpy as np

from tfhash.metrics import mean_average_precision

from common import write_results


def plain_argsort_map(q, ql, db, dbl):
    """The usual published loop: per query, Hamming by inner product, argsort, cumsum."""
    bits = q.shape[1]
    aps = []
    for i in range(len(q)):
        dist = 0.5 * (bits - db @ q[i])
        order = np.argsort(dist, kind="stable")
        rel = (dbl[order] == ql[i]).astype(np.float64)
        n_rel = rel.sum()
        if n_rel == 0:
            continue
        hits = np.cumsum(rel)
        aps.append(np.sum(hits / np.arange(1, len(rel) + 1) * rel) / n_rel)
    return float(np.mean(aps))


def make_codes(n, bits, labels, prototypes, flip, rng):
    codes = prototypes[labels].copy()
    mask = rng.random((n, bits)) < flip
    codes[mask] *= -1
    return codes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=59000)
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    prototypes = rng.choice(np.array([-1, 1], np.int8), (10, args.bits))
    ql = rng.integers(0, 10, args.queries)
    dbl = rng.integers(0, 10, args.database)
    q = make_codes(args.queries, args.bits, ql, prototypes, 0.2, rng)
    db = make_codes(args.database, args.bits, dbl, prototypes, 0.2, rng)

    def timed(fn):
        times, value = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - start)
        return value, float(np.median(times))

    base_value, base_s = timed(lambda: plain_argsort_map(q.astype(np.float32), ql,
                                                         db.astype(np.float32), dbl))
    index_value, index_s = timed(lambda: mean_average_precision(q, ql, db, dbl, ties="index"))
    exp_value, exp_s = timed(lambda: mean_average_precision(q, ql, db, dbl))
    common = {"queries": args.queries, "database": args.database, "bits": args.bits}
    rows = [
        {**common, "method": "plain_argsort", "ties": "index", "map": base_value,
         "wall_s": base_s},
        {**common, "method": "tfhash", "ties": "index", "map": index_value, "wall_s": index_s,
         "speedup_vs_naive": base_s / index_s,
         "identical": bool(abs(index_value - base_value) <= 1e-12),
         "abs_diff": abs(index_value - base_value)},
        {**common, "method": "tfhash", "ties": "expected", "map": exp_value, "wall_s": exp_s,
         "speedup_vs_naive": base_s / exp_s},
    ]
    for row in rows:
        print(row)
    write_results("map_speed", rows)


if __name__ == "__main__":
    main()
