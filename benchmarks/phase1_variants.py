"""Phase-1 recipes compared on a validation split only: classifier accuracy per variant.

Takes the recipe of a results file (``--recipe-from``), holds out 10% of the cnnh training
images of one seed as validation images (``phase2_variants.validation_split``), trains phase
1 once per variant on the other 90% and scores each classifier by its accuracy on the held
out images (``results/phase1_variants-<recipe><tag>.json``; a later run of other variants
adds its rows to the file's when the seed, epochs and precision are the same). On CIFAR-10
the hashing mAP follows the classifier's accuracy closely (``classifier_bound``), so this is
the cheap test of a phase-1 lever; the protocol's queries are never looked at.
``--pretrain-epochs`` and ``--precision`` override the recipe's, so a lever can be probed at
a schedule the machine affords (a lever that needs a long schedule may lose at a short one:
read the epochs). Caveat: 500 validation images give an accuracy a standard error of about 0.02.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/phase1_variants.py \\
        --recipe-from benchmarks/results/cifar10-cnnh-w16-bf16-p300-h40-mixup.json \\
        --pretrain-epochs 60 --precision float32
"""

import dataclasses
import time
from pathlib import Path

import keras
from phase2_variants import earlier_rows, recipe_config, validation_split, variants_parser

from tfhash import data, model
from tfhash.cli import positive_int

from common import query_accuracy, write_results

# Overrides of the recipe's phase 1.
VARIANTS = {
    "recipe": {},
    "no_mix": {"mix": "none"},
    "randaugment": {"augment": "randaugment"},
    "randaugment_no_mix": {"augment": "randaugment", "mix": "none"},
    "randaugment_0.1_no_mix": {"augment": "randaugment", "augment_strength": 0.1, "mix": "none"},
    "randaugment_0.03_no_mix": {"augment": "randaugment", "augment_strength": 0.03,
                                "mix": "none"},
    "mild_randaugment_no_mix": {"augment": "mild_randaugment", "mix": "none"},
    "mild_randaugment_0.2_no_mix": {"augment": "mild_randaugment", "augment_strength": 0.2,
                                    "mix": "none"},
    "sam_0.05_no_mix": {"sam_radius": 0.05, "mix": "none"},
    "whitening": {"backbone_stem": "whitening"},
    "whitening_no_mix": {"backbone_stem": "whitening", "mix": "none"},
    "weight_decay_0.1": {"weight_decay": 0.1},
    "weight_decay_0.5": {"weight_decay": 0.5},
    "weight_decay_1": {"weight_decay": 1.0},
    "weight_decay_2": {"weight_decay": 2.0},
    # does a wider network pay once decay regularizes it (width 16 was picked at the
    # default decay, at a fixed time budget)?
    "width_24_weight_decay_1": {"backbone_width": 24, "weight_decay": 1.0},
    "width_32_weight_decay_1": {"backbone_width": 32, "weight_decay": 1.0},
}


def main():
    parser = variants_parser(__doc__.splitlines()[0], VARIANTS)
    parser.add_argument("--pretrain-epochs", type=positive_int, default=None,
                        help="phase-1 epochs of every variant (default: the recipe's)")
    parser.add_argument("--precision", default=None,
                        choices=("auto", "float32", "mixed_bfloat16"),
                        help="the backbone's precision (default: the recipe's)")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("pretrain_epochs", args.pretrain_epochs),
                                   ("precision", args.precision)) if v is not None}
    base = recipe_config(args.recipe_from, args.seed, **overrides)
    # every variant's config first, so a refused one fails before any training
    configs = {v: dataclasses.replace(base, **VARIANTS[v]) for v in args.variants}
    dataset = data.load_dataset(args.dataset)
    split, _ = validation_split(dataset, args.seed)
    name = f"phase1_variants-{Path(args.recipe_from).stem}{args.tag}"
    # an earlier run's rows of other variants, if trained on the same split for as long
    rows = [r for r in earlier_rows(name, args.seed, 0, args.variants)
            if (r["pretrain_epochs"], r["precision"]) == (base.pretrain_epochs, base.precision)]
    for variant, config in configs.items():
        keras.utils.set_random_seed(config.seed)
        backbone = config.make_backbone(split.train.images.shape[1:])
        start = time.perf_counter()
        classifier, _ = model.pretrain(backbone, split, dataset.num_classes, config,
                                       verbose=args.verbose)
        wall = time.perf_counter() - start
        rows.append({"variant": variant, **VARIANTS[variant],
                     "val_accuracy": round(query_accuracy(classifier, split), 4),
                     "pretrain_epochs": config.pretrain_epochs,
                     "precision": config.precision, "wall_s_pretrain": round(wall, 1)})
        print(rows[-1], flush=True)
        write_results(name, rows, recipe_from=Path(args.recipe_from).name, seed=args.seed,
                      n_train=len(split.train), n_val=len(split.query),
                      best_by_val_accuracy=max(rows, key=lambda r: r["val_accuracy"])["variant"])


if __name__ == "__main__":
    main()
