"""Phase-2 loss settings compared on a validation split only, for choosing a recipe honestly.

Takes the recipe of a results file (``--recipe-from``), holds out 10% of the cnnh training
images as validation queries (the other 90% are their database), trains phase 1 once on
the 90%, then phase 2 once per variant (all code lengths as heads on one backbone) and
scores each by validation mAP (``results/phase2_variants-<recipe>.json``). The protocol's
queries are never looked at, so the winner can then be run on them (``reproduce.py``)
without having been chosen on them. Caveat: the validation database is the training
images, whose codes get closer to their true classes the longer phase 2 fits them, so this
comparison favours variants that train longer more than the protocol (whose database is
mostly unseen images) will.

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

from common import RESULTS, cached_training, write_results

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
    # peers on the same validation split, for reference
    "peer_dsh": {"method": "dsh"},
    "peer_orthohash": {"method": "orthohash"},
}


def recipe_config(path, seed):
    """The TrainConfig a results file was made with, at ``seed``."""
    recipe = json.loads(Path(path).read_text())["config"]
    fields = {f.name for f in dataclasses.fields(model.TrainConfig)}
    return model.TrainConfig(**{**{k: v for k, v in recipe.items() if k in fields},
                                "seed": seed, "shared_heads": True})


def pretrained_backbone(split, config, num_classes, work_dir, verbose):
    """Phase 1 on the training part (cached in ``work_dir``); returns backbone, wall time."""
    backbone = config.make_backbone(split.train.images.shape[1:])

    def train():
        keras.utils.set_random_seed(config.seed)
        return model.pretrain(backbone, split, num_classes, config, verbose=verbose)[0], {}

    _, record = cached_training(work_dir / "pretrained.weights.h5", work_dir / "pretrained.json",
                                build=lambda: model.build_classifier(backbone, num_classes),
                                train=train)
    return backbone, record["wall_s"]


def earlier_rows(name, seed, rerun):
    """Rows of an earlier run of the same file and seed, except the variants run again."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    return [r for r in doc["rows"] if doc["seed"] == seed and r["variant"] not in rerun]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe-from", required=True, help="a reproduce.py results file")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work-dir", default="runs/phase2_variants")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    base = recipe_config(args.recipe_from, args.seed)
    dataset = data.load_dataset(args.dataset)
    cnnh = data.make_split(dataset, "cnnh", seed=args.seed, val_fraction=0.1)
    # validation queries against the rest of the training images; the protocol's queries
    # and database are not part of this split at all
    split = data.Split("cnnh-val", args.seed, cnnh.train, cnnh.val.take(slice(0, 0)),
                       cnnh.val, cnnh.train)
    work_dir = Path(args.work_dir) / f"{Path(args.recipe_from).stem}-seed{args.seed}"
    backbone, pretrain_s = pretrained_backbone(split, base, dataset.num_classes, work_dir,
                                               args.verbose)
    name = f"phase2_variants-{Path(args.recipe_from).stem}"
    rows = earlier_rows(name, args.seed, args.variants)
    for variant in args.variants:
        config = dataclasses.replace(base, **VARIANTS[variant])
        keras.utils.set_random_seed(config.seed)
        start = time.perf_counter()
        hashers, _ = model.train_hashers(model.copy_model(backbone), split, config.bits, config,
                                         dataset.num_classes, verbose=args.verbose)
        wall = time.perf_counter() - start
        q, db = encode_heads(hashers, split.query.images), encode_heads(hashers,
                                                                        split.database.images)
        scores = {f"val_map_{b}": round(metrics.mean_average_precision(
            q[b], split.query.labels, db[b], split.database.labels), 4) for b in config.bits}
        rows.append({"variant": variant, **VARIANTS[variant], **scores,
                     "val_map_mean": round(float(np.mean(list(scores.values()))), 4),
                     "wall_s_hash": round(wall, 1)})
        print(rows[-1], flush=True)
        ours = [r for r in rows if "method" not in r] or rows  # peers are for reference
        best = max(ours, key=lambda r: r["val_map_mean"])["variant"]
        write_results(name, rows, recipe_from=Path(args.recipe_from).name,
                      seed=args.seed, n_train=len(split.train), n_val_queries=len(split.query),
                      wall_s_pretrain=round(pretrain_s, 1), best_by_val_map_mean=best)


if __name__ == "__main__":
    main()
