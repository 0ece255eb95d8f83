"""What the phase-1 classifier alone gives on the protocol: the reference the codes are held to.

For runs of `reproduce.py` (their cached weights under --work-dir and their results file),
loads each seed's last classifier (phase 1, or the last self-training round; an ensemble's
members averaged) and scores two rankings of the protocol's database for its queries, next
to the hashing rows of that run:

* ``map_class_codes``: every image coded by its predicted class alone (a one-hot code,
  Hamming ranking, ties expected): codes that only cluster by class.
* ``map_probabilities``: the database sorted by the dot product of softmax vectors: the
  classifier's own confidence order, which codes of a few bits can at best approach.
* ``map_query_class``: the database sorted, for each query, by its probability of the
  query's predicted class: the order asymmetric graded codes (`reproduce.py`'s
  ``graded-asymmetric``: database images between class codewords by how sure the classifier
  is, each query on its class's codeword) approach as their tiers of sureness grow finer.

Beside them stand the run's hashing rows of ``--method`` (plain codes). With
``--flip-average`` the classifier averages each image's probabilities with its mirror
image's (`tfhash.model.flip_averaged`) and the flip-averaged hashing rows stand beside it.

    python benchmarks/classifier_bound.py --runs mnist-cnnh-long-self cifar10-cnnh-w16-bf16-self3-p2
    python benchmarks/classifier_bound.py --append --flip-average --method graded-asymmetric \\
        --runs cifar10-cnnh-w24-p300-mixup-wd1-graded

With ``--append`` the results file keeps its rows of the runs not named, so one run can be
added (or redone) without recomputing the others.
"""

import argparse
import json
from pathlib import Path

import keras
import numpy as np

from tfhash import data, metrics, model

from common import (
    RESULTS,
    cache_files,
    load_results,
    round_stem,
    row_encoding,
    row_method,
    stored_config,
    write_results,
)

QUERY_BLOCK = 50


def probability_map(q_probs, q_labels, db_probs, db_labels):
    """mAP@all of ranking the database by the dot product of probability vectors (over the
    queries with a relevant database item, as `tfhash.metrics.mean_average_precision`)."""
    aps = []
    ranks = np.arange(1, len(db_labels) + 1)
    progress = keras.utils.Progbar(len(q_labels), unit_name="query")
    for start in range(0, len(q_labels), QUERY_BLOCK):
        scores = q_probs[start:start + QUERY_BLOCK] @ db_probs.T
        order = np.argsort(-scores, axis=1, kind="stable")
        relevant = db_labels[order] == q_labels[start:start + QUERY_BLOCK, None]
        hits = np.cumsum(relevant, axis=1)
        n_relevant = relevant.sum(axis=1)
        found = n_relevant > 0
        aps.append((relevant * hits / ranks).sum(axis=1)[found] / n_relevant[found])
        progress.add(len(relevant))
    return float(np.concatenate(aps).mean())


def class_codes(probs):
    """+-1 one-hot codes of the predicted class."""
    return np.where(np.eye(probs.shape[1], dtype=bool)[probs.argmax(axis=1)], 1, -1)


def hash_maps(doc, seed, method="exponentiated", encoding="plain"):
    """The pre-trained rows' mAP per bit length for one seed, ``method`` and ``encoding``."""
    return {f"map_hash_{r['bits']}": r["map"] for r in doc["rows"]
            if r["seed"] == seed and r["method"] == method and r["pretrain"]
            and row_encoding(r) == encoding}


def last_classifier_files(seed_dir, config):
    """The weights files of the last classifier one seed of a `reproduce.py` run cached in
    ``seed_dir`` (``config``: its results file's recipe): phase 1's, one per ensemble member,
    or after self-training the last round's student (member 0 alone trains on)."""
    if config.get("self_train"):
        return [cache_files(seed_dir, round_stem(config.get("self_train_rounds", 1)))[0]]
    return [cache_files(model.member_work_dir(seed_dir, k), round_stem(0))[0]
            for k in range(config.get("ensemble_size", 1))]


def cached_records(files, flag):
    """The records `cached_training` wrote beside the weights files ``files``, their paths;
    a missing weights file or record is refused, naming it and the option ``flag`` that
    asked for it."""
    records = [Path(w).with_name(Path(w).name.removesuffix(".weights.h5") + ".json")
               for w in files]
    for path in [*map(Path, files), *records]:
        if not path.exists():
            raise SystemExit(f"{flag}: no cached classifier file {path}")
    return records


def load_classifiers(files, config, input_shape, num_classes, flag):
    """Each weights file of ``files`` loaded into the classifier the recipe ``config`` (a
    results file's) builds for images of ``input_shape``, and the record `cached_training`
    wrote beside it (`cached_records` checks both are there). Returns
    ``(classifiers, records)``."""
    architecture = ("backbone", "backbone_width", "backbone_stem", "precision")  # older
    base = model.TrainConfig(bits=(12,), **{k: config[k] for k in architecture if k in config})
    classifiers, records = [], []
    for weights, record in zip(files, cached_records(files, flag)):
        classifiers.append(model.build_classifier(base.make_backbone(input_shape), num_classes))
        classifiers[-1].load_weights(weights)
        records.append(json.loads(record.read_text()))
    return classifiers, records


