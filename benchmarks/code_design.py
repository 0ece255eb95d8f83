"""Where 12-bit fitted class codes lose against the classifier's own order, and what other
per-image code designs do there, on held-out training images only.

`fit_temperature.py` found fitted codes (`tfhash.layers.FittedClassCodes`) 0.02 under the
classifier's query-class order at 12 bits and within 0.003 of it at 48. This script asks
where that 12-bit gap lies and whether another way of placing each database image closes
it. On `fit_temperature.py`'s held-out split and cached classifier of a seed (trained when
missing), every row's ``val_map`` is scored both ways round as there (queries on their
likeliest class's codeword, the codewords arranged by the training images):

* ``order``: rankings by the probabilities themselves, no codes: ``query-class`` (the
  database sorted by its probability of the query's likeliest class, the order the codes
  approach) and ``dot`` (by the dot product of the query's and the image's probabilities,
  the chance that the two share a class).
* ``fitted``: fitted codes at ``--temperature``; ``fitted-ties-by-probability``: the same
  codes, with the images at equal distance ranked by their probability of the query's
  class instead of in random order. The difference is what the codes lose to ties alone.
* ``levels``: each class's probabilities cut into ``bits + 1`` levels on their own, as if
  a code's distances to the ten codewords could be set independently (random order within
  a level): ``log`` cuts where fitted codes space their distances, a level per
  ``1 / (temperature * bits)`` e-folds of the probability; ``linear`` at ``LINEAR_CUTS``.
* ``power``: least cross-entropy codes, as fitted codes, but reading distance ``d`` as the
  energy ``(d / (T * bits)) ** gamma`` (``gamma = 1`` is `FittedClassCodes`).
* ``brier``: the code whose reading ``softmax(-d / s)`` has the least squared error to
  the probabilities.
* ``codebook``: fitted codes on other codebooks, arranged the same way, instead of
  `tfhash.codebooks.class_codebook`'s: `tfhash.codebooks.capped_codebook` (pairs 6 to 8
  apart), and random ones of a given minimum distance (the same draws on every seed, so a
  draw's rows of two seeds are of one codebook).

Every code search is exact over all ``2**12`` codes. Rows of other seeds already in
``results/code_design-<recipe><tag>.json`` are kept.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/code_design.py \\
        --recipe-from benchmarks/results/cifar10-cnnh-w24-p300-mixup-wd1-graded.json \\
        --flip-average --seed 2
"""

import argparse
from pathlib import Path

import numpy as np
from classifier_bound import probability_map
from fit_temperature import (
    both_ways,
    coded_map,
    earlier_results,
    held_out_probabilities,
    query_class_map,
)

from tfhash.cli import positive_float
from tfhash.codebooks import (
    arrange_codebook,
    capped_codebook,
    class_codebook,
    class_similarity,
)
from tfhash.codes import every_code, hamming, pack
from tfhash.layers import FittedClassCodes
from tfhash.metrics import mean_average_precision

import common

BITS = 12  # every code search is exact over all 2**BITS codes
LINEAR_CUTS = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
GAMMAS = (0.75, 1.5, 2.0)
POWER_TEMPERATURES = (0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3)
BRIER_SCALES = (1.2, 1.5, 1.8, 2.4)
MIN_DISTANCES = (6, 5, 4)
CODEBOOK_DRAWS = 3
CODEBOOK_SEED = 0  # of the random codebooks: a draw is the same codebook on every seed
CODEBOOK_TEMPERATURES = (0.125, 0.15, 0.2)


def code_distances(codes, book):
    """Hamming distances ``(codes, classes)`` of +-1 ``codes`` to the codewords
    (`tfhash.codes.hamming`)."""
    return hamming(pack(codes), pack(book))


def least_loss_codes(probabilities, weights, offsets, codes, block=1024):
    """For each row of ``probabilities`` the first of ``codes`` of least loss
    ``probabilities @ weights[z] + offsets[z]``: any loss linear in the probabilities
    (cross-entropy, squared error) over an exhaustive list of codes."""
    chosen = [np.argmin(probabilities[i:i + block] @ weights.T + offsets, axis=1)
              for i in range(0, len(probabilities), block)]
    return codes[np.concatenate(chosen)]


def cross_entropy_coder(book, energies):
    """Least cross-entropy codes when distance ``d`` reads as ``softmax(-energies[d])``
    over the codewords: ``sum_k p_k E_k + log sum_k exp(-E_k)``."""
    codes = every_code(book.shape[1])
    energy = energies[code_distances(codes, book)]
    offsets = np.log(np.exp(-energy).sum(axis=1))
    return lambda probabilities: least_loss_codes(probabilities, energy, offsets, codes)


def brier_coder(book, scale):
    """Codes whose reading ``softmax(-d / scale)`` has the least squared error to the
    probabilities: ``sum_k r_k^2 - 2 p_k r_k`` (the ``p^2`` term is the image's own)."""
    codes = every_code(book.shape[1])
    reading = np.exp(-code_distances(codes, book) / scale)
    reading /= reading.sum(axis=1, keepdims=True)
    return lambda probabilities: least_loss_codes(probabilities, -2 * reading,
                                                  (reading ** 2).sum(axis=1), codes)


def power_energies(temperature, gamma, bits=BITS):
    """``(d / (temperature * bits)) ** gamma`` for every distance ``d`` of ``bits`` bits."""
    return (np.arange(bits + 1) / (temperature * bits)) ** gamma


def ties_by_probability_map(book, coder):
    """A ``score``: as `fit_temperature.coded_map`, but images at equal distance from the
    query's codeword are ranked by their probability of the query's class (larger first)."""
    def score(queries, database):
        distances = code_distances(coder(database[0]), book)
        # the probability (< 1 apart) orders the images within a distance only
        return probability_map(np.eye(len(book))[queries[0].argmax(1)], queries[1],
                               0.5 * database[0] - distances, database[1])
    return score


