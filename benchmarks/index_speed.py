"""Search throughput of the Hamming index backends, in one run on the same codes.

Exact top-100 over 1,000,000 random 64-bit codes: FAISS flat (`HammingIndex`, exact with ties
by id), the sublinear kinds (IVF, multi-hash) with their recall@100 against exact, and a plain
numpy popcount scan; plus memory per code. Results to benchmarks/results/index_speed.json.

    python benchmarks/index_speed.py [--codes 1000000] [--queries 200] [--k 100]
"""

import argparse
import time

import numpy as np

from tfhash.codes import hamming_words, to_words
from tfhash.index import HammingIndex

from common import write_results


def numpy_scan(q_packed, db_words, k):
    """Top-k by a full popcount scan and argpartition (ties by id after the final sort)."""
    q_words = to_words(q_packed)
    ids = np.empty((len(q_packed), k), np.int64)
    for start in range(0, len(q_packed), 16):
        dist = hamming_words(q_words[start:start + 16], db_words).astype(np.int32)
        keys = dist.astype(np.int64) * len(db_words) + np.arange(len(db_words))
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(keys, part, 1).argsort(axis=1)
        ids[start:start + 16] = np.take_along_axis(part, order, 1)
    return ids


def recall_at_k(found, exact):
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, exact)]))


def milvus_rows(db, queries, exact_ids, args, common, np_s, timed):
    """The same search on an embedded Milvus server on loopback, when the extra is installed."""
    try:
        from milvus import default_server
    except ImportError:
        print("milvus extra not installed: skipping the Milvus rows")
        return []
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        default_server.set_base_dir(tmp)
        default_server.start()
        try:
            uri = f"http://127.0.0.1:{default_server.listen_port}"
            for kind, params in (("flat", {}), ("ivf", {"nlist": 1024, "nprobe": 32})):
                index = HammingIndex(64, backend="milvus", kind=kind, uri=uri,
                                     collection=f"bench_{kind}", **params)
                start = time.perf_counter()
                index.add(db, ids=np.arange(args.codes))
                build_s = time.perf_counter() - start
                (ids, _), s = timed(lambda index=index: index.search(queries, args.k), repeats=1)
                rows.append({**common, "backend": f"milvus_{kind}", "exact": kind == "flat",
                             **params, "build_s": build_s, "queries_per_s": args.queries / s,
                             "recall_at_k": recall_at_k(ids, exact_ids),
                             "speedup_vs_naive": np_s / s})
        finally:
            default_server.stop()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (args.codes, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, 8), dtype=np.uint8)
    rows = []

    def timed(fn, repeats=3):
        fn()
        times = []
        out = None
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return out, float(np.median(times))

    common = {"codes": args.codes, "bits": 64, "k": args.k, "queries": args.queries}
    db_words = to_words(db)
    exact_np, np_s = timed(lambda: numpy_scan(queries, db_words, args.k), repeats=1)
    rows.append({**common, "backend": "numpy_popcount_scan", "exact": True,
                 "queries_per_s": args.queries / np_s, "bytes_per_code": 8})
    flat = HammingIndex(64)
    start = time.perf_counter()
    flat.add(db, ids=np.arange(args.codes))
    build_flat = time.perf_counter() - start
    (exact_ids, _), flat_s = timed(lambda: flat.search(queries, args.k))
    rows.append({**common, "backend": "faiss_flat", "exact": True, "build_s": build_flat,
                 "queries_per_s": args.queries / flat_s, "bytes_per_code": 8 + 8,
                 "speedup_vs_naive": np_s / flat_s,
                 "same_as_numpy": bool(np.array_equal(exact_ids, exact_np))})
    sublinear = (("ivf", {"nlist": 1024, "nprobe": 32}), ("ivf", {"nlist": 1024, "nprobe": 256}),
                 ("multihash", {"nhash": 4, "nflip": 1}), ("multihash", {"nhash": 4, "nflip": 3}))
    for kind, params in sublinear:
        index = HammingIndex(64, kind=kind, **params)
        start = time.perf_counter()
        index.add(db, ids=np.arange(args.codes))
        build_s = time.perf_counter() - start
        (ids, _), s = timed(lambda index=index: index.search(queries, args.k))
        rows.append({**common, "backend": f"faiss_{kind}", "exact": False, **params,
                     "build_s": build_s, "queries_per_s": args.queries / s,
                     "recall_at_k": recall_at_k(ids, exact_ids), "speedup_vs_naive": np_s / s})
    rows.extend(milvus_rows(db, queries, exact_ids, args, common, np_s, timed))
    for row in rows:
        print(row, flush=True)
    write_results("index_speed", rows,
                  note="bytes_per_code counts the code and its int64 id (FAISS id map)")


if __name__ == "__main__":
    main()
