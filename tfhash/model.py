"""Model assembly and the two-phase training scheme, both phases through `model.fit`.

Phase 1 (classification pre-training) trains backbone + softmax classifier on the labels.
Phase 2 (hash learning) puts a `HashingHead` on the pre-trained backbone and trains with the
exponentiated hashing loss. ``pretrain=False`` skips phase 1 (the ablation).

Example:

>>> from tfhash import data, model
>>> split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0)
>>> config = model.TrainConfig(bits=(12, 32), pretrain_epochs=8, hash_epochs=6)
>>> result = model.fit_two_phase(split, config)
>>> codes = model.encode(result.hashers[12], split.query.images)
"""

import dataclasses
import functools
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfhash import hardware
from tfhash.backbones import BACKBONES, STEMS, ensemble, get_backbone
from tfhash.callbacks import RetrievalMAP, WeightAveraging
from tfhash.codebooks import (
    CODEBOOKS,
    arrange_codebook,
    class_centres,
    class_codebook,
    class_similarity,
)
from tfhash.codes import binarize, check_bits
from tfhash.data import Split, class_count
from tfhash.distribute import writable_dir
from tfhash.errors import check, check_int, check_non_negative, check_number, check_unit_interval
from tfhash.hardware import PRECISIONS  # noqa: F401 (public here too)
from tfhash.io import atomic_path, read_arrays, write_arrays
from tfhash.layers import HashingHead, HorizontalFlip, Shift
from tfhash.losses import (
    ContrastiveHashingLoss,
    ExactHashingLoss,
    ExponentiatedHashingLoss,
    OrthoHashLoss,
    PairwiseLikelihoodLoss,
)
from tfhash.networks import (  # noqa: F401 (the builders are public here too)
    average_classifiers,
    build_classifier,
    build_graded_hasher,
    build_graded_hashers,
    build_hasher,
    build_query_hasher,
    build_query_hashers,
    make_optimizer,
    precision_policy,
)
from tfhash.pipeline import (
    AUGMENTATIONS,
    MIXES,
    RANDAUGMENT_STRENGTH,
    STRENGTH_AUGMENTATIONS,
    make_dataset,
    mix_batches,
)
from tfhash.sharpness import SharpnessAware
from tfhash.whitening import adapt_whitening

METHODS = {
    "exponentiated": ExponentiatedHashingLoss,
    "dpsh": PairwiseLikelihoodLoss,
    "dsh": ContrastiveHashingLoss,
    "orthohash": OrthoHashLoss,
    "orthohash-greedy": functools.partial(OrthoHashLoss, codebook="greedy"),
}

CLASSIFICATION_HEADS = ("dense", "codebook", "arranged-codebook")
MEMBER_SEED_STRIDE = 1000  # ensemble member k trains with seed + 1000 k
PRETRAINED_WEIGHTS = "pretrained.weights.h5"  # phase 1's weights, in a member's work folder


