"""Phase-2 loss settings compared on a validation split only, for choosing a recipe honestly.

Takes the recipe of a results file (``--recipe-from``), holds out 10% of the cnnh training
images as validation queries (the other 90% are their database), trains phase 1 once on
the 90%, then phase 2 once per variant (all code lengths as heads on one backbone) and
scores each by validation mAP (``results/phase2_variants-<recipe>.json``). The protocol's
queries are never looked at, so the winner can then be run on them (``reproduce.py``)
without having been chosen on them. Caveat: the validation database is the training
images, whose codes get closer to their true classes the longer phase 2 fits them, so this
comparison favours variants that train longer more than the protocol (whose database is
mostly unseen images) will. ``--unseen-database F`` holds out a further share F of the
training images, seen by neither phase, and also scores the queries against them
(``unseen_map_<bits>``), a database like the protocol's, small as it is.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/phase2_variants.py \\
        --recipe-from benchmarks/results/cifar10-cnnh-w16-bf16.json --dataset cifar10
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np

from tfhash import data, metrics, model
from tfhash.evaluation import encode_heads

from common import RESULTS, cache_files, cached_training, round_stem, write_results

# Overrides of the recipe's phase-2 loss. The exponentiated loss's margin for dissimilar
# pairs decides how far apart codes of different classes are pushed (1: opposite codes,
# which ten classes cannot all be; 0: orthogonal), the temperature how strongly the hardest
# pairs dominate the gradient.
VARIANTS = {
    "recipe": {},
    "negative_margin_0.5": {"negative_margin": 0.5},
    "negative_margin_0": {"negative_margin": 0.0},
    "temperature_1": {"temperature": 1.0},
    "temperature_1_negative_margin_0.5": {"temperature": 1.0, "negative_margin": 0.5},
    "tuned_48_bits": {"margin": 0.64, "negative_margin": 0.62, "temperature": 1.41},
    "quantization_0.1": {"quantization": 0.1},
    "classification_weight_3": {"classification_weight": 3.0},
    "hash_epochs_20": {"hash_epochs": 20},
    "hash_epochs_40": {"hash_epochs": 40},
    "temperature_0.25": {"temperature": 0.25},
    "hash_mix_mixup": {"hash_mix": "mixup"},
    "hash_mix_mixup_temperature_0.25": {"hash_mix": "mixup", "temperature": 0.25},
    # Towards DSH's shape: as T grows, exp(-a / T) tends to 1 - a / T, linear in the
    # affinity as DSH's contrastive terms are, and a negative margin of 0 releases
    # dissimilar pairs at orthogonal codes as DSH's margin does. The hashing gradients then
    # shrink as 1 / T against the classification term's; the last variant scales that term
    # down by as much.
    "temperature_2_negative_margin_0": {"temperature": 2.0, "negative_margin": 0.0},
    "temperature_4_negative_margin_0": {"temperature": 4.0, "negative_margin": 0.0},
    "temperature_4_negative_margin_0_classification_weight_0.25": {
        "temperature": 4.0, "negative_margin": 0.0, "classification_weight": 0.25},
    # The classifier on the codes as a cosine softmax against fixed far-apart class
    # codewords (TrainConfig.classification_head), plain and arranged by the phase-1
    # classifier's confusions, and with the DSH-shaped pair term above.
    "codebook_head": {"classification_head": "codebook"},
    "arranged_codebook_head": {"classification_head": "arranged-codebook"},
    "codebook_head_temperature_4_negative_margin_0_classification_weight_0.25": {
        "classification_head": "codebook", "temperature": 4.0, "negative_margin": 0.0,
        "classification_weight": 0.25},
    "arranged_codebook_head_temperature_4_negative_margin_0_classification_weight_0.25": {
        "classification_head": "arranged-codebook", "temperature": 4.0,
        "negative_margin": 0.0, "classification_weight": 0.25},
    # peers on the same validation split, for reference
    "peer_dsh": {"method": "dsh"},
    "peer_orthohash": {"method": "orthohash"},
    "peer_orthohash_greedy": {"method": "orthohash-greedy"},
}


VAL_FRACTION = 0.1  # share of the cnnh training images that become validation queries


def validation_split(dataset, seed, unseen_fraction=0.0):
    """The cnnh training images of ``seed`` as a retrieval split of their own, and the
    images held out as an unseen database.

    ``VAL_FRACTION`` of them are the queries, a share ``unseen_fraction`` the unseen
    database, the rest train both phases and are the queries' (seen) database. The
    protocol's queries and database are not part of it at all.

    Returns:
        ``(split, unseen)``: a `data.Split` (no ``val`` part) and an `data.Images`.
    """
    cnnh = data.make_split(dataset, "cnnh", seed=seed,
                           val_fraction=VAL_FRACTION + unseen_fraction)
    n_queries = round(VAL_FRACTION * (len(cnnh.train) + len(cnnh.val)))
    split = data.Split("cnnh-val", seed, cnnh.train, cnnh.val.take(slice(0, 0)),
                       cnnh.val.take(slice(0, n_queries)), cnnh.train)
    return split, cnnh.val.take(slice(n_queries, None))


def recipe_config(path, seed, **overrides):
    """The TrainConfig a results file was made with, at ``seed``, with ``overrides``."""
    recipe = json.loads(Path(path).read_text())["config"]
    fields = {f.name for f in dataclasses.fields(model.TrainConfig)}
    return model.TrainConfig(**{**{k: v for k, v in recipe.items() if k in fields},
                                "seed": seed, "shared_heads": True, **overrides})


def pretrained_backbone(split, config, num_classes, work_dir, verbose):
    """Phase 1 on the training part (cached in ``work_dir``); returns the backbone, its
    classifier and the wall time."""
    backbone = config.make_backbone(split.train.images.shape[1:])

    def train():
        keras.utils.set_random_seed(config.seed)
        return model.pretrain(backbone, split, num_classes, config, verbose=verbose)[0], {}

    classifier, record = cached_training(
        *cache_files(work_dir, round_stem(0)),
        build=lambda: model.build_classifier(backbone, num_classes), train=train)
    return backbone, classifier, record["wall_s"]


def validation_scores(kind, query_codes, query_labels, hashers, database):
    """``<kind>_map_<bits>`` of the queries' codes against ``database``, and their mean."""
    db = encode_heads(hashers, database.images)
    scores = {f"{kind}_map_{b}": round(metrics.mean_average_precision(
        query_codes[b], query_labels, db[b], database.labels), 4) for b in query_codes}
    return {**scores, f"{kind}_map_mean": round(float(np.mean(list(scores.values()))), 4)}