def mixed_in(work_dir, recipes, seed, input_shape, num_classes, flag):
    """The cached classifiers (and their records) that the runs of a mixed ensemble
    (`reproduce.py --ensemble-with`; ``recipes``: ``{run: its results file's recipe}``)
    add to its members on ``seed``: every member of each run, as `load_classifiers`
    returns them."""
    classifiers, records = [], []
    for run, config in recipes.items():
        more, more_records = load_classifiers(
            last_classifier_files(Path(work_dir) / run / f"seed{seed}", config), config,
            input_shape, num_classes, flag)
        classifiers += more
        records += more_records
    return classifiers, records


def last_classifiers(run, doc, work_dir):
    """For each seed of the `reproduce.py` run ``run`` (``doc``: its results file, read):
    ``(seed, split, members, stem)``, the seed's last cached classifier (phase 1, or the
    last self-training round; ``stem`` names its file) on that seed's split, as a list of
    one classifier, or of each ensemble member's (``ensemble_size`` > 1) followed, for a
    mixed ensemble, by those of the runs it mixes in (`mixed_in`)."""
    config = doc["config"]
    first = doc["rows"][0]
    dataset = data.load_dataset(first["dataset"])
    recipes = {other: stored_config(load_results(other, f"--runs: {run} mixes in"))
               for other in config.get("ensemble_with", ())}
    for seed in sorted({r["seed"] for r in doc["rows"]}):
        split = data.make_split(dataset, first["protocol"], seed=seed, val_fraction=0.0)
        files = last_classifier_files(Path(work_dir) / run / f"seed{seed}", config)
        members, _ = load_classifiers(files, config, split.train.images.shape[1:],
                                      dataset.num_classes, f"--runs: {run}")
        members += mixed_in(work_dir, recipes, seed, split.train.images.shape[1:],
                            dataset.num_classes, f"--runs: {run} mixes in")[0]
        yield seed, split, members, files[0].name.removesuffix(".weights.h5")


def check_method_rows(parser, run, doc, method):
    """Stops ``parser`` with one line unless the run ``run`` (``doc``: its results file,
    read) holds pre-trained rows of ``method``."""
    if not any(r["method"] == method and r["pretrain"] for r in doc["rows"]):
        parser.error(f"--method: {run} has no pre-trained rows of {method}")


def bound_rows(run, doc, work_dir, method="exponentiated", encoding="plain"):
    """One row per seed of ``run`` (``doc``: its results file, read): its classifier's
    bounds (``encoding`` "flip-averaged": of the flip-averaged classifier) beside the run's
    hashing rows of ``method`` and ``encoding``."""
    rows = []
    for seed, split, members, stem in last_classifiers(run, doc, work_dir):
        classifier = model.average_classifiers(members)
        if encoding == "flip-averaged":
            classifier = model.flip_averaged(classifier)
        q_probs = classifier.predict(split.query.images, batch_size=256, verbose=0)
        db_probs = classifier.predict(split.database.images, batch_size=256, verbose=0)
        q_labels, db_labels = split.query.labels, split.database.labels
        rows.append({
            "run": run, "seed": seed,
            "classifier": stem if len(members) == 1 else f"{stem}, {len(members)} members",
            "query_accuracy": float((q_probs.argmax(axis=1) == q_labels).mean()),
            "database_accuracy": float((db_probs.argmax(axis=1) == db_labels).mean()),
            "map_class_codes": round(metrics.mean_average_precision(
                class_codes(q_probs), q_labels, class_codes(db_probs), db_labels), 6),
            "map_probabilities": round(probability_map(q_probs, q_labels, db_probs,
                                                       db_labels), 6),
            # a one-hot query scores each database image by its probability of that class
            "map_query_class": round(probability_map(np.eye(q_probs.shape[1])[
                q_probs.argmax(axis=1)], q_labels, db_probs, db_labels), 6),
            "encoding": encoding, "method": method, **hash_maps(doc, seed, method, encoding),
        })
        print(rows[-1], flush=True)
    return rows


def kept_rows(path, runs, method=None, encoding=None):
    """The rows of ``path`` (a results file of rows per run) that belong to none of ``runs``;
    with ``method``, also the rows of ``runs`` for other methods (see `row_method`), and
    with ``encoding``, for other encodings (a row without one is of plain codes)."""
    if not path.exists():
        return []
    return [row for row in json.loads(path.read_text())["rows"]
            if row["run"] not in runs
            or (method is not None and row_method(row) != method)
            or (encoding is not None and row_encoding(row) != encoding)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="results names of reproduce.py runs, e.g. mnist-cnnh-long-self")
    parser.add_argument("--work-dir", default="runs/reproduce")
    parser.add_argument("--method", default="exponentiated",
                        help="the run's hashing rows to put beside the bounds (default: "
                             "exponentiated; graded runs: graded-asymmetric, ...)")
    parser.add_argument("--flip-average", action="store_true",
                        help="bounds of the flip-averaged classifier, beside the run's "
                             "flip-averaged hashing rows")
    parser.add_argument("--append", action="store_true",
                        help="keep the results file's rows but those of the runs named here "
                             "for this --method and encoding")
    args = parser.parse_args()
    docs = {run: load_results(run, "--runs") for run in args.runs}
    for run, doc in docs.items():
        check_method_rows(parser, run, doc, args.method)
    encoding = "flip-averaged" if args.flip_average else "plain"
    rows = (kept_rows(RESULTS / "classifier_bound.json", args.runs, args.method, encoding)
            if args.append else [])
    for run, doc in docs.items():
        rows.extend(bound_rows(run, doc, args.work_dir, args.method, encoding))
        write_results("classifier_bound", rows)


if __name__ == "__main__":
    main()