def as_float32(model):
    """A float32 copy of ``model`` (e.g. trained in mixed precision), for inference and export.

    >>> encoder = as_float32(result.hashers[12])  # every layer computes in float32
    """
    def rebuild(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    with precision_policy("float32"):
        copy = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a two-phase training run.

    Attributes:
        bits: one code length or several; phase 1 is shared by all of them.
        backbone: backbone name (see `get_backbone`), ``None`` for the default.
        backbone_width: base width of the built-in backbones (``None``: builder default).
        backbone_stem: first layer of the built-in backbones: ``"conv"`` or
            ``"whitening"`` (a `tfhash.whitening.PatchWhitening` that training adapts to
            its training images before the first step; see `backbones.stem_layers`).
        pretrain: run phase 1; ``False`` is the no-pre-training ablation.
        pretrain_epochs, hash_epochs: epochs of each phase.
        batch_size: batch size of both phases (phase 2 compares all pairs in a batch).
        pretrain_lr, hash_lr: peak learning rates (Adam with cosine decay).
        weight_decay: decoupled weight decay of both phases.
        ema_momentum: ``None``, or the momentum of a moving average of the weights kept in
            both phases (`tfhash.callbacks.WeightAveraging`); each phase ends with it.
        soup_size: how many times phase 2 is trained from the same starting weights (the
            same pre-trained backbone and head initialization, each run with its own batch
            order, augmentation and mixing: seeds ``seed``, ``seed + 1``, ...); the hashers
            get the mean of the runs' weights, a uniform model soup. 1: a single run. With
            a ``work_dir``, each finished run's weights are kept there until the soup is
            made, so an interrupted soup resumes with the run it stopped in.
        ensemble_size: how many backbones phase 2 hashes from (`tfhash.backbones.ensemble`:
            their features concatenated under each head). Phase 1 pre-trains each member
            on its own, with its own classifier, weights and batch order (member ``k``
            seeded ``seed + 1000 * k``, so member 0 is the single-backbone run), and with a
            ``work_dir`` keeps member ``k``'s classifier in ``member<k>/`` (member 0's in
            ``work_dir`` itself). 1: one backbone.
        label_smoothing: label smoothing of the phase-1 cross-entropy.
        sam_radius: ``None``, or train phase 1 with sharpness-aware steps
            (`tfhash.sharpness.SharpnessAware`) of this radius, a number > 0 (0.05 is the
            SAM paper's for CIFAR-10); each step then costs two forward and backward passes.
        margin, negative_margin, temperature, quantization: the exponentiated loss (see
            `ExponentiatedHashingLoss`).
        classification_weight: weight of a softmax classifier on the relaxed codes kept
            during phase 2 (0: the paper's pure hashing phase).
        classification_head: that classifier: ``"dense"`` (a learned softmax layer on the
            codes) or ``"codebook"`` (a cosine softmax against fixed class codewords chosen
            as far apart as `tfhash.codebooks.class_codebook` finds, `OrthoHashLoss` with
            ``codebook="greedy"``: it pulls each class's codes towards its own codeword, so
            the classes spread over the whole code space), or ``"arranged-codebook"`` (the
            same codewords, the nearer ones given to the classes the phase-1 classifier
            mixes up on the training images, `tfhash.codebooks.arrange_codebook`, as graded
            codes arrange theirs: `train_hashers` then needs their ``similarity``, which
            `fit_two_phase` computes).
        method: the phase-2 loss: ``"exponentiated"`` (the paper's) or a peer for
            comparison, ``"dpsh"``, ``"dsh"`` or ``"orthohash"`` (its codewords random, as
            published), or ``"orthohash-greedy"`` (OrthoHash with the far-apart codewords of
            the ``"codebook"`` classification head: that head's term on its own, an ablation).
        shared_heads: train all code lengths at once, as heads on one backbone, in one
            phase-2 run (otherwise each length fine-tunes its own copy of the backbone).
        augment: ``"auto"``, ``"crop_flip"``, ``"crop_flip_cutout"``, ``"randaugment"``,
            ``"mild_randaugment"``, ``"shift"``, ``"affine"`` or ``"none"`` (both phases;
            see `tfhash.pipeline.make_dataset`).
        augment_strength: the strength in (0, 1] of ``augment="randaugment"`` (Keras's
            default 0.5 rotates by up to half a turn; 0.1 by up to 36 degrees, shifting by
            up to a tenth of the side; but a weaker strength makes solarization and
            posterization harsher, see `tfhash.pipeline.make_dataset`) or of
            ``"mild_randaugment"`` (0.5 rotates by up to 15 degrees, see
            `tfhash.pipeline.mild_operations`); the other augmentations leave it at 0.5.
        mix: ``"none"``, ``"cutmix"`` or ``"mixup"``: mixes images and labels across each
            phase-1 batch (see `tfhash.pipeline.mix_batches`).
        hash_mix: the same for phase 2: a pair of mixed images counts as similar in
            proportion to the overlap of their mixed labels (the pair losses'
            ``label_mode="soft"``), so the codes learn to place an image between classes
            when it looks like both.
        precision: ``"float32"`` or ``"mixed_bfloat16"``: the backbone computes in bfloat16
            with float32 weights (faster where the hardware has bfloat16: GPUs of compute
            capability 8.0+, CPUs with AVX512-BF16, AMX or Arm BF16; elsewhere emulated and
            much slower, with a warning); heads and losses stay float32, and the returned
            hashers are float32 copies. ``"auto"`` becomes ``"mixed_bfloat16"`` where the
            hardware has bfloat16 and ``"float32"`` elsewhere (`tfhash.hardware`), and the
            config holds the precision it became.
        seed: seed of weights, shuffling and augmentation.

    Example (a named recipe, `RECIPES`, with one setting changed):

    >>> config = TrainConfig(bits=(12, 32), **{**RECIPES["cifar10-cnnh"], "hash_epochs": 40})
    >>> result = fit_two_phase(split, config)
    """

    bits: tuple = (12,)
    backbone: str | None = None
    backbone_width: int | None = None
    backbone_stem: str = "conv"
    pretrain: bool = True
    pretrain_epochs: int = 10
    hash_epochs: int = 10
    batch_size: int = 128
    pretrain_lr: float = 2e-3
    hash_lr: float = 1e-3
    weight_decay: float = 5e-4
    ema_momentum: float | None = None
    soup_size: int = 1
    ensemble_size: int = 1
    label_smoothing: float = 0.1
    sam_radius: float | None = None
    margin: float = 1.0
    negative_margin: float | None = None
    temperature: float = 0.5
    quantization: float = 0.0
    classification_weight: float = 0.0
    classification_head: str = "dense"
    method: str = "exponentiated"
    shared_heads: bool = False
    augment: str = "auto"
    augment_strength: float = RANDAUGMENT_STRENGTH
    mix: str = "none"
    hash_mix: str = "none"
    precision: str = "float32"
    seed: int = 0

    def __post_init__(self):
        bits = (self.bits,) if isinstance(self.bits, (int, np.integer)) else tuple(self.bits)
        check(bits, "`bits` must name at least one code length")
        self.bits = tuple(check_bits(b) for b in bits)
        for name in ("pretrain_epochs", "hash_epochs", "batch_size", "soup_size",
                     "ensemble_size", "seed"):
            low = 0 if name in ("pretrain_epochs", "seed") else 1
            setattr(self, name, check_int(getattr(self, name), name, low))
        self.backbone_width = check_int(self.backbone_width, "backbone_width", 1, optional=True)
        check(self.backbone_stem in STEMS,
              f"`backbone_stem` must be one of {STEMS}, got {self.backbone_stem!r}")
        check(self.backbone_stem == "conv" or self.backbone in (None, *BACKBONES),
              f"`backbone_stem` {self.backbone_stem!r} applies to the built-in backbones "
              f"{sorted(BACKBONES)} only, not to {self.backbone!r}")
        check(self.method in METHODS,
              f"`method` must be one of {tuple(METHODS)}, got {self.method!r}")
        check(self.augment in AUGMENTATIONS,
              f"`augment` must be one of {AUGMENTATIONS}, got {self.augment!r}")
        check_unit_interval(self.augment_strength, "augment_strength")
        check(self.augment in STRENGTH_AUGMENTATIONS
              or self.augment_strength == RANDAUGMENT_STRENGTH,
              f"`augment_strength` {self.augment_strength!r} needs `augment` 'randaugment' "
              f"or 'mild_randaugment' (the augmentations it sets), got {self.augment!r}")
        check(self.mix in MIXES, f"`mix` must be one of {MIXES}, got {self.mix!r}")
        check(self.hash_mix in MIXES,
              f"`hash_mix` must be one of {MIXES}, got {self.hash_mix!r}")
        check(self.classification_head in CLASSIFICATION_HEADS,
              f"`classification_head` must be one of {CLASSIFICATION_HEADS}, "
              f"got {self.classification_head!r}")
        self.precision = hardware.resolve_precision(self.precision)
        if self.precision == "mixed_bfloat16" and not hardware.native_bfloat16():
            warnings.warn("precision 'mixed_bfloat16': this machine has no native bfloat16 "
                          "(a GPU of compute capability 8.0+, or a CPU with AVX512-BF16, "
                          "AMX or Arm BF16), so it is emulated and trains many times slower "
                          "than 'float32'; use 'auto' to pick by hardware",
                          UserWarning, stacklevel=3)
        self.ema_momentum = check_number(self.ema_momentum, "ema_momentum", 0, 1, low_open=True,
                                         high_open=True, optional=True)
        self.sam_radius = check_number(self.sam_radius, "sam_radius", low=0, low_open=True,
                                       optional=True)
        for name in ("pretrain_lr", "hash_lr"):
            setattr(self, name, check_number(getattr(self, name), name, low=0, low_open=True))
        for name in ("weight_decay", "classification_weight"):
            setattr(self, name, check_non_negative(getattr(self, name), name))
        check(self.classification_head == "dense" or self.classification_weight > 0,
              f"`classification_head` {self.classification_head!r} needs a "
              f"`classification_weight` > 0, got {self.classification_weight!r}")
        check(self.classification_head != "arranged-codebook"
              or (self.pretrain and self.pretrain_epochs),
              "`classification_head` 'arranged-codebook' needs phase 1 (`pretrain` and "
              "`pretrain_epochs` > 0): its classifier's confusions arrange the codewords")
        self.label_smoothing = check_number(self.label_smoothing, "label_smoothing", 0, 1,
                                            high_open=True)
        # the loss refuses a bad margin, temperature or quantization now, not after phase 1
        ExponentiatedHashingLoss(margin=self.margin, negative_margin=self.negative_margin,
                                 temperature=self.temperature, quantization=self.quantization)

    def make_backbone(self, input_shape):
        """The backbone this config names, at its width and precision."""
        kwargs = {} if self.backbone_width is None else {"width": self.backbone_width}
        if self.backbone_stem != "conv":
            kwargs["stem"] = self.backbone_stem
        with precision_policy(self.precision):
            return get_backbone(self.backbone, input_shape, **kwargs)

    def member(self, k):
        """The config ensemble member ``k`` pre-trains with (its own seed)."""
        return dataclasses.replace(self, seed=self.seed + MEMBER_SEED_STRIDE * k)

    def hash_loss(self, num_classes=None, bits=None):
        """The phase-2 loss this config defines (``num_classes``, ``bits``: for orthohash)."""
        if self.method.startswith("orthohash"):  # takes class ids and probabilities alike
            return METHODS[self.method](num_classes, bits, seed=self.seed)
        if self.method == "exponentiated":
            return ExponentiatedHashingLoss(
                margin=self.margin, temperature=self.temperature, quantization=self.quantization,
                negative_margin=self.negative_margin, label_mode=self.hash_label_mode,
            )
        return METHODS[self.method](label_mode=self.hash_label_mode)

    def classification_term(self, codes, num_classes, bits, similarity=None):
        """The phase-2 classifier on ``codes`` (one head's output): ``(output, loss)``;
        ``similarity``: the classes' (`training_similarity`), for an arranged codebook."""
        name = f"classes_{bits}"
        if self.classification_head == "dense":
            output = keras.layers.Dense(num_classes, activation="softmax", name=name,
                                        dtype="float32")(codes)
            return output, (keras.losses.CategoricalCrossentropy()
                            if self.hash_label_mode == "soft"
                            else keras.losses.SparseCategoricalCrossentropy())
        codebook = "greedy"
        if self.classification_head == "arranged-codebook":
            codebook = arrange_codebook(class_codebook(num_classes, bits, seed=self.seed),
                                        similarity, seed=self.seed)
        # the loss holds the codewords; the output is the codes themselves
        return (keras.layers.Identity(name=name, dtype="float32")(codes),
                OrthoHashLoss(num_classes, bits, quantization=0.0, codebook=codebook,
                              seed=self.seed))

    @property
    def hash_label_mode(self):
        """How phase-2 losses read labels: class probabilities when batches are mixed."""
        return "auto" if self.hash_mix == "none" else "soft"

    def hash_metrics(self):
        """The phase-2 metrics: the exact (discrete) form of the loss."""
        return [ExactHashingLoss(self.margin, self.temperature, label_mode=self.hash_label_mode,
                                 negative_margin=self.negative_margin)]

    def steps(self, n_train, epochs):
        """Optimizer steps of ``epochs`` over ``n_train`` images."""
        return epochs * int(np.ceil(n_train / self.batch_size))


# A quick recipe for small grayscale sets such as mnist-5k (demo and tests). On the mnist-5k
# cnnh split with one shared phase 1, similar pairs pulled all the way (margin 1) and
# dissimilar ones released at orthogonal codes (negative margin 0) scored best of the
# variants tried (benchmarks/notes.md); a backbone of half the default width scored the same
# in about 0.6 of the time (benchmarks/demo_spread.py).
DEMO_RECIPE = {
    "backbone_width": 16,
    "pretrain_epochs": 15,
    "hash_epochs": 8,
    "margin": 1.0,
    "negative_margin": 0.0,
    "temperature": 0.5,
}

# The CIFAR-10 recipe for learned codes from 5,000 labelled images (the cnnh protocol): a
# width-16 backbone in bfloat16, 300 epochs of phase 1 on mixed batches, then 80 of phase 2
# for every length at once, with the pair term shaped as DSH's (temperature 4, negative
# margin 0) and a quarter-weight classification term on an arranged codebook. It scored
# highest of the heads and loss shapes tried on validation splits
# (benchmarks/phase2_variants.py) and is the run
# cifar10-cnnh-w16-bf16-p300-h80-mixup-on-t4nm0cw025-arranged-t4nm0cw025 in
# benchmarks/RESULTS.md; about half an hour a seed on 2 CPU cores with AVX512-BF16 (in
# bfloat16 there; "auto" trains in float32 where bfloat16 would be emulated).
CIFAR10_CNNH_RECIPE = {
    "backbone_width": 16,
    "precision": "auto",
    "pretrain_epochs": 300,
    "hash_epochs": 80,
    "augment": "crop_flip_cutout",
    "mix": "mixup",
    "margin": 1.0,
    "negative_margin": 0.0,
    "temperature": 4.0,
    "classification_weight": 0.25,
    "classification_head": "arranged-codebook",
    "shared_heads": True,
}

# Named starting points for `TrainConfig(**RECIPES[name])` (CLI `tfhash train --recipe`).
RECIPES = {"demo": DEMO_RECIPE, "cifar10-cnnh": CIFAR10_CNNH_RECIPE}


@dataclasses.dataclass
class TrainResult:
    """The trained models of a run, their histories and the wall time of each phase."""

    hashers: dict
    classifier: keras.Model | None
    histories: dict
    wall_s: dict


def copy_model(model):
    """A new model of the same architecture holding a copy of the weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def encode(model, images, batch_size=256, verbose="auto"):
    """Binary +-1 codes (int8) of ``images`` under a hashing model, with a progress bar."""
    relaxed = model.predict(np.asarray(images), batch_size=batch_size, verbose=verbose)
    return binarize(relaxed)


def encode_heads(hashers, images, batch_size=256, verbose=0):
    """Codes of every hasher in ``{bits: hasher}``: one forward pass when they are heads
    sharing one input (as `train_hashers` makes them), else one pass per hasher."""
    first = next(iter(hashers.values()))
    if any(hasher.inputs[0] is not first.inputs[0] for hasher in hashers.values()):
        return {bits: encode(hasher, images, batch_size, verbose)
                for bits, hasher in hashers.items()}
    joint = keras.Model(first.inputs, {str(b): h.outputs[0] for b, h in hashers.items()})
    relaxed = joint.predict(np.asarray(images), batch_size=batch_size, verbose=verbose)
    if not isinstance(relaxed, dict):  # a single head comes back as a plain array
        relaxed = {str(next(iter(hashers))): relaxed}
    return {b: binarize(relaxed[str(b)]) for b in hashers}


def flip_averaged(hashers):
    """Hashers that encode each image together with its mirror image.

    The relaxed codes of an image and of its left-right mirror are averaged before the
    sign, so an image and its mirror get the same code, and a code rests on two views of the
    image (test-time augmentation inside the model: it exports and serves like any hasher).
    Encoding costs two forward passes. Meant for models trained with flip augmentation on
    mirror-symmetric content (natural images), not for digits or text.

    Args:
        hashers: a hashing model (images -> relaxed codes), or ``{bits: hasher}`` of heads
            that share their input (as `train_hashers` returns them). Any model from
            images to a vector works the same way: a classifier gives flip-averaged
            probabilities (`tfhash.self_training.with_pseudo_labels` labels with them).

    Returns:
        The same shape: one model, or ``{bits: model}`` whose models share one input.

    Example:

    >>> hasher = flip_averaged(build_hasher(get_backbone("mnist_cnn", (28, 28, 1)), 12))
    >>> codes = encode(hasher, images)
    """
    return _view_averaged(hashers, "flip_averaged", [HorizontalFlip(name="mirror")])


def shift_averaged(hashers, pixels=1):
    """Hashers that encode each image together with its shifts by ``pixels`` up, down, left
    and right (vacated pixels 0): test-time augmentation for content that may sit a pixel
    off, such as digits, where `flip_averaged` does not apply.

    The relaxed codes of the five views are averaged before the sign. Encoding costs five
    forward passes; the result exports and serves like any hasher.

    Args:
        hashers: a hashing model, or ``{bits: hasher}`` of heads that share their input (as
            `train_hashers` returns them); any model from images to a vector works alike.
        pixels: the shift, a positive integer under the image's height and width.

    Returns:
        The same shape: one model, or ``{bits: model}`` whose models share one input.

    Example:

    >>> hashers = shift_averaged(result.hashers)
    >>> codes = encode(hashers[12], images)
    """
    pixels = check_int(pixels, "pixels", 1)
    views = [Shift(rows, cols, name=f"shift_{name}") for rows, cols, name in (
        (-pixels, 0, "up"), (pixels, 0, "down"), (0, -pixels, "left"), (0, pixels, "right"))]
    return _view_averaged(hashers, "shift_averaged", views)


def flip_and_shift_averaged(hashers, pixels=1):
    """Hashers that encode each image over ten views: the image, its four shifts by
    ``pixels`` (as `shift_averaged`) and the mirror images of all five (as `flip_averaged`).

    For natural images trained with crops and flips (`benchmarks/notes.md` gives its
    measured effect on CIFAR-10). Encoding costs ten forward passes; the result exports and
    serves like any hasher. Arguments and result as `shift_averaged`'s.

    Example:

    >>> hashers = flip_and_shift_averaged(result.hashers)
    """
    return flip_averaged(shift_averaged(hashers, pixels))


def view_averaged(hashers, average):
    """``hashers`` as they are (``average=None``), `flip_averaged` (``"flip"``),
    `shift_averaged` (``"shift"``) or `flip_and_shift_averaged` (``"flip+shift"``): the
    test-time averaging a command line names.

    >>> encoders = view_averaged(result.hashers, "flip")
    """
    return VIEW_AVERAGES[check_average(average)](hashers)


def check_average(average):
    """``average`` if it names a test-time averaging (a key of `VIEW_AVERAGES`), else a
    clear error."""
    check(average in VIEW_AVERAGES,
          f"`average` must be one of {list(VIEW_AVERAGES)}, got {average!r}")
    return average


VIEW_AVERAGES = {None: lambda hashers: hashers, "flip": flip_averaged, "shift": shift_averaged,
                 "flip+shift": flip_and_shift_averaged}


def _view_averaged(hashers, name, views):
    """``hashers`` (a model or ``{bits: model}`` sharing one input) whose outputs are the
    mean over the image itself and its ``views`` (layers from images to images)."""
    single = isinstance(hashers, keras.Model)
    heads = {None: hashers} if single else hashers
    check(isinstance(heads, dict) and heads
          and all(isinstance(h, keras.Model) for h in heads.values()),
          f"{name}: `hashers` must be a keras.Model or a non-empty dict of them, "
          f"got {type(hashers).__name__}")
    first = next(iter(heads.values()))
    check(all(h.inputs[0] is first.inputs[0] for h in heads.values()),
          f"{name}: the hashers in `hashers` must share their input (heads on one "
          "backbone, as train_hashers returns them)")
    check(len(first.input_shape) == 4,
          f"{name}: hashers must take images (batch, height, width, channels), "
          f"got input shape {first.input_shape}")
    joint = keras.Model(first.inputs, [h.outputs[0] for h in heads.values()])
    images = keras.Input(first.input_shape[1:], name="images")
    outputs = [joint(images)] + [joint(view(images)) for view in views]
    averaged = {}
    for index, (key, head) in enumerate(heads.items()):
        mean = keras.layers.Average(name="codes" if single else f"codes_{key}", dtype="float32")
        averaged[key] = keras.Model(images, mean([out[index] for out in outputs]),
                                    name=f"{head.name}_{name}")
    return averaged[None] if single else averaged


def soup_weights(weight_lists):
    """The element-wise mean of several models' ``get_weights()`` lists (a uniform model
    soup); arrays that are not floating point (e.g. random-generator states) are taken
    from the last list.

    >>> model.set_weights(soup_weights([a.get_weights() for a in runs]))
    """
    check(len(weight_lists) >= 1, "`weight_lists` must hold at least one list of weights")
    check(len({len(w) for w in weight_lists}) == 1,
          "`weight_lists` must come from models of one architecture (equal lengths)")
    return [np.mean(arrays, axis=0, dtype=np.float64).astype(arrays[-1].dtype)
            if np.issubdtype(arrays[-1].dtype, np.floating) else arrays[-1]
            for arrays in zip(*weight_lists)]


def _fit_callbacks(work_dir, phase, extra, ema_momentum=None):
    callbacks = list(extra)
    if ema_momentum is not None:
        callbacks.append(WeightAveraging(ema_momentum))
    if work_dir is not None:
        backup = Path(work_dir) / "backup" / phase
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=True))
    return callbacks


def pretrain(backbone, split, num_classes, config, work_dir=None, callbacks=(), verbose="auto"):
    """Phase 1: fits backbone + classifier on the training labels; returns the classifier.

    A `PatchWhitening` stem of ``backbone`` not yet adapted is first adapted to the
    training images."""
    adapt_whitening(backbone, split.train.images)
    train = training_batches(split.train, config, num_classes, config.mix)
    val = None
    if len(split.val):
        val = make_dataset(split.val.images, split.val.labels, 256)
    classifier = build_classifier(backbone, num_classes)
    trainer = (classifier if config.sam_radius is None
               else SharpnessAware(classifier, config.sam_radius))
    steps = config.steps(len(split.train), config.pretrain_epochs)
    trainer.compile(
        optimizer=make_optimizer(config.pretrain_lr, steps, config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    history = trainer.fit(
        train.repeat(),  # one iterator for all epochs: no restart per epoch
        steps_per_epoch=config.steps(len(split.train), 1),
        shuffle=False,  # the batches shuffle themselves (`training_batches`)
        validation_data=None if val is None else val.map(
            lambda x, y: (x, tf.one_hot(y, num_classes))),
        epochs=config.pretrain_epochs,
        callbacks=_fit_callbacks(work_dir, "phase1", callbacks, config.ema_momentum),
        verbose=verbose,
    )
    return classifier, history


def train_hashers(backbone, split, bits_list, config, num_classes=None, work_dir=None,
                  callbacks=(), verbose="auto", similarity=None):
    """Phase 2: fits backbone + one `HashingHead` per code length in ``bits_list`` together.

    Each head gets the phase-2 loss; with ``config.classification_weight > 0`` a softmax
    classifier on each head's codes is trained alongside (`build_hash_trainer`); with
    ``config.soup_size > 1`` the whole fit is repeated from the same starting weights and
    the runs' weights averaged.
    Returns ``({bits: hasher}, history)``, each hasher the images -> relaxed codes branch of
    the trained model (float32 copies sharing one input when ``config.precision`` is mixed),
    ``history`` the last run's (``None`` if every run of a soup was loaded from
    ``work_dir``). ``similarity``: `training_similarity` of the phase-1 classifier, which an
    ``"arranged-codebook"`` classification head needs. A `PatchWhitening` stem not yet
    adapted (no phase 1) is first adapted to the training images.
    """
    num_classes = class_count(split.train.labels, num_classes)
    adapt_whitening(backbone, split.train.images)
    trainee, hashers, compile_args = build_hash_trainer(backbone, bits_list, config,
                                                        num_classes, similarity)
    if len(split.val):
        callbacks = [RetrievalMAP((split.val.images, split.val.labels),
                                  (split.train.images, split.train.labels),
                                  output=f"codes_{bits_list[0]}"), *callbacks]
    tag = "-".join(str(b) for b in bits_list)
    soup = config.soup_size > 1
    soup_dir = Path(work_dir) / "soup" if soup and work_dir is not None else None
    start = trainee.get_weights() if soup else None
    ends, run_files, history = [], [], None
    for member in range(config.soup_size):
        phase = f"phase2-{tag}-run{member}" if soup else f"phase2-{tag}"
        finished = None if soup_dir is None else soup_dir / f"{phase}.npz"
        if finished is not None:
            run_files.append(finished)
            if finished.exists():
                ends.append(read_arrays(finished))  # a run done before an interruption
                continue
        if member:
            trainee.set_weights(start)
        compile_hash_trainer(trainee, compile_args, config, len(split.train))
        member_config = dataclasses.replace(config, seed=config.seed + member)
        history = trainee.fit(
            hash_training_batches(trainee, split.train, member_config, num_classes).repeat(),
            steps_per_epoch=config.steps(len(split.train), 1),
            shuffle=False,  # as in phase 1
            epochs=config.hash_epochs,
            callbacks=_fit_callbacks(work_dir, phase, callbacks, config.ema_momentum),
            verbose=verbose,
        )
        if soup:
            ends.append(trainee.get_weights())
        if finished is not None:
            write_arrays(finished, ends[-1])
    if soup:
        trainee.set_weights(soup_weights(ends))
    for path in run_files:  # the soup is made: as BackupAndRestore, keep no run files
        path.unlink()
    if config.precision != "float32":
        joint = as_float32(keras.Model(trainee.input, [h.output for h in hashers.values()]))
        hashers = {bits: keras.Model(joint.inputs, joint.get_layer(f"codes_{bits}").output,
                                     name=f"hasher_{bits}") for bits in hashers}
    return hashers, history


def build_hash_trainer(backbone, bits_list, config, num_classes, similarity=None):
    """The model phase 2 trains: ``backbone`` under one `HashingHead` per code length in
    ``bits_list``, each head's codes (output ``codes_<bits>``) with ``config``'s phase-2
    loss and, with ``config.classification_weight > 0``, its classification term (output
    ``classes_<bits>``). ``similarity``: as for `train_hashers`.

    Returns ``(trainer, hashers, compile_args)``: the functional model to fit, each length's
    images -> relaxed codes branch of it, and the ``loss``, ``loss_weights`` and
    ``metrics`` to compile it with (`compile_hash_trainer`).

    >>> trainer, hashers, compile_args = build_hash_trainer(backbone, (12, 32), config, 10)
    >>> compile_hash_trainer(trainer, compile_args, config, len(split.train))
    >>> trainer.fit(hash_training_batches(trainer, split.train, config, 10), epochs=2)
    """
    check(similarity is not None or config.classification_head != "arranged-codebook",
          "`similarity` is needed with classification_head 'arranged-codebook': "
          "pass training_similarity(classifier, split.train) of the phase-1 classifier")
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    features = backbone(inputs)
    hashers, outputs, losses, weights, metrics = {}, {}, {}, {}, {}
    for bits in bits_list:
        codes = HashingHead(bits, name=f"codes_{bits}", dtype="float32")(features)
        hashers[bits] = keras.Model(inputs, codes, name=f"hasher_{bits}")
        outputs[f"codes_{bits}"] = codes
        losses[f"codes_{bits}"] = config.hash_loss(num_classes, bits)
        metrics[f"codes_{bits}"] = config.hash_metrics()
        weights[f"codes_{bits}"] = 1.0
        if config.classification_weight:
            outputs[f"classes_{bits}"], losses[f"classes_{bits}"] = config.classification_term(
                codes, num_classes, bits, similarity)
            weights[f"classes_{bits}"] = config.classification_weight
    trainer = keras.Model(inputs, outputs, name="hash_trainer")
    return trainer, hashers, {"loss": losses, "loss_weights": weights, "metrics": metrics}


def compile_hash_trainer(trainer, compile_args, config, n_train):
    """Compiles a `build_hash_trainer` model with a fresh phase-2 optimizer for
    ``config.hash_epochs`` over ``n_train`` images."""
    trainer.compile(
        optimizer=make_optimizer(config.hash_lr, config.steps(n_train, config.hash_epochs),
                                 config.weight_decay),
        **compile_args,
    )


def hash_training_batches(trainer, train, config, num_classes):
    """Phase 2's batches of ``train`` (`Images`) for a `build_hash_trainer` model: the
    images augmented and mixed by ``config.hash_mix`` (`training_batches`), the labels
    given to each of ``trainer``'s outputs."""
    names = list(trainer.output)  # the outputs dict's keys
    batches = training_batches(train, config, num_classes, config.hash_mix, class_ids=True)
    return batches.map(lambda x, y: (x, {name: y for name in names}))


def training_batches(train, config, num_classes, mix, class_ids=False):
    """Augmented, shuffled batches of ``train`` (`Images`) for either phase, with one-hot
    labels mixed across each batch by ``mix`` (see `tfhash.pipeline.mix_batches`); with
    ``class_ids`` and ``mix="none"`` the labels stay class ids (what phase 2's pair losses
    take unless its batches are mixed).

    >>> batches = training_batches(split.train, config, 10, config.hash_mix, class_ids=True)
    """
    # fewer classes would one-hot the rest to zeros
    class_count(train.labels, num_classes, source="train")
    batches = make_dataset(train.images, train.labels, config.batch_size, training=True,
                           augment=config.augment, augment_strength=config.augment_strength,
                           seed=config.seed)
    if class_ids and mix == "none":
        return batches
    return mix_batches(batches.map(lambda x, y: (x, tf.one_hot(y, num_classes))), mix,
                       seed=config.seed)


def fit_two_phase(split, config, num_classes=None, work_dir=None, callbacks=(), verbose="auto",
                  strategy=None):
    """Runs phase 1 once (unless ``config.pretrain`` is off), then phase 2 per code length.

    With ``work_dir``, each fit is backed up every epoch (`BackupAndRestore`) and the
    pre-trained backbone is kept, so an interrupted run resumes where it stopped. With a
    ``strategy`` (see `tfhash.distribute`), models, optimizers and metrics are created in its
    scope and each batch is the global batch, split over the replicas.
    """
    num_classes = _checked_num_classes(split, config, num_classes)
    return _in_scope(_fit_two_phase, split, config, num_classes, work_dir, callbacks, verbose,
                     strategy)


def fit_graded(split, config, num_classes=None, work_dir=None, callbacks=(), verbose="auto",
               strategy=None, average=None, arrange=True, temperature=None,
               codebook="max-min"):
    """Runs phase 1 only and codes each length in ``config.bits`` with graded class codes
    (`build_graded_hasher` on the phase-1 classifier, the members' average for an
    ensemble): no hashing phase, so ``config``'s phase-2 settings are not used. Arguments
    as in `fit_two_phase`; ``config.pretrain`` must be on with ``pretrain_epochs >= 1``.
    With ``average="flip"`` (``"shift"``, ``"flip+shift"``) the class probabilities are
    averaged over the views of `flip_averaged` (`shift_averaged`,
    `flip_and_shift_averaged`) before the codes are placed; the returned
    classifier stays the plain one. With ``arrange`` (the default) the codewords are
    arranged so the classes the classifier mixes up on the training images get near
    codewords (`tfhash.codebooks.class_similarity`, `tfhash.codebooks.arrange_codebook`):
    an image coded as the wrong class then lands nearer its own. With ``temperature`` the
    codes are `tfhash.layers.FittedClassCodes` of that temperature instead of
    `tfhash.layers.GradedClassCodes`; ``codebook`` names the codewords' rule
    (`build_graded_hasher`). `build_query_hashers` of the returned hashers gives the query
    encoders of asymmetric codes.

    Example:

    >>> result = fit_graded(split, TrainConfig(bits=(12, 48), pretrain_epochs=40))
    >>> codes = encode(result.hashers[12], images)
    """
    num_classes = _checked_num_classes(split, config, num_classes)
    check(config.pretrain and config.pretrain_epochs >= 1,
          "fit_graded: graded codes come from the phase-1 classifier; `config` must "
          f"pre-train (pretrain=True, pretrain_epochs >= 1), got pretrain={config.pretrain}, "
          f"pretrain_epochs={config.pretrain_epochs}")
    check(isinstance(arrange, bool), f"fit_graded: `arrange` must be True or False, "
          f"got {arrange!r}")
    check_number(temperature, "temperature", 0, low_open=True, optional=True)
    check(codebook in CODEBOOKS, f"fit_graded: `codebook` must be one of {sorted(CODEBOOKS)}, "
          f"got {codebook!r}")
    fit = functools.partial(_fit_graded, average=check_average(average), arrange=arrange,
                            temperature=temperature, codebook=codebook)
    return _in_scope(fit, split, config, num_classes, work_dir, callbacks, verbose, strategy)


def _checked_num_classes(split, config, num_classes):
    """``num_classes`` (``None``: the training labels' highest plus one) once ``split``,
    ``config`` and it are what a fit takes; a clear error otherwise."""
    check(isinstance(split, Split),
          f"`split` must be a tfhash.data.Split (data.make_split), got {type(split).__name__}")
    check(isinstance(config, TrainConfig),
          f"`config` must be a TrainConfig, got {type(config).__name__}")
    return class_count(split.train.labels, num_classes)


def _in_scope(fit, split, config, num_classes, work_dir, callbacks, verbose, strategy):
    strategy = strategy or tf.distribute.get_strategy()
    if work_dir is not None:
        work_dir = writable_dir(work_dir, strategy)
    with strategy.scope():
        return fit(split, config, num_classes, work_dir, callbacks, verbose)


def _fit_two_phase(split, config, num_classes, work_dir, callbacks, verbose):
    members, classifier, histories, wall = _pretrain_members(
        split, config, num_classes, work_dir, callbacks, verbose)
    backbone = ensemble(members)
    similarity = (training_similarity(classifier, split.train)
                  if config.classification_head == "arranged-codebook" else None)
    hashers = {}
    groups = [config.bits] if config.shared_heads else [(bits,) for bits in config.bits]
    for group in groups:
        start = time.perf_counter()
        tag = "_".join(str(b) for b in group)
        trained, histories[f"hash_{tag}"] = train_hashers(
            copy_model(backbone), split, group, config, num_classes, work_dir, callbacks, verbose,
            similarity)
        hashers.update(trained)
        wall[f"hash_{tag}"] = time.perf_counter() - start
    return TrainResult(hashers, classifier, histories, wall)


def _fit_graded(split, config, num_classes, work_dir, callbacks, verbose, average, arrange,
                temperature, codebook):
    _, classifier, histories, wall = _pretrain_members(
        split, config, num_classes, work_dir, callbacks, verbose)
    if config.precision != "float32":  # encoders compute in float32, as train_hashers' do
        classifier = as_float32(classifier)
    viewed = view_averaged(classifier, average)
    similarity = training_similarity(viewed, split.train) if arrange else None
    hashers = build_graded_hashers(viewed, config.bits, similarity=similarity,
                                   temperature=temperature, codebook=codebook)
    return TrainResult(hashers, classifier, histories, wall)


def training_similarity(classifier, images):
    """`tfhash.codebooks.class_similarity` of ``classifier``'s probabilities on labelled
    ``images`` (a `tfhash.data.Images`, such as a split's training images).

    >>> similarity = training_similarity(classifier, split.train)
    """
    probabilities = classifier.predict(images.images, batch_size=256, verbose=0)
    return class_similarity(probabilities, images.labels)


def training_centres(hashers, images):
    """`tfhash.codebooks.class_centres` of ``hashers``' codes of labelled ``images`` (a
    `tfhash.data.Images`, such as a split's training images): the class centres that
    `build_query_hasher` codes a learned hasher's queries on. An array for one hasher,
    ``{bits: centres}`` for ``{bits: hasher}`` (coded by `encode_heads`).

    >>> query_encoders = build_query_hashers(hashers, training_centres(hashers, split.train))
    """
    check(hasattr(images, "images") and hasattr(images, "labels"),
          "training_centres: `images` must be labelled images (tfhash.data.Images, e.g. "
          f"split.train), got {type(images).__name__}")
    if not isinstance(hashers, dict):
        return class_centres(encode(hashers, images.images, verbose=0), images.labels)
    codes = encode_heads(hashers, images.images)
    return {bits: class_centres(c, images.labels) for bits, c in codes.items()}


def _pretrain_members(split, config, num_classes, work_dir, callbacks, verbose):
    """Phase 1 of every ensemble member (resumed from ``work_dir`` where it was kept):
    ``(backbones, averaged classifier or None, histories, wall times)``."""
    histories, wall = {}, {}
    members, classifiers = [], []
    for k in range(config.ensemble_size):
        member_config = config.member(k)
        keras.utils.set_random_seed(member_config.seed)
        members.append(member_config.make_backbone(split.train.images.shape[1:]))
        if not (config.pretrain and config.pretrain_epochs):
            continue
        member_dir = member_work_dir(work_dir, k)
        pretrained = member_weights_path(work_dir, k)
        phase = "pretrain" if k == 0 else f"pretrain_member{k}"
        start = time.perf_counter()
        if pretrained is not None and pretrained.exists():
            classifier = build_classifier(members[-1], num_classes)
            classifier.load_weights(pretrained)
        else:
            classifier, histories[phase] = pretrain(
                members[-1], split, num_classes, member_config, member_dir, callbacks, verbose
            )
            if pretrained is not None:
                _save_weights_atomic(classifier, pretrained)
        classifiers.append(classifier)
        wall[phase] = time.perf_counter() - start
    classifier = average_classifiers(classifiers) if classifiers else None
    return members, classifier, histories, wall


def member_work_dir(work_dir, k):
    """Where ensemble member ``k`` keeps its phase 1 under ``work_dir`` (``None``: nowhere)."""
    if work_dir is None:
        return None
    return Path(work_dir) if k == 0 else Path(work_dir) / f"member{k}"


def member_weights_path(work_dir, k):
    """The file ensemble member ``k`` keeps its phase-1 weights in under ``work_dir``
    (``None``: nowhere).

    >>> member_weights_path("run", 1).as_posix()
    'run/member1/pretrained.weights.h5'
    """
    member_dir = member_work_dir(work_dir, k)
    return None if member_dir is None else member_dir / PRETRAINED_WEIGHTS


def _save_weights_atomic(model, path):
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
