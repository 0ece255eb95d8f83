"""Phase 2's own run-to-run spread: the recipe's phase 2 again, on a run's cached classifiers.

For runs of `reproduce.py`, loads each seed's last cached classifier (as
`classifier_bound.py` does) and trains that run's phase 2 (its recipe, with the loss of
``--method``, exponentiated by default; all code lengths as heads on one backbone)
``--repeats`` more times from it, scoring each on the protocol's queries beside the
results file's own figures for that method and seed. Two rows made from one classifier
that differ by less than this spread differ by noise; rerunning a peer's loss as well
tells whether a gap between two losses is larger than both their spreads.

    python benchmarks/phase2_spread.py --runs mnist-cnnh-long-selfall2-keep98-hmix --repeats 2
    python benchmarks/phase2_spread.py --runs cifar10-cnnh-w16-bf16-p300-h80-mixup \
        --method dsh --repeats 1 --append

With ``--append`` the results file keeps its rows of other runs and other methods (and
replaces those of the runs and method named); with ``--more`` it keeps every row and the new
reruns are numbered on from the ones it holds:

    python benchmarks/phase2_spread.py --runs cifar10-cnnh-w16-bf16-p300-h80-mixup \
        --method dsh --repeats 1 --more
"""

import argparse
import dataclasses
import json

import keras
from classifier_bound import check_method_rows, hash_maps, kept_rows, last_classifiers
from phase2_variants import recipe_config

from tfhash import metrics, model
from tfhash.backbones import ensemble
from tfhash.evaluation import encode_heads

from common import RESULTS, row_method, write_results


def rerun_maps(members, split, config):
    """Phase 2 of ``config`` trained once from the classifier ``members`` (averaged): its
    mAP on the protocol's queries per code length, as ``{"map_<bits>": value}``."""
    keras.utils.set_random_seed(config.seed)  # as reproduce.py: the same seed every time
    backbone = ensemble([classifier.layers[1] for classifier in members])
    hashers, _ = model.train_hashers(model.copy_model(backbone), split, config.bits, config,
                                     int(members[0].output_shape[-1]), verbose=0)
    q_codes = encode_heads(hashers, split.query.images)
    db_codes = encode_heads(hashers, split.database.images)
    return {f"map_{bits}": round(metrics.mean_average_precision(
        q_codes[bits], split.query.labels, db_codes[bits], split.database.labels), 6)
        for bits in config.bits}


def reruns_held(rows, run, method):
    """``{seed: reruns}``: how many reruns ``rows`` hold per seed of ``run`` and ``method``
    (the highest "rerun N"; 0 where only the results file's row is there).

    >>> reruns_held([{"run": "r", "seed": 0, "phase2": "results file"},
    ...              {"run": "r", "seed": 0, "phase2": "rerun 2"}], "r", "exponentiated")
    {0: 2}
    """
    held = {}
    for row in rows:
        if row["run"] == run and row_method(row) == method:
            label = row["phase2"]
            count = int(label.split()[1]) if label.startswith("rerun ") else 0
            held[row["seed"]] = max(held.get(row["seed"], 0), count)
    return held


def spread_rows(run, work_dir, repeats, method="exponentiated", held=None):
    """The results file's row and ``repeats`` reruns per seed of ``run``; a seed in ``held``
    (``{seed: reruns}``, see `reruns_held`) gets only reruns, numbered on from those."""
    held = held or {}
    path = RESULTS / f"{run}.json"
    doc = json.loads(path.read_text())
    recipe = dataclasses.replace(recipe_config(path, 0), method=method)
    rows = []
    for seed, split, members, stem in last_classifiers(run, doc, work_dir):
        config = dataclasses.replace(recipe, seed=seed)
        head = {"run": run, "method": method, "seed": seed, "classifier": stem}
        if seed not in held:
            rows.append({**head, "phase2": "results file",
                         **{f"map_{key[len('map_hash_'):]}": value
                            for key, value in hash_maps(doc, seed, method).items()}})
        first = held.get(seed, 0) + 1
        for repeat in range(first, first + repeats):
            rows.append({**head, "phase2": f"rerun {repeat}",
                         **rerun_maps(members, split, config)})
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="results names of reproduce.py runs, e.g. mnist-cnnh-long-selfall")
    parser.add_argument("--method", default="exponentiated", choices=tuple(model.METHODS),
                        help="the loss whose phase 2 is rerun (each run must hold its rows)")
    parser.add_argument("--repeats", type=int, default=2, help="phase-2 reruns per seed")
    parser.add_argument("--work-dir", default="runs/reproduce")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--append", action="store_true",
                      help="keep the results file's rows but those of the runs and "
                           "method named here")
    keep.add_argument("--more", action="store_true",
                      help="keep every row of the results file and add --repeats reruns "
                           "per seed after those it holds for the runs and method named")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be an integer >= 1, got {args.repeats}")
    for run in args.runs:
        path = RESULTS / f"{run}.json"
        if not path.exists():
            parser.error(f"--runs: no results file {path}")
        doc = json.loads(path.read_text())
        if doc["config"].get("pseudo_phase2"):
            parser.error(f"--runs: {run} trains phase 2 on pseudo-labelled images "
                         "(--pseudo-phase2), which this script does not redo")
        check_method_rows(parser, run, doc, args.method)
    path = RESULTS / "phase2_spread.json"
    if args.more:
        rows = kept_rows(path, [])
    elif args.append:
        rows = kept_rows(path, args.runs, args.method)
    else:
        rows = []
    for run in args.runs:
        held = reruns_held(rows, run, args.method) if args.more else {}
        rows.extend(spread_rows(run, args.work_dir, args.repeats, args.method, held))
        write_results("phase2_spread", rows)


if __name__ == "__main__":
    main()
