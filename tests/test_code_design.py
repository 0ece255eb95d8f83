"""The 12-bit code-design study (benchmarks/code_design.py) against independent references:
the layer it stands in for, per-image loops over every code, a hand-ranked database, the
average over every order within ties, and the end-to-end rows on the bundled digits."""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import code_design  # noqa: E402
import phase2_variants  # noqa: E402
import report  # noqa: E402
from test_benchmarks import query_class_map_reference, run_tiny, tiny_classifier  # noqa: E402
from test_fitted_codes import fitted, fitted_reference  # noqa: E402

from tfhash import data  # noqa: E402
from tfhash.codebooks import arrange_codebook, class_codebook, class_similarity  # noqa: E402
from tfhash.metrics import mean_average_precision  # noqa: E402

import common  # noqa: E402

WORDS = np.array(list(itertools.product((-1, 1), repeat=12)))


def profiles(codes, book):
    """Each code's distances to the codewords: codes of equal loss share them."""
    return (np.asarray(codes)[:, None, :] != book).sum(-1)


def random_probabilities(n, classes, seed=0):
    return np.random.default_rng(seed).dirichlet(np.full(classes, 0.3), size=n)


@pytest.mark.parametrize("temperature", [0.1, 0.15, 0.3])
def test_cross_entropy_codes_of_gamma_1_are_the_fitted_layers(temperature):
    book = arrange_codebook(class_codebook(10, 12), class_similarity(
        random_probabilities(300, 10, 1), np.arange(300) % 10))
    probs = random_probabilities(200, 10)
    coder = code_design.cross_entropy_coder(book, code_design.power_energies(temperature, 1))
    np.testing.assert_array_equal(profiles(coder(probs), book),
                                  profiles(fitted(probs.astype(np.float32), book, temperature),
                                           book))


@pytest.mark.parametrize("gamma", [0.75, 2.0])
def test_power_codes_have_the_least_cross_entropy_image_by_image(gamma):
    book = class_codebook(4, 12)
    probs = random_probabilities(20, 4, 2)
    coder = code_design.cross_entropy_coder(book, code_design.power_energies(0.2, gamma))
    energies = ((WORDS[:, None, :] != book).sum(-1) / (0.2 * 12)) ** gamma  # (words, classes)
    for p, code in zip(probs, coder(probs)):
        losses = [(p * e).sum() + np.log(np.exp(-e).sum()) for e in energies]
        assert profiles([code], book)[0].tolist() == profiles(
            [WORDS[int(np.argmin(losses))]], book)[0].tolist()


def test_brier_codes_have_the_least_squared_error_image_by_image():
    book = class_codebook(4, 12)
    probs = random_probabilities(20, 4, 3)
    logits = -(WORDS[:, None, :] != book).sum(-1) / 1.5
    readings = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for p, code in zip(probs, code_design.brier_coder(book, 1.5)(probs)):
        best = WORDS[int(np.argmin(((readings - p) ** 2).sum(1)))]
        assert profiles([code], book)[0].tolist() == profiles([best], book)[0].tolist()


def test_ties_by_probability_rank_a_hand_made_database():
    """Two images on class 0's codeword (probabilities of class 0: 0.6, irrelevant, and
    0.9, relevant), one a bit off (0.8, relevant), one on class 1's: the surer image of
    the tie comes first, so the relevant ones are listed 1st and 3rd: AP (1 + 2/3) / 2."""
    book = class_codebook(2, 12)
    near = book[0].copy()
    near[0] = -near[0]
    codes = np.array([book[0], book[0], near, book[1]])
    database = (np.array([[0.6, 0.4], [0.9, 0.1], [0.8, 0.2], [0.1, 0.9]]), np.array([1, 0, 0, 1]))
    queries = (np.array([[0.7, 0.3]]), np.array([0]))
    score = code_design.ties_by_probability_map(book, lambda probs: codes)
    assert score(queries, database) == pytest.approx((1 + 2 / 3) / 2)
    # in random order within the tie: (AP with the relevant 1st and 3rd + 2nd and 3rd) / 2
    tied = code_design.coded_map(book, lambda probs: codes)(queries, database)
    assert tied == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 2) / 2)


def test_levels_score_the_average_over_every_order_within_a_level():
    rng = np.random.default_rng(4)
    db_probs = random_probabilities(7, 3, 5)
    db_labels = np.array([0, 1, 2, 0, 1, 0, 2])
    q_probs, q_labels = random_probabilities(4, 3, 6), np.array([0, 2, 1, 0])
    levels = rng.integers(0, 3, size=(7, 3))  # many ties
    score = code_design.level_map(lambda probs: levels)

    def average_ap(query_class, label):
        aps = []
        for order in itertools.permutations(range(7)):  # each order of the database alike
            ranked = sorted(order, key=lambda i: levels[i, query_class])  # stable: within ties
            hits = np.flatnonzero(db_labels[ranked] == label) + 1
            aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
        return np.mean(aps)

    expected = np.mean([average_ap(p.argmax(), y) for p, y in zip(q_probs, q_labels)])
    assert score((q_probs, q_labels), (db_probs, db_labels)) == pytest.approx(expected)


