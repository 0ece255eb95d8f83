"""Phase 1 of reproduce.py on an accelerator machine that has Keras but no TensorFlow.

``train`` trains the classifiers reproduce.py caches for one seed (phase 1, then any
self-training rounds) under Keras' JAX backend (or any other), and writes them in
reproduce.py's work directory layout (``<work-dir>/<dataset>-<protocol><tag>/seed<k>/``:
``pretrained``, ``self_trained``, ``self_trained_round<r>``, each ``.weights.h5`` + ``.json``).
reproduce.py, run with the same recipe, then loads them instead of training phase 1 and runs
phase 2 and the evaluation as usual. Each record names the machine and backend that trained it.

The recipe is reproduce.py's: the same split (``tfhash.data.make_split``), backbone
(``tfhash.backbones``), classifier and AdamW with cosine decay (``tfhash.networks``),
label-smoothed cross-entropy, self-training selection (``tfhash.self_training``) and seeds.
Only the augmentation is made differently, from Keras layers run on the accelerator inside the
training step instead of a tf.data pipeline, with the same effect: ``shift`` and ``crop_flip``
move each image by up to 2 and 4 whole pixels (reflected borders, `RandomShift`),
``crop_flip`` also mirrors half the images, and ``crop_flip_cutout`` then greys one square of
half the image side (`Cutout`).
Phase-1 batch mixing (``--mix``) is not offered here.

``pack`` makes a copy of a dataset that holds only the images some seeds train on (every other
image black, the labels all kept, so ``make_split`` draws the same split): an upload of about
a quarter of CIFAR-10's size for three seeds of supervised runs. Self-training needs the
database, so it refuses a packed copy.

    # here: what the accelerator machine needs
    python benchmarks/accelerated_phase1.py pack --dataset cifar10 --seeds 0 1 2 --out DIR
    # there (Keras, JAX):
    KERAS_BACKEND=jax TFHASH_DATA_DIR=DIR python benchmarks/accelerated_phase1.py train \\
        --dataset cifar10 --seed 0 --tag=-h200-w32 --backbone-width 32 --precision mixed_bfloat16 \\
        --augment crop_flip_cutout --pretrain-epochs 500
    # here again, with the same recipe: phase 1 loads, phase 2 trains
    TFHASH_DATA_DIR=../shared/datasets python benchmarks/reproduce.py --dataset cifar10 \\
        --seeds 0 --tag=-h200-w32 --backbone-width 32 --precision mixed_bfloat16 \\
        --augment crop_flip_cutout --pretrain-epochs 500 ...
"""

import argparse
import os
import platform
import sys
from pathlib import Path

import keras
import numpy as np

from tfhash import data
from tfhash.backbones import STEMS, get_backbone
from tfhash.io import atomic_path
from tfhash.networks import build_classifier, make_optimizer, precision_policy
from tfhash.self_training import select_confident, unlabelled_rows
from tfhash.whitening import adapt_whitening

from common import cache_files, cached_training, round_stem, run_name

AUGMENTS = ("none", "shift", "crop_flip", "crop_flip_cutout", "auto")
PACKED_KEY = "packed_for_seeds"