def level_map(levels_of):
    """A ``score``: queries ranked against the database by ``levels_of(probabilities)``,
    an integer level from 0 (first) per image and class, in random order within a level
    (the expected AP, as `tfhash.metrics.mean_average_precision` takes ties: the levels of
    the query's class become thermometer codes, at that many bits from a query of none)."""
    def score(queries, database):
        levels = levels_of(database[0])
        width = max(int(levels.max()), 1)
        thermometer = np.where(np.arange(width) < levels[:, :, None], 1, -1)
        classes, maps, counts = queries[0].argmax(1), [], []
        for c in np.unique(classes):
            labels = queries[1][classes == c]
            counts.append(np.isin(labels, database[1]).sum())  # queries with a relevant image
            maps.append(mean_average_precision(-np.ones((len(labels), width)), labels,
                                               thermometer[:, c], database[1]))
        return float(np.average(maps, weights=counts))
    return score


def log_levels(temperature, bits=BITS):
    """``levels_of``: ``floor(-log p * temperature * bits)`` capped at ``bits``."""
    return lambda p: np.minimum(np.floor(-np.log(np.maximum(p, 1e-30)) * temperature * bits),
                                bits).astype(int)


def cut_levels(cuts=LINEAR_CUTS):
    """``levels_of``: the number of ``cuts`` above the probability."""
    return lambda p: (p[:, :, None] < np.asarray(cuts)).sum(axis=-1)


def random_codebook(num_classes, min_distance, rng, bits=BITS):
    """``num_classes`` codewords drawn one at a time, in random order, from the words at
    least ``min_distance`` from every one drawn so far (drawn again on a dead end)."""
    words = every_code(bits)
    while True:
        chosen = []
        for i in rng.permutation(len(words)):
            if not chosen or code_distances(words[i:i + 1], words[chosen]).min() >= min_distance:
                chosen.append(i)
                if len(chosen) == num_classes:
                    return words[chosen]


def design_rows(train, queries, unseen, temperature, seed):
    """The rows of one seed from ``(probabilities, labels)`` of the training images (which
    arrange the codewords), the validation queries and the unseen database."""
    similarity = class_similarity(*train)
    book = arrange_codebook(class_codebook(len(similarity), BITS), similarity)
    fitted = cross_entropy_coder(book, power_energies(temperature, 1.0))
    scores = [("order", "query-class", query_class_map),
              ("order", "dot", lambda q, d: probability_map(q[0], q[1], d[0], d[1])),
              ("fitted", f"T={temperature}", coded_map(book, fitted)),
              ("fitted-ties-by-probability", f"T={temperature}",
               ties_by_probability_map(book, fitted)),
              ("levels", f"log T={temperature}", level_map(log_levels(temperature))),
              ("levels", "linear", level_map(cut_levels()))]
    scores += [("power", f"gamma={g} T={t}",
                coded_map(book, cross_entropy_coder(book, power_energies(t, g))))
               for g in GAMMAS for t in POWER_TEMPERATURES]
    scores += [("brier", f"s={s}", coded_map(book, brier_coder(book, s)))
               for s in BRIER_SCALES]
    capped = arrange_codebook(capped_codebook(len(book), BITS, 6, 8), similarity)
    scores += [("codebook", f"min distance 6, max 8, T={t}",
                coded_map(capped, cross_entropy_coder(capped, power_energies(t, 1.0))))
               for t in CODEBOOK_TEMPERATURES]
    rng = np.random.default_rng(CODEBOOK_SEED)  # the same draws on every seed
    for distance in MIN_DISTANCES:
        for draw in range(CODEBOOK_DRAWS):
            drawn = arrange_codebook(random_codebook(len(book), distance, rng), similarity)
            scores += [("codebook", f"min distance {distance} draw {draw} T={t}",
                        coded_map(drawn, cross_entropy_coder(drawn, power_energies(t, 1.0))))
                       for t in CODEBOOK_TEMPERATURES]
    rows = []
    for variant, setting, score in scores:
        rows.append({"seed": seed, "variant": variant, "setting": setting,
                     "val_map": round(both_ways(score, queries, unseen)[0], 6)})
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe-from", required=True, help="a reproduce.py results file")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=positive_float,
                        default=FittedClassCodes.DEFAULT_TEMPERATURE)
    parser.add_argument("--flip-average", action="store_true",
                        help="score the flip-averaged classifier (tfhash.model.flip_averaged)")
    parser.add_argument("--work-dir", default="runs/fit_temperature",
                        help="where fit_temperature.py caches its held-out classifiers")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    name = f"code_design-{Path(args.recipe_from).stem}{args.tag}"
    earlier = earlier_results(name, args.flip_average)
    parts, pretrain_s = held_out_probabilities(args)
    train, queries, held_out = ((probs.astype(np.float64), labels) for probs, labels in parts)
    rows = [r for r in earlier["rows"] if r["seed"] != args.seed]
    rows += design_rows(train, queries, held_out, args.temperature, args.seed)
    seeds = {**earlier["seeds"], str(args.seed): {
        "wall_s_pretrain": round(pretrain_s, 1),
        "query_accuracy": round(float((queries[0].argmax(1) == queries[1]).mean()), 4)}}
    common.write_results(name, rows, recipe_from=Path(args.recipe_from).name, bits=BITS,
                         flip_averaged=args.flip_average, n_train=len(train[1]),
                         n_queries=len(queries[1]), n_unseen=len(held_out[1]), seeds=seeds)


if __name__ == "__main__":
    main()
