"""The docstring examples that stand on their own run as doctests, so they cannot drift from
the code. (The others, in the Keras manner, are lines of a user's script that assume its
``hasher`` or ``split``; their calls are covered by the behaviour tests.)"""

import doctest
import importlib

import keras
import numpy as np
import pytest

RUNNABLE = [
    "tfhash",
    "tfhash.backbones",
    "tfhash.backbones.ensemble",
    "tfhash.codebooks",
    "tfhash.codebooks.arrange_codebook",
    "tfhash.codebooks.class_codebook",
    "tfhash.codebooks.class_similarity",
    "tfhash.codes",
    "tfhash.data",
    "tfhash.data.class_count",
    "tfhash.hardware",
    "tfhash.errors.check_int",
    "tfhash.errors.check_number",
    "tfhash.errors.check_non_negative",
    "tfhash.errors.check_unit_interval",
    "tfhash.errors.is_integer",
    "tfhash.errors.is_number",
    "tfhash.index",
    "tfhash.io",
    "tfhash.layers.FittedClassCodes",
    "tfhash.layers.GradedClassCodes",
    "tfhash.layers.HashingHead",
    "tfhash.layers.HorizontalFlip",
    "tfhash.layers.NearestCodeword",
    "tfhash.layers.PredictedClassCodes",
    "tfhash.layers.Shift",
    "tfhash.losses.ExponentiatedHashingLoss",
    "tfhash.metrics",
    "tfhash.model.member_weights_path",
    "tfhash.networks",
    "tfhash.pipeline",
    "tfhash.pipeline.affine_augmenter",
    "tfhash.pipeline.apply_random_operations",
    "tfhash.pipeline.mild_operations",
    "tfhash.pipeline.mix_batches",
    "tfhash.self_training.select_confident",
    "tfhash.sharpness.SharpnessAware",
    "tfhash.quiet",
    "tfhash.tuning.best_hparams",
    "tfhash.whitening.PatchWhitening",
    "tfhash.whitening.adapt_whitening",
]


def docstring_test(name):
    module = name if name.count(".") <= 1 else name.rsplit(".", 1)[0]
    found = doctest.DocTestFinder().find(importlib.import_module(module),
                                         extraglobs={"np": np, "keras": keras})
    (test,) = [t for t in found if t.name == name]
    return test


@pytest.mark.parametrize("name", RUNNABLE)
def test_the_example_runs_and_prints_what_it_shows(name):
    test = docstring_test(name)
    assert any(example.want for example in test.examples), "an example that shows nothing"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    outcome = runner.run(test)
    assert outcome.failed == 0
