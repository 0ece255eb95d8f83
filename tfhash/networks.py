"""The phase-1 and phase-2 networks, their optimizer and precision, from Keras alone.

Nothing here imports TensorFlow, so these models build and train under any Keras backend
(``benchmarks/accelerated_phase1.py`` trains classifiers under JAX on machines without
TensorFlow); `tfhash.model` trains them with tf.data pipelines.

Example:

>>> from tfhash.backbones import get_backbone
>>> backbone = get_backbone("mnist_cnn", (28, 28, 1))
>>> classifier = build_classifier(backbone, 10)
>>> classifier.compile(optimizer=make_optimizer(2e-3, steps=400, weight_decay=5e-4),
...                    loss="categorical_crossentropy")
>>> hasher = build_hasher(backbone, 12)  # same backbone, a hashing head instead
>>> classifier.output_shape, hasher.output_shape
((None, 10), (None, 12))
"""

import contextlib

import keras
import numpy as np

from tfhash.backbones import combine
from tfhash.codebooks import arrange_codebook, named_codebook
from tfhash.errors import check
from tfhash.layers import (
    FittedClassCodes,
    GradedClassCodes,
    HashingHead,
    NearestCodeword,
    PredictedClassCodes,
)


def build_classifier(backbone, num_classes):
    """Backbone + softmax classifier: the phase-1 model."""
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    features = backbone(inputs)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="classes",
                               dtype="float32")(features)
    return keras.Model(inputs, probs, name="classifier")


def average_classifiers(classifiers):
    """One classifier whose class probabilities are the mean of ``classifiers``' (the phase-1
    models of an ensemble's members, all taking the same images).

    >>> ensemble = average_classifiers([classifier_a, classifier_b])
    """
    return combine(classifiers, keras.layers.Average(name="classes", dtype="float32"),
                   "classifiers", "classifier", "ensemble_classifier")


def build_hasher(backbone, bits, **head_kwargs):
    """Backbone + `HashingHead`: the phase-2 model; outputs relaxed codes ``(batch, bits)``.

    The head computes in float32 whatever the backbone's precision.
    """
    inputs = keras.Input(backbone.input_shape[1:], name="images")
    head_kwargs.setdefault("dtype", "float32")
    codes = HashingHead(bits, name="codes", **head_kwargs)(backbone(inputs))
    return keras.Model(inputs, codes, name=f"hasher_{bits}")


def build_graded_hasher(classifier, bits, seed=0, similarity=None, temperature=None,
                        codebook="max-min"):
    """A classifier + `GradedClassCodes` (or `FittedClassCodes`): binary codes of ``bits``
    bits straight from the class probabilities, with no hashing phase (each class gets a
    codeword of the ``codebook`` rule's codebook; unsure images sit between their two
    likeliest classes' codewords, or with ``temperature`` wherever their distances to all
    the codewords best explain their probabilities).

    Args:
        classifier: a ``keras.Model`` from images to class probabilities ``(batch, C)``,
            such as `build_classifier`'s after phase 1, `average_classifiers`' or a
            view-averaged one.
        bits: code length.
        seed: the codebook's seed (used for codes longer than 16 bits).
        similarity: optional ``(C, C)`` class similarity (e.g.
            `tfhash.codebooks.class_similarity` of the classifier's probabilities on its
            training images): the codewords are then `tfhash.codebooks.arrange_codebook`d
            so classes the classifier mixes up get near codewords. ``None``: the
            codebook's own order.
        temperature: ``None`` for `GradedClassCodes`; a number > 0 for `FittedClassCodes`
            of that temperature (the share of the code length per e-fold of probability).
        codebook: the codewords' rule, a name of `tfhash.codebooks.CODEBOOKS`:
            ``"max-min"`` (`tfhash.codebooks.class_codebook`, the largest minimum
            distance) or ``"capped"`` (`tfhash.codebooks.capped_codebook`, nearly
            equidistant: better for 12-bit fitted codes).

    Returns:
        A ``keras.Model`` from images to float +-1 codes ``(batch, bits)``.

    Example:

    >>> hasher = build_graded_hasher(classifier, 12)
    >>> fitted = build_graded_hasher(classifier, 12, temperature=0.15, codebook="capped")
    >>> hasher.output_shape
    (None, 12)
    """
    check(isinstance(classifier, keras.Model) and len(classifier.outputs) == 1
          and len(classifier.output_shape) == 2,
          "build_graded_hasher: `classifier` must be a keras.Model with outputs "
          f"(batch, classes), got {type(classifier).__name__}"
          + (f" with output shape {classifier.output_shape}"
             if isinstance(classifier, keras.Model) else ""))
    book = named_codebook(codebook, classifier.output_shape[-1], bits, seed)
    if similarity is not None:
        book = arrange_codebook(book, similarity)
    if temperature is None:
        layer = GradedClassCodes(book, name=f"codes_{bits}", dtype="float32")
    else:
        layer = FittedClassCodes(book, temperature, name=f"codes_{bits}", dtype="float32")
    return keras.Model(classifier.inputs, layer(classifier.outputs[0]),
                       name=f"graded_hasher_{bits}")


