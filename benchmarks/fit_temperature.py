"""The temperature of fitted class codes, chosen on held-out training images only.

`tfhash.layers.FittedClassCodes` places each database image where its Hamming distances to
the class codewords, read as probabilities ``softmax(-distance / (temperature * bits))``,
best explain the classifier's. This script picks that temperature without the protocol's
queries: for one seed it takes the recipe of a results file (``--recipe-from``), holds out
30% of the cnnh training images (10% validation queries, 20% an unseen validation
database, `phase2_variants.validation_split`), trains phase 1 on the other 70% (cached
under ``--work-dir``), and scores asymmetric codes (each query on its likeliest class's
codeword, the codewords arranged by the training images) of every length in ``--bits``:
graded-asymmetric (`tfhash.layers.GradedClassCodes`) and fitted-asymmetric at each
``--temperatures``. Each row's ``val_map`` is the mean of two mAPs: the queries against the
unseen database, and the unseen images as queries against the validation queries as
database. ``map_query_class`` is the classifier's own order, which such codes approach:
each query's predicted class, the database sorted by its probability of it. Rows of other
seeds already in ``results/fit_temperature-<recipe><tag>.json`` are kept, and
``best_temperature`` is the one of highest ``val_map`` averaged over all its
fitted-asymmetric rows (every length: the temperature is a share of the code length, so one
serves them all). ``--codebooks max-min capped`` adds fitted-capped-asymmetric rows: the
same on `tfhash.codebooks.capped_codebook`'s words.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/fit_temperature.py \\
        --recipe-from benchmarks/results/cifar10-cnnh-w24-p300-mixup-wd1-graded.json \\
        --flip-average --seed 0
"""

import argparse
import json
from pathlib import Path

import keras
import numpy as np
from classifier_bound import probability_map
from phase2_variants import pretrained_backbone, recipe_config, validation_split

from tfhash import data, model
from tfhash.cli import bits_arg, positive_float
from tfhash.codebooks import CODEBOOKS, arrange_codebook, class_similarity, named_codebook
from tfhash.layers import FittedClassCodes, GradedClassCodes
from tfhash.metrics import mean_average_precision

import common

UNSEEN_FRACTION = 0.2  # of the cnnh training images: the unseen validation database
TEMPERATURES = (0.0625, 0.083, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3)


def both_ways(score, first, second):
    """``score(queries, database)`` of ``first`` against ``second`` and back, each a
    ``(probabilities, labels)`` pair: ``(mean, first against second, second against
    first)``."""
    there, back = score(first, second), score(second, first)
    return (there + back) / 2, there, back


def query_class_map(queries, database):
    """A ``score`` for `both_ways`: the classifier's own order (`classifier_bound`'s
    ``map_query_class``)."""
    one_hot = np.eye(queries[0].shape[1])[queries[0].argmax(1)]
    return probability_map(one_hot, queries[1], *database)


def coded_map(book, coder):
    """A ``score`` for `both_ways`: queries on their likeliest class's codeword of
    ``book``, the database coded by ``coder`` (class probabilities to +-1 codes)."""
    def score(queries, database):
        return mean_average_precision(book[queries[0].argmax(1)], queries[1],
                                      coder(database[0]), database[1])
    return score


def layer_coder(layer):
    """A ``coder`` for `coded_map` from a class-codes layer."""
    return lambda probabilities: keras.ops.convert_to_numpy(layer(probabilities))


FITTED_METHODS = {"max-min": "fitted-asymmetric", "capped": "fitted-capped-asymmetric"}


def temperature_rows(train, queries, unseen, bits_list, temperatures, seed,
                     codebooks=("max-min",)):
    """The rows of one seed: for each length, graded-asymmetric and fitted-asymmetric at
    each temperature (and fitted-capped-asymmetric with ``"capped"`` in ``codebooks``:
    on `tfhash.codebooks.capped_codebook`'s words), from ``(probabilities, labels)`` of the
    training images (which arrange the codewords), the validation queries and the unseen
    database."""
    rows = []
    similarity = class_similarity(*train)
    for bits in bits_list:
        layers = []
        for codebook in codebooks:
            book = arrange_codebook(named_codebook(codebook, len(similarity), bits), similarity)
            if codebook == "max-min":
                layers.append(("graded-asymmetric", None, GradedClassCodes(book)))
            layers += [(FITTED_METHODS[codebook], t, FittedClassCodes(book, t))
                       for t in temperatures]
        for method, temperature, layer in layers:
            book = layer.codebook
            mean, there, back = both_ways(coded_map(book, layer_coder(layer)), queries,
                                          unseen)
            rows.append({"seed": seed, "bits": bits, "method": method,
                         "temperature": temperature, "val_map": round(mean, 6),
                         "map_queries_on_unseen": round(there, 6),
                         "map_unseen_on_queries": round(back, 6)})
            print(rows[-1], flush=True)
    return rows


