"""Accuracy per CPU-second of candidate CIFAR backbones: cnnh mAP after a fixed time budget.

Every candidate (backbone, width, precision) gets the same phase-1 wall-clock budget: a
probe epoch times it, and phase 1 then runs as many epochs as fit in the budget (with its
cosine schedule set for that count). Phase 2 (exponentiated loss, 12 and 48 bits as heads
on one backbone) runs the same number of epochs for all. The row reports mAP on the cnnh
queries, the phase-1 classifier's query accuracy, images/s and the actual wall times, so
candidates compare by what they reach in the same time, not in the same epoch count.

    TFHASH_DATA_DIR=../shared/datasets python benchmarks/backbones.py --budget 300 --only 0 1 2 3
"""

import argparse
import dataclasses
import time

import keras

from tfhash import data, model
from tfhash.evaluation import encode_heads, evaluate_codes
from tfhash.pipeline import make_dataset

from common import query_accuracy, write_results
from speed import timed_fit

CANDIDATES = [
    ("cifar_resnet", 32, "float32"),
    ("cifar_resnet", 32, "mixed_bfloat16"),
    ("cifar_resnet", 16, "mixed_bfloat16"),
    ("cifar_resnet", 48, "mixed_bfloat16"),
    ("cifar_resnet", 16, "float32"),
]


def probe_epoch_s(config, split, num_classes):
    """Seconds of one phase-1 epoch after a warm-up epoch (on a throwaway model)."""
    classifier = model.build_classifier(config.make_backbone(split.train.images.shape[1:]),
                                        num_classes)
    classifier.compile(optimizer="adamw", loss="sparse_categorical_crossentropy")
    train = make_dataset(split.train.images, split.train.labels, config.batch_size,
                         training=True, augment=config.augment, seed=config.seed)
    return timed_fit(classifier, train, config.steps(len(split.train), 1), epochs=1)


def run_candidate(args, split, num_classes, backbone, width, precision):
    base = model.TrainConfig(bits=(12, 48), backbone=backbone, backbone_width=width,
                             precision=precision, shared_heads=True, hash_epochs=args.hash_epochs,
                             augment="crop_flip_cutout", seed=args.seed)
    epoch_s = probe_epoch_s(base, split, num_classes)
    epochs = max(1, int(args.budget // epoch_s))
    config = dataclasses.replace(base, pretrain_epochs=epochs)
    keras.utils.set_random_seed(args.seed)
    net = config.make_backbone(split.train.images.shape[1:])
    start = time.perf_counter()
    classifier, _ = model.pretrain(net, split, num_classes, config, verbose=args.verbose)
    pretrain_s = time.perf_counter() - start
    accuracy = query_accuracy(classifier, split)
    start = time.perf_counter()
    hashers, _ = model.train_hashers(net, split, config.bits, config, num_classes,
                                     verbose=args.verbose)
    hash_s = time.perf_counter() - start
    q_codes = encode_heads(hashers, split.query.images)
    db_codes = encode_heads(hashers, split.database.images)
    row = {"backbone": backbone, "width": width, "precision": precision,
           "params": int(net.count_params()), "probe_epoch_s": round(epoch_s, 2),
           "pretrain_epochs": epochs,
           "train_images_per_s": round(len(split.train) / epoch_s, 1),
           "wall_s_pretrain": round(pretrain_s, 1), "wall_s_hash": round(hash_s, 1),
           "query_accuracy": accuracy}
    for bits in config.bits:
        row[f"map_{bits}"] = round(evaluate_codes(q_codes[bits], db_codes[bits], split)["map"], 4)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="phase-1 wall-clock seconds per candidate")
    parser.add_argument("--hash-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="+", default=None,
                        help="indices into CANDIDATES (default: all)")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    if args.budget <= 0 or args.hash_epochs < 1:
        parser.error("--budget must be > 0 and --hash-epochs >= 1")
    dataset = data.load_dataset("cifar10")
    split = data.make_split(dataset, "cnnh", seed=args.seed, val_fraction=0.0)
    chosen = CANDIDATES if args.only is None else [CANDIDATES[i] for i in args.only]
    rows = []
    for backbone, width, precision in chosen:
        rows.append(run_candidate(args, split, dataset.num_classes, backbone, width, precision))
        print(rows[-1], flush=True)
        write_results("backbones", rows, budget_s=args.budget, hash_epochs=args.hash_epochs,
                      seed=args.seed, images_per_class={"train": 500, "query": 100})
    best = max(rows, key=lambda r: r["map_12"])
    print(f"best at {args.budget:.0f}s: {best}")


if __name__ == "__main__":
    main()