def build_graded_hashers(classifier, bits_list, similarity=None, temperature=None,
                         codebook="max-min"):
    """`build_graded_hasher` for every length in ``bits_list``: ``{bits: hasher}``, the
    hashers sharing the classifier's input (so `tfhash.model.encode_heads` runs the
    classifier once for all of them). The codebooks are ``codebook``'s default ones (the
    same for every classifier of the same classes), arranged by ``similarity`` when it is
    given.

    >>> hashers = build_graded_hashers(classifier, (12, 48))
    """
    check(isinstance(bits_list, (list, tuple)) and bits_list,
          f"build_graded_hashers: `bits_list` must be a non-empty list or tuple of code "
          f"lengths, got {bits_list!r}")
    return {bits: build_graded_hasher(classifier, bits, similarity=similarity,
                                      temperature=temperature, codebook=codebook)
            for bits in bits_list}


def build_query_hasher(hasher, centres=None):
    """The query encoder of asymmetric codes: ``hasher``'s network, each query coded as a
    class's codeword instead of its own code.

    The database keeps ``hasher``'s codes, so a database already coded with it is searched
    as it is: only the queries' encoder changes. A graded hasher (`build_graded_hasher`,
    fitted or not) codes each query as its likeliest class's codeword
    (`PredictedClassCodes`, same classifier and codebook): Hamming ranking lists the images
    the classifier gives to the query's class first, the sure ones before the unsure. Any
    other hasher (a learned one, from `tfhash.model.fit_two_phase`) needs ``centres``, one
    codeword per class, and codes each query as the centre nearest its own code
    (`NearestCodeword`): the database images nearest that class's centre rank first.

    Args:
        hasher: a hashing model from images to codes, saved and reloaded or not: a graded
            hasher (its last layer a `GradedClassCodes` or `FittedClassCodes`), or any
            other with ``centres``.
        centres: +-1 class centres ``(num_classes, bits)`` for a hasher that is not graded,
            e.g. `tfhash.codebooks.class_centres` of its codes of the training images
            (`tfhash.model.training_centres`); ``None`` for a graded hasher, whose codebook
            is its own.

    Returns:
        A ``keras.Model`` from images to float +-1 codes, sharing ``hasher``'s input and
        layers.

    Example:

    >>> query_encoder = build_query_hasher(build_graded_hasher(classifier, 12))
    >>> query_encoder = build_query_hasher(hasher, training_centres(hasher, split.train))
    >>> query_encoder.output_shape
    (None, 12)
    """
    check(isinstance(hasher, keras.Model),
          f"build_query_hasher: `hasher` must be a keras.Model, got {type(hasher).__name__}")
    last = hasher.layers[-1]
    if isinstance(last, (GradedClassCodes, FittedClassCodes)):
        check(centres is None, "build_query_hasher: `centres` must be None for a graded "
              f"hasher (its {type(last).__name__} codebook is the queries' codebook)")
        codes = PredictedClassCodes(last.codebook, name=f"query_{last.name}",
                                    dtype="float32")(last.input)
    else:
        check(centres is not None, "build_query_hasher: `centres` (one codeword per class, "
              "e.g. tfhash.model.training_centres) is needed for a hasher that is not graded")
        check(hasher.output_shape[-1] == np.shape(centres)[-1],
              f"build_query_hasher: `centres` must have the hasher's {hasher.output_shape[-1]} "
              f"bits, got shape {np.shape(centres)}")
        codes = NearestCodeword(centres, name=f"nearest_centre_{hasher.output_shape[-1]}",
                                dtype="float32")(hasher.outputs[0])
    return keras.Model(hasher.inputs, codes, name=f"query_{hasher.name}")


def build_query_hashers(hashers, centres=None):
    """`build_query_hasher` for each of ``{bits: hasher}``, with ``centres`` ``{bits:
    centres}`` for hashers that are not graded: ``{bits: query_hasher}``.

    >>> query_encoders = build_query_hashers(build_graded_hashers(classifier, (12, 48)))
    >>> query_encoders = build_query_hashers(hashers, training_centres(hashers, split.train))
    """
    check(isinstance(hashers, dict) and hashers,
          "build_query_hashers: `hashers` must be a non-empty dict {bits: hasher}, got "
          f"{type(hashers).__name__}")
    check(centres is None or (isinstance(centres, dict) and set(centres) == set(hashers)),
          "build_query_hashers: `centres` must be None or a dict with the hashers' code "
          f"lengths {sorted(hashers)}, got "
          f"{sorted(centres) if isinstance(centres, dict) else type(centres).__name__}")
    return {bits: build_query_hasher(hasher, None if centres is None else centres[bits])
            for bits, hasher in hashers.items()}


@contextlib.contextmanager
def precision_policy(name):
    """Sets Keras' global dtype policy to ``name`` inside the block, then restores it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_optimizer(lr, steps, weight_decay):
    """AdamW with cosine decay from ``lr`` to 0 over ``steps``."""
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(steps, 1))
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