def best_temperature(rows):
    """The temperature of the highest fitted-asymmetric ``val_map`` averaged over
    ``rows``."""
    by_temperature = {}
    for r in rows:
        if r["method"] == "fitted-asymmetric":
            by_temperature.setdefault(r["temperature"], []).append(r["val_map"])
    return max(by_temperature, key=lambda t: np.mean(by_temperature[t]))


def earlier_results(name, flip_average):
    """The rows and seeds of ``results/<name>.json`` so far (none for a new file); one whose
    rows were scored with the other ``flip_average`` is refused, before any training."""
    path = common.RESULTS / f"{name}.json"  # looked up when run, as write_results does
    if not path.exists():
        return {"rows": [], "seeds": {}}
    earlier = json.loads(path.read_text())
    if earlier["flip_averaged"] != flip_average:
        raise SystemExit(f"--flip-average: {path} holds rows with flip_averaged="
                         f"{earlier['flip_averaged']}; give this run its own --tag")
    return earlier


def held_out_probabilities(args):
    """``args.seed``'s held-out split of the recipe's training images (`validation_split`)
    and its classifier, phase 1 on the rest, cached under ``args.work_dir`` and
    flip-averaged with ``args.flip_average``: ``((train, queries, unseen), phase-1
    seconds)``, each part ``(class probabilities, labels)``."""
    config = recipe_config(args.recipe_from, args.seed)
    dataset = data.load_dataset(args.dataset)
    split, unseen = validation_split(dataset, args.seed, UNSEEN_FRACTION)
    work_dir = Path(args.work_dir) / f"{Path(args.recipe_from).stem}-seed{args.seed}"
    _, classifier, pretrain_s = pretrained_backbone(split, config, dataset.num_classes,
                                                    work_dir, args.verbose)
    if args.flip_average:
        classifier = model.flip_averaged(classifier)
    parts = tuple((classifier.predict(part.images, batch_size=256, verbose=0), part.labels)
                  for part in (split.train, split.query, unseen))
    return parts, pretrain_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe-from", required=True, help="a reproduce.py results file")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=bits_arg, nargs="+", default=[12, 24, 32, 48])
    parser.add_argument("--temperatures", type=positive_float, nargs="+",
                        default=list(TEMPERATURES))
    parser.add_argument("--codebooks", nargs="+", choices=sorted(CODEBOOKS),
                        default=["max-min"],
                        help="fitted codes on each of these codebooks (tfhash.codebooks; "
                             "capped: rows named fitted-capped-asymmetric)")
    parser.add_argument("--flip-average", action="store_true",
                        help="score the flip-averaged classifier (tfhash.model.flip_averaged)")
    parser.add_argument("--work-dir", default="runs/fit_temperature")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    name = f"fit_temperature-{Path(args.recipe_from).stem}{args.tag}"
    earlier = earlier_results(name, args.flip_average)
    (train, queries, held_out), pretrain_s = held_out_probabilities(args)
    rows = [r for r in earlier["rows"] if r["seed"] != args.seed]
    rows += temperature_rows(train, queries, held_out, args.bits, args.temperatures, args.seed,
                             args.codebooks)
    seeds = {**earlier["seeds"], str(args.seed): {
        "wall_s_pretrain": round(pretrain_s, 1),
        "query_accuracy": round(float((queries[0].argmax(1) == queries[1]).mean()), 4),
        "unseen_accuracy": round(float((held_out[0].argmax(1) == held_out[1]).mean()), 4),
        "map_query_class": round(both_ways(query_class_map, queries, held_out)[0], 6)}}
    common.write_results(name, rows, recipe_from=Path(args.recipe_from).name,
                         flip_averaged=args.flip_average, n_train=len(train[1]),
                         n_queries=len(queries[1]), n_unseen=len(held_out[1]), seeds=seeds,
                         best_temperature=best_temperature(rows))


if __name__ == "__main__":
    main()