def test_cut_and_log_levels_follow_their_definitions():
    probs = np.array([[0.995, 0.005], [0.85, 0.15], [0.5, 0.5]])
    np.testing.assert_array_equal(code_design.cut_levels()(probs), [[0, 12], [3, 10], [6, 6]])
    # a level per 1 / (0.15 * 12) e-folds: floor(-log p * 1.8), capped at 12
    np.testing.assert_array_equal(code_design.log_levels(0.15)(probs),
                                  [[0, 9], [0, 3], [1, 1]])


@pytest.mark.parametrize("distance", [4, 6])
def test_random_codebooks_keep_their_minimum_distance(distance):
    book = code_design.random_codebook(10, distance, np.random.default_rng(7))
    pairs = profiles(book, book)[~np.eye(10, dtype=bool)]
    assert book.shape == (10, 12) and pairs.min() >= distance


def test_code_design_scores_held_out_codes_both_ways(tmp_path, monkeypatch):
    """code_design.py end to end on the bundled digits, on a tiny run's recipe: the fitted
    row and the classifier's order equal references computed both ways round on the
    held-out split; a second seed adds its rows; plain and flipped rows are not mixed."""
    run_tiny(tmp_path, monkeypatch, "--methods", "graded-asymmetric", "--no-ablation")
    work = tmp_path / "fit"

    def run(seed, *options):
        monkeypatch.setattr(sys, "argv", [
            "code_design.py", "--recipe-from", str(tmp_path / "mnist-5k-cnnh.json"),
            "--dataset", "mnist-5k", "--seed", str(seed), "--work-dir", str(work),
            "--verbose", "0", *options])
        code_design.main()
        return json.loads((tmp_path / "code_design-mnist-5k-cnnh.json").read_text())

    doc = run(0)
    assert common.RESULTS == tmp_path
    classifier = tiny_classifier(work / "mnist-5k-cnnh-seed0")
    split, unseen = phase2_variants.validation_split(data.load_dataset("mnist-5k"), 0, 0.2)
    train, queries, held_out = ((classifier.predict(part.images, verbose=0), part.labels)
                                for part in (split.train, split.query, unseen))
    book = arrange_codebook(class_codebook(10, 12), class_similarity(*train))
    rows = {(r["variant"], r["setting"]): r["val_map"] for r in doc["rows"]}
    fitted_map = np.mean([
        mean_average_precision(book[q[0].argmax(1)], q[1], fitted_reference(d[0], book, 0.15),
                               d[1]) for q, d in ((queries, held_out), (held_out, queries))])
    assert rows[("fitted", "T=0.15")] == pytest.approx(fitted_map, abs=1e-5)
    assert rows[("order", "query-class")] == pytest.approx(np.mean([
        query_class_map_reference(*q, *d) for q, d in ((queries, held_out),
                                                       (held_out, queries))]), abs=1e-5)
    assert {v for v, _ in rows} == {"order", "fitted", "fitted-ties-by-probability", "levels",
                                    "power", "brier", "codebook"}
    assert len(rows) == 6 + 21 + 4 + 3 + 27
    again = run(1)
    assert sorted({r["seed"] for r in again["rows"]}) == [0, 1]
    assert len(again["rows"]) == 2 * len(doc["rows"]) and set(again["seeds"]) == {"0", "1"}
    with pytest.raises(SystemExit, match="--flip-average: .* flip_averaged=False; give this"):
        run(1, "--flip-average")


def test_the_code_design_section_lists_each_variants_best_setting_against_fitted_codes():
    rows = [{"seed": s, "variant": v, "setting": t, "val_map": m} for s, v, t, m in [
        (0, "order", "query-class", 0.76), (1, "order", "query-class", 0.74),
        (0, "fitted", "T=0.15", 0.74), (1, "fitted", "T=0.15", 0.72),
        (0, "power", "a", 0.70), (1, "power", "a", 0.74),  # mean 0.72
        (0, "power", "b", 0.75), (1, "power", "b", 0.71),  # mean 0.73: the best
        (0, "power", "c", 0.60), (1, "power", "c", 0.60),
        (0, "brier", "s=9", 0.99)]]  # one seed only: not counted
    doc = {"benchmark": "code_design-r", "created": "2026-12-07T00:00:00+00:00",
           "machine": {"cpus": 2}, "versions": {}, "rows": rows}
    text = report.code_design_section(doc)
    assert "| order | query-class | 0.7500 | +0.0200 | 0.7600 / 0.7400 |" in text
    assert "| fitted | T=0.15 | 0.7300 | +0.0000 | 0.7400 / 0.7200 |" in text
    assert "| power | b (best of 3) | 0.7300 | +0.0000 | 0.7500 / 0.7100 |" in text
    assert "| brier |" not in text.split("Every row:")[0]
    assert text.index("vs fitted") < text.index("| seed | variant | setting | val_map |")