class RandomImageLayer(keras.layers.Layer):
    """Base of the augmentation layers: `transform` runs in training only, drawing its random
    numbers from the layer's own seed (a `keras.random.SeedGenerator`)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        return self.transform(images) if training else images

    def transform(self, images):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class RandomShift(RandomImageLayer):
    """Moves each image by a random whole number of pixels, up to ``max_shift`` each way.

    The tf.data pipeline's crop (`tfhash.pipeline.make_dataset`) as a Keras layer: pad by
    ``max_shift`` with reflected borders, then cut the image's size out at a random offset
    drawn per image. Made of padding and integer gathers only: Keras' `RandomTranslation`
    (interpolating resampler) made a training step over 100 times slower on an H200.
    Active in training only.

    >>> RandomShift(4, seed=0)(images, training=True).shape == images.shape
    True
    """

    def __init__(self, max_shift, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.max_shift = max_shift

    def transform(self, images):
        shape = keras.ops.shape(images)
        n, h, w, p = shape[0], shape[1], shape[2], self.max_shift
        padded = keras.ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        dy = keras.random.randint((n, 1), 0, 2 * p + 1, seed=self.generator)
        dx = keras.random.randint((n, 1), 0, 2 * p + 1, seed=self.generator)
        rows = dy + keras.ops.arange(h)[None, :]
        cols = dx + keras.ops.arange(w)[None, :]
        padded = keras.ops.take_along_axis(padded, rows[:, :, None, None], axis=1)
        return keras.ops.take_along_axis(padded, cols[:, None, :, None], axis=2)

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift}


class Cutout(RandomImageLayer):
    """Greys one random ``size`` x ``size`` square of each image (clipped at the borders).

    Active in training only, like Keras' random preprocessing layers; images are floats in
    [0, 255] and the square is set to 128.

    >>> Cutout(16, seed=0)(images, training=True).shape == images.shape
    True
    """

    def __init__(self, size, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.size = size

    def transform(self, images):
        shape = keras.ops.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        cy = keras.random.randint((n, 1, 1), 0, h, seed=self.generator)
        cx = keras.random.randint((n, 1, 1), 0, w, seed=self.generator)
        rows = keras.ops.arange(h)[None, :, None]
        cols = keras.ops.arange(w)[None, None, :]
        half = self.size // 2
        inside = (keras.ops.abs(rows - cy) <= half) & (keras.ops.abs(cols - cx) <= half)
        return keras.ops.where(inside[..., None], keras.ops.cast(128, images.dtype), images)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def make_augmenter(augment, image_shape, seed):
    """The training-time augmentation as a Keras model (float32 images in [0, 255])."""
    if augment == "auto":
        augment = "crop_flip" if image_shape[-1] == 3 else "shift"
    steps = []
    if augment != "none":
        steps.append(RandomShift(2 if augment == "shift" else 4, seed=seed))
    if augment in ("crop_flip", "crop_flip_cutout"):
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
    if augment == "crop_flip_cutout":
        steps.append(Cutout(image_shape[0] // 2, seed=seed + 2))
    return keras.Sequential([keras.Input(image_shape), *steps], name="augment")


def fit_classifier(backbone, images, labels, num_classes, args, seed, epochs):
    """Trains a new softmax layer on ``backbone`` (and the backbone) for ``epochs``; returns
    the classifier (`tfhash.networks.build_classifier`, what reproduce.py loads). A
    whitening stem not yet adapted is first adapted to ``images``, as `pretrain` does."""
    keras.utils.set_random_seed(seed)
    adapt_whitening(backbone, images)
    classifier = build_classifier(backbone, num_classes)
    inputs = keras.Input(images.shape[1:], name="images")
    augmenter = make_augmenter(args.augment, images.shape[1:], seed)
    trainer = keras.Model(inputs, classifier(augmenter(inputs)), name="trainer")
    steps = epochs * int(np.ceil(len(images) / args.batch_size))
    trainer.compile(optimizer=make_optimizer(args.pretrain_lr, steps, args.weight_decay),
                    loss=keras.losses.CategoricalCrossentropy(
                        label_smoothing=args.label_smoothing),
                    metrics=["accuracy"])
    targets = np.eye(num_classes, dtype="float32")[labels]
    trainer.fit(images.astype("float32"), targets, batch_size=args.batch_size, epochs=epochs,
                shuffle=True, verbose=args.verbose)
    return classifier


def machine_record():
    """What trained the classifier: the accelerator, the backend and their versions."""
    backend = keras.backend.backend()
    record = {"keras_backend": backend, "keras": keras.__version__,
              "host": platform.node(), "cpus": os.cpu_count()}
    if backend == "jax":
        import jax

        record.update(jax=jax.__version__, device=jax.devices()[0].device_kind)
    elif backend == "torch":
        import torch

        record.update(torch=torch.__version__, device=torch.cuda.get_device_name(0)
                      if torch.cuda.is_available() else platform.machine())
    else:
        record["device"] = platform.machine()
    return record


def train(args):
    dataset = data.load_dataset(args.dataset)
    packed = packed_seeds(args.dataset)
    if packed is not None:
        if args.seed not in packed:
            raise SystemExit(f"--seed: the data at {data.resolve_data_dir()} was packed for "
                             f"seeds {sorted(packed)}, not {args.seed}")
        if args.self_train:
            raise SystemExit("--self-train needs the database images; this data is packed "
                             "(training images only)")
    split = data.make_split(dataset, args.protocol, seed=args.seed, val_fraction=0.0)
    name = run_name(args.dataset, args.protocol, args.tag)
    seed_dir = Path(args.work_dir) / name / f"seed{args.seed}"
    kwargs = {} if args.backbone_width is None else {"width": args.backbone_width}
    if args.backbone_stem != "conv":
        kwargs["stem"] = args.backbone_stem
    keras.utils.set_random_seed(args.seed)
    with precision_policy(args.precision):
        backbone = get_backbone(None, split.train.images.shape[1:], **kwargs)
    where = machine_record()

    def cached(stem, train):  # reproduce.py's cache files; a rerun resumes after the last
        return cached_training(*cache_files(seed_dir, stem),
                               build=lambda: build_classifier(backbone, dataset.num_classes),
                               train=train)

    classifier, record = cached(round_stem(0), lambda: (fit_classifier(
        backbone, split.train.images, split.train.labels, dataset.num_classes, args,
        args.seed, args.pretrain_epochs), where))
    print(f"seed {args.seed}: phase 1 {record['wall_s']:.0f}s", flush=True)
    if not args.self_train:
        return
    unlabelled = split.database.take(unlabelled_rows(split))
    for round_no in range(1, args.self_train_rounds + 1):

        def train_student(teacher=classifier, round_no=round_no):
            probs = teacher.predict(unlabelled.images.astype("float32"), batch_size=1024,
                                    verbose=0)
            picked, labels = select_confident(probs, args.self_train, keep=args.self_train_keep)
            student = fit_classifier(
                backbone, np.concatenate([split.train.images, unlabelled.images[picked]]),
                np.concatenate([split.train.labels, labels]), dataset.num_classes, args,
                args.seed + round_no - 1, args.self_train_epochs)
            truth = unlabelled.labels[picked]  # only reported, never trained on
            keep = {} if args.self_train_keep == 1.0 else {"self_train_keep": args.self_train_keep}
            return student, {"n_pseudo": len(picked),
                             "pseudo_label_accuracy": float((truth == labels).mean()),
                             **keep, **where}

        classifier, record = cached(round_stem(round_no), train_student)
        print(f"seed {args.seed}: self-training round {round_no} {record['wall_s']:.0f}s on "
              f"{record['n_pseudo']} pseudo-labels ({record['pseudo_label_accuracy']:.4f} "
              "correct)", flush=True)


def packed_seeds(name):
    """The seeds a packed copy of dataset ``name`` serves, or ``None`` for a full dataset."""
    path = data.resolve_data_dir() / f"{name}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as archive:
        if PACKED_KEY not in archive.files:
            return None
        return set(archive[PACKED_KEY].tolist())


def pack(args):
    """Writes ``<out>/<dataset>.npz``: the dataset with every image no seed trains on black."""
    dataset = data.load_dataset(args.dataset)
    keep = set()
    for seed in args.seeds:
        split = data.make_split(dataset, args.protocol, seed=seed, val_fraction=0.0)
        keep.update(image.tobytes() for image in split.train.images)
    parts = {}
    for part, key in ((dataset.train, "train"), (dataset.test, "test")):
        wanted = np.array([image.tobytes() in keep for image in part.images])
        parts[f"x_{key}"] = np.where(wanted[:, None, None, None], part.images, 0).astype("uint8")
        parts[f"y_{key}"] = part.labels
    out = Path(args.out) / f"{args.dataset}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **parts, **{PACKED_KEY: np.array(args.seeds)})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): the training images of seeds "
          f"{args.seeds}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="copy a dataset keeping only training images")
    packer.add_argument("--dataset", required=True, choices=("mnist", "cifar10"))
    packer.add_argument("--protocol", default="cnnh", choices=("cnnh", "full"))
    packer.add_argument("--seeds", type=int, nargs="+", required=True)
    packer.add_argument("--out", required=True, help="folder of the packed <dataset>.npz")
    trainer = commands.add_parser("train", help="train one seed's phase-1 classifiers")
    trainer.add_argument("--dataset", required=True, choices=("mnist", "cifar10"))
    trainer.add_argument("--protocol", default="cnnh", choices=("cnnh", "full"))
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--tag", default="",
                         help="reproduce.py's --tag of the run, e.g. --tag=-h200-w32")
    trainer.add_argument("--work-dir", default="runs/reproduce")
    trainer.add_argument("--backbone-width", type=int, default=None)
    trainer.add_argument("--backbone-stem", default="conv", choices=STEMS,
                         help="reproduce.py's --backbone-stem (default conv)")
    trainer.add_argument("--precision", default="float32",
                         choices=("float32", "mixed_bfloat16"))
    trainer.add_argument("--augment", default="auto", choices=AUGMENTS)
    trainer.add_argument("--pretrain-epochs", type=int, default=40)
    trainer.add_argument("--pretrain-lr", type=float, default=2e-3)
    trainer.add_argument("--weight-decay", type=float, default=5e-4)
    trainer.add_argument("--label-smoothing", type=float, default=0.1)
    trainer.add_argument("--batch-size", type=int, default=128)
    trainer.add_argument("--self-train", type=int, default=0, metavar="N")
    trainer.add_argument("--self-train-epochs", type=int, default=20)
    trainer.add_argument("--self-train-rounds", type=int, default=1)
    trainer.add_argument("--self-train-keep", type=float, default=1.0, metavar="FRACTION")
    trainer.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "pack":
        return pack(args)
    for name in ("pretrain_epochs", "batch_size", "self_train_epochs", "self_train_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.self_train < 0:
        parser.error(f"--self-train must be >= 0, got {args.self_train}")
    if not 0 < args.self_train_keep <= 1:
        parser.error(f"--self-train-keep must be in (0, 1], got {args.self_train_keep}")
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
