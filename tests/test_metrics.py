import itertools

import numpy as np
import pytest

from tfhash import codes, metrics
from tfhash.errors import TfhashError

from reference import ap_of_order, hamming_bruteforce, map_index, map_random_ties, relevance


def random_problem(seed, bits=5, n_q=8, n_db=40, classes=3, multi_hot=False):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], (n_q, bits))
    db = rng.choice([-1, 1], (n_db, bits))
    if multi_hot:
        ql = rng.random((n_q, classes)) < 0.3
        dbl = rng.random((n_db, classes)) < 0.3
    else:
        ql = rng.integers(0, classes, n_q)
        dbl = rng.integers(0, classes, n_db)
    return q, ql, db, dbl


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top_k", [None, 1, 6, 17, 40, 500])
@pytest.mark.parametrize("multi_hot", [False, True])
def test_index_mode_equals_bruteforce(seed, top_k, multi_hot):
    q, ql, db, dbl = random_problem(seed, multi_hot=multi_hot)
    got = metrics.mean_average_precision(q, ql, db, dbl, top_k=top_k, ties="index")
    assert got == pytest.approx(map_index(q, ql, db, dbl, top_k), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_k", [None, 1, 7, 20])
def test_expected_mode_equals_average_over_random_tie_orders(seed, top_k):
    q, ql, db, dbl = random_problem(seed, bits=4, n_q=5, n_db=30)
    got = metrics.mean_average_precision(q, ql, db, dbl, top_k=top_k)
    want = map_random_ties(q, ql, db, dbl, top_k, orders=3000, seed=seed)
    assert got == pytest.approx(want, abs=0.006)


def test_expected_mode_exact_on_enumerated_orders():
    # One query, a database of 6 items in two tie groups: enumerate every order exactly.
    q = np.array([[1, 1, 1]])
    db = np.array([[1, 1, 1], [1, 1, -1], [1, 1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]])
    ql = np.array([0])
    dbl = np.array([0, 0, 1, 1, 0, 0])
    d = hamming_bruteforce(q, db)[0]
    rel = relevance(ql, dbl)[0]
    groups = [np.flatnonzero(d == v) for v in np.unique(d)]
    for top_k in (None, 2, 4):
        aps = [
            ap_of_order(rel[np.concatenate(perm)], top_k)
            for perm in itertools.product(*[itertools.permutations(g) for g in groups])
        ]
        got = metrics.mean_average_precision(q, ql, db, dbl, top_k=top_k)
        assert got == pytest.approx(np.mean(aps), abs=1e-12)


def test_expected_mode_ignores_database_order():
    q, ql, db, dbl = random_problem(5, n_db=60)
    perm = np.random.default_rng(1).permutation(60)
    a = metrics.mean_average_precision(q, ql, db, dbl, top_k=10)
    b = metrics.mean_average_precision(q, ql, db[perm], dbl[perm], top_k=10)
    assert a == pytest.approx(b, abs=1e-12)


def test_packed_codes_give_the_same_values():
    q, ql, db, dbl = random_problem(2, bits=13)
    plain = metrics.mean_average_precision(q, ql, db, dbl)
    packed = metrics.mean_average_precision(codes.pack(q), ql, codes.pack(db), dbl, bits=13)
    assert plain == packed


def test_queries_without_relevant_items_are_dropped_and_top_k_misses_score_zero():
    q = np.array([[1, 1], [-1, -1]])
    db = np.array([[1, 1], [-1, 1], [-1, -1]])
    ql, dbl = np.array([0, 7]), np.array([0, 0, 0])
    assert metrics.mean_average_precision(q, ql, db, dbl) == 1.0  # query 2 has none: dropped
    q2, ql2 = np.array([[-1, -1]]), np.array([1])
    dbl2 = np.array([1, 0, 0])  # the relevant item is last at distance 2
    assert metrics.mean_average_precision(q2, ql2, db, dbl2, top_k=1, ties="index") == 0.0


def test_precision_at_k_and_radius_against_bruteforce():
    q, ql, db, dbl = random_problem(3, bits=6, n_db=50)
    d = hamming_bruteforce(q, db)
    rel = relevance(ql, dbl)
    order = np.lexsort((np.tile(np.arange(50), (len(q), 1)), d), axis=1)
    want_p5 = np.take_along_axis(rel, order, axis=1)[:, :5].mean()
    assert metrics.precision_at_k(q, ql, db, dbl, 5, ties="index") == pytest.approx(want_p5)
    ball = d <= 2
    prec = np.where(ball.sum(1) > 0, (ball & rel).sum(1) / np.maximum(ball.sum(1), 1), 0)
    has = rel.any(1)
    rec = ((ball & rel).sum(1)[has] / rel.sum(1)[has]).mean()
    p, r = metrics.precision_recall_at_radius(q, ql, db, dbl, radius=2)
    assert p == pytest.approx(prec.mean()) and r == pytest.approx(rec)
    radii, precision, recall = metrics.precision_recall_curve(q, ql, db, dbl)
    assert list(radii) == list(range(7)) and recall[-1] == pytest.approx(1.0)


def test_expected_precision_at_k_matches_random_orders():
    q, ql, db, dbl = random_problem(4, bits=3, n_db=30)
    d = hamming_bruteforce(q, db)
    rel = relevance(ql, dbl)
    rng = np.random.default_rng(0)
    trials = [np.take_along_axis(rel, np.lexsort((rng.random(d.shape), d), axis=1), 1)[:, :7]
              .mean() for _ in range(3000)]
    got = metrics.precision_at_k(q, ql, db, dbl, 7)
    assert got == pytest.approx(np.mean(trials), abs=0.005)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ties": "random"}, "ties"),
        ({"top_k": 0}, "top_k"),
        ({"q_labels": np.zeros(3, int)}, "q_labels"),
        ({"db_codes": np.zeros((40, 5))}, "only -1 and \\+1"),
    ],
)
def test_bad_arguments(kwargs, match):
    q, ql, db, dbl = random_problem(0)
    args = {"q_codes": q, "q_labels": ql, "db_codes": db, "db_labels": dbl}
    args.update(kwargs)
    with pytest.raises(TfhashError, match=match):
        metrics.mean_average_precision(**args)


def test_retrieval_report_gives_each_querys_ap():
    q, ql, db, dbl = random_problem(1, bits=4, n_q=5, n_db=30)
    ql[2] = 7  # a class the database lacks: no relevant item, so no AP
    report = metrics.retrieval_report(q, ql, db, dbl)
    assert np.isnan(report["query_ap"][2])
    for i in (0, 1, 3, 4):
        want = map_random_ties(q[i:i + 1], ql[i:i + 1], db, dbl, None, orders=3000, seed=i)
        assert report["query_ap"][i] == pytest.approx(want, abs=0.01)
    assert np.nanmean(report["query_ap"]) == pytest.approx(report["map"], abs=1e-12)


def test_retrieval_report_matches_the_separate_metrics():
    q, ql, db, dbl = random_problem(6, bits=7, n_db=80)
    report = metrics.retrieval_report(q, ql, db, dbl)
    assert report["map"] == metrics.mean_average_precision(q, ql, db, dbl)
    assert report["map_index"] == pytest.approx(map_index(q, ql, db, dbl), abs=1e-12)
    p, r = metrics.precision_recall_at_radius(q, ql, db, dbl, radius=2)
    assert (report["precision_r2"], report["recall_r2"]) == (p, r)