def earlier_rows(name, seed, n_unseen, rerun):
    """Rows of an earlier run of the same file, seed and unseen database size, except the
    variants run again (rows of another split would not be comparable)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    same_split = doc["seed"] == seed and doc.get("n_unseen_database", 0) == n_unseen
    return [r for r in doc["rows"] if same_split and r["variant"] not in rerun]


def unseen_share(text):
    """argparse type of ``--unseen-database``: a share in [0, 0.8]."""
    value = float(text)
    if not 0 <= value <= 0.8:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 0.8], got {text}")
    return value


def variants_parser(description, variants):
    """The arguments of a study of ``variants`` of a recipe on one seed's validation split:
    ``--recipe-from``, ``--dataset``, ``--seed``, ``--variants`` and ``--verbose``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--recipe-from", required=True, help="a reproduce.py results file")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(variants), choices=list(variants))
    parser.add_argument("--verbose", type=int, default=2)
    return parser


def main():
    parser = variants_parser(__doc__.splitlines()[0], VARIANTS)
    parser.add_argument("--work-dir", default="runs/phase2_variants")
    parser.add_argument("--tag", default="",
                        help="suffix of the results file, to keep a study apart from others "
                             "on the same recipe (the file holds one seed)")
    parser.add_argument("--unseen-database", type=unseen_share, default=0.0, metavar="F",
                        help="share of the training images held out as a database unseen "
                             "by both phases (default: none)")
    args = parser.parse_args()
    base = recipe_config(args.recipe_from, args.seed)
    # every variant's config first, so a refused one fails before phase 1 is trained
    configs = {v: dataclasses.replace(base, **VARIANTS[v]) for v in args.variants}
    dataset = data.load_dataset(args.dataset)
    split, unseen = validation_split(dataset, args.seed, args.unseen_database)
    work_dir = Path(args.work_dir) / (f"{Path(args.recipe_from).stem}-seed{args.seed}"
                                      + (f"-unseen{args.unseen_database:g}"
                                         if args.unseen_database else ""))
    backbone, classifier, pretrain_s = pretrained_backbone(split, base, dataset.num_classes,
                                                           work_dir, args.verbose)
    arranged = any(c.classification_head == "arranged-codebook" for c in configs.values())
    similarity = model.training_similarity(classifier, split.train) if arranged else None
    name = f"phase2_variants-{Path(args.recipe_from).stem}{args.tag}"
    rows = earlier_rows(name, args.seed, len(unseen), args.variants)
    for variant, config in configs.items():
        keras.utils.set_random_seed(config.seed)
        start = time.perf_counter()
        hashers, _ = model.train_hashers(model.copy_model(backbone), split, config.bits, config,
                                         dataset.num_classes, verbose=args.verbose,
                                         similarity=similarity)
        wall = time.perf_counter() - start
        q = encode_heads(hashers, split.query.images)
        scores = validation_scores("val", q, split.query.labels, hashers, split.database)
        if len(unseen):
            scores.update(validation_scores("unseen", q, split.query.labels, hashers, unseen))
        rows.append({"variant": variant, **VARIANTS[variant], **scores,
                     "wall_s_hash": round(wall, 1)})
        print(rows[-1], flush=True)
        ours = [r for r in rows if "method" not in r] or rows  # peers are for reference
        best = {f"best_by_{kind}_map_mean": max(ours, key=lambda r: r[f"{kind}_map_mean"])[
            "variant"] for kind in ("val", "unseen") if f"{kind}_map_mean" in rows[-1]}
        write_results(name, rows, recipe_from=Path(args.recipe_from).name,
                      seed=args.seed, n_train=len(split.train), n_val_queries=len(split.query),
                      n_unseen_database=len(unseen), wall_s_pretrain=round(pretrain_s, 1),
                      **best)


if __name__ == "__main__":
    main()
