"""Class-fitted codes (FittedClassCodes) against a brute-force search over every code and a
plain loop-by-loop block search."""

import itertools

import keras
import numpy as np
import pytest

from tfhash import model
from tfhash.codebooks import class_codebook
from tfhash.errors import TfhashError
from tfhash.layers import FittedClassCodes, GradedClassCodes, PredictedClassCodes


def reading(codes, book, temperature):
    """The logits a code is read as: -d(code, c_k) / (temperature * bits), per codeword
    (the last axis), for one code or an array of them."""
    codes = np.asarray(codes)
    return -(codes[..., None, :] != book).sum(-1) / (temperature * book.shape[1])


def cross_entropy(p, code, book, temperature):
    """-sum_k p_k log softmax_k(reading), one image."""
    logits = reading(code, book, temperature)
    return -(p * logits).sum() + np.log(np.exp(logits).sum())


def fitted_reference(probs, book, temperature):
    """The least cross-entropy code of every image among all codes of the codebook's length
    (numpy, float64; the first such code in `itertools.product` order)."""
    words = np.array(list(itertools.product((-1, 1), repeat=book.shape[1])))
    logits = reading(words, book, temperature)  # (words, classes)
    lse = np.log(np.exp(logits).sum(1))
    loss = -np.asarray(probs, np.float64) @ logits.T + lse
    return words[loss.argmin(1)].astype(np.float32)


def fitted(probs, book, temperature):
    return keras.ops.convert_to_numpy(FittedClassCodes(book, temperature)(probs))


def random_probs(n, classes, seed):
    """Sure and unsure class probabilities alike (Dirichlet with small and large spread)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.dirichlet(np.full(classes, a), n // 2)
                           for a in (0.1, 1.0)]).astype(np.float32)


@pytest.mark.parametrize("classes, bits, temperature", [(10, 12, 0.125), (5, 8, 0.09),
                                                         (3, 6, 0.6)])
def test_codes_up_to_12_bits_are_the_best_of_every_code(classes, bits, temperature):
    book = class_codebook(classes, bits)
    probs = random_probs(60, classes, seed=bits)
    codes = fitted(probs, book, temperature)
    words = np.array(list(itertools.product((-1, 1), repeat=bits)))
    for p, code in zip(probs, codes):
        best = min(cross_entropy(p, w, book, temperature) for w in words)
        assert cross_entropy(p, code, book, temperature) == pytest.approx(best, abs=1e-4)


def block_search_reference(p, book, temperature, block_bits=12, passes=2):
    """Blocks of at most ``block_bits`` bits, each replaced in turn by its best setting
    with the rest held, ``passes`` times, from the likeliest class's codeword."""
    bits = book.shape[1]
    n_blocks = -(-bits // block_bits)
    edges = np.linspace(0, bits, n_blocks + 1).round().astype(int)
    code = book[np.argmax(p)].copy()
    for _ in range(passes if n_blocks > 1 else 1):
        for start, stop in zip(edges[:-1], edges[1:]):
            options = []
            for block in itertools.product((-1, 1), repeat=stop - start):
                trial = code.copy()
                trial[start:stop] = block
                options.append((cross_entropy(p, trial, book, temperature), trial))
            code = min(options, key=lambda o: o[0])[1]
    return code


@pytest.mark.parametrize("bits", [24, 32])
def test_longer_codes_are_searched_block_by_block(bits):
    book = class_codebook(10, bits)
    probs = random_probs(6, 10, seed=bits)
    codes = fitted(probs, book, 0.08)
    for p, code in zip(probs, codes):
        reference = block_search_reference(p, book, 0.08)
        assert cross_entropy(p, code, book, 0.08) == pytest.approx(
            cross_entropy(p, reference, book, 0.08), abs=1e-4)
        # never worse than the likeliest class's codeword it starts from
        assert cross_entropy(p, code, book, 0.08) <= cross_entropy(
            p, book[np.argmax(p)], book, 0.08) + 1e-6


@pytest.mark.parametrize("bits", [12, 48])
def test_sure_images_sit_on_their_class_codeword(bits):
    book = class_codebook(10, bits)
    np.testing.assert_array_equal(fitted(np.eye(10, dtype=np.float32), book, 0.1), book)


def test_an_image_nears_a_class_as_its_probability_of_it_rises():
    """Two classes on complementary 12-bit codewords: r bits towards the second class read
    as its probability q_r = sigmoid((2r - 12) / T) (T = 12 times the temperature), and the
    loss is a logistic loss, convex in r; so the code takes the r whose q_r explains the
    probability best, switching from r to r + 1 where both explain it equally, as worked
    out here by hand."""
    book = np.array([[1] * 12, [-1] * 12])
    share = np.linspace(0.0, 0.5, 41, dtype=np.float32)
    codes = fitted(np.stack([1 - share, share], 1), book, 0.125)
    towards = (codes == book[1]).sum(1)
    q = 1 / (1 + np.exp(-(2 * np.arange(7) - 12) / 1.5))
    # p log(q_r+1 / q_r) + (1 - p) log((1 - q_r+1) / (1 - q_r)) = 0, solved for p
    up, down = np.log(q[1:] / q[:-1]), np.log((1 - q[:-1]) / (1 - q[1:]))
    switch = down / (up + down)
    np.testing.assert_array_equal(towards, (share[:, None] > switch[None]).sum(1))
    assert towards[0] == 0 and towards[-1] == 6  # on codeword 0, then halfway
    assert (np.diff(towards) >= 0).all()


def test_unsure_images_rank_by_their_probability_of_the_querys_class():
    """From a class's codeword (the asymmetric query), images given to other classes come in
    the order of their probability of the query's class; graded codes only see the
    runner-up."""
    book = class_codebook(10, 12)
    probs = np.full((5, 10), 0.01, np.float32)
    probs[:, 1] = 0.5  # all given to class 1; class 0 from runner-up to among the unlikeliest
    probs[:, 0] = [0.3, 0.2, 0.12, 0.06, 0.01]
    probs[:, 2] = 0.43 - probs[:, 0]  # the runner-up from the second image on
    query = keras.ops.convert_to_numpy(PredictedClassCodes(book)(np.eye(10)[[0]]))[0]
    distances = (fitted(probs, book, 0.125) != query).sum(1)
    assert (np.diff(distances) >= 0).all() and distances[0] < distances[1] < distances[-1]
    graded = keras.ops.convert_to_numpy(GradedClassCodes(book)(probs))
    assert len(set((graded[1:] != query).sum(1))) == 1  # class 0 is not their runner-up


def test_config_round_trip_and_saved_model(tmp_path):
    book = class_codebook(10, 24)
    layer = FittedClassCodes(book, temperature=0.1, name="codes")
    clone = FittedClassCodes.from_config(layer.get_config())
    probs = random_probs(20, 10, seed=3)
    assert clone.temperature == 0.1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(probs)),
                                  keras.ops.convert_to_numpy(layer(probs)))
    inputs = keras.Input((10,))
    saved = keras.Model(inputs, layer(inputs))
    saved.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(probs, verbose=0), saved.predict(probs, verbose=0))


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0}, "`temperature` must be a number > 0, got 0"),
    ({"temperature": "1"}, "`temperature`"),
    ({"temperature": float("nan")}, "`temperature`"),
])
def test_bad_temperature_is_refused(kwargs, match):
    with pytest.raises(TfhashError, match=match):
        FittedClassCodes(class_codebook(10, 12), **kwargs)


def test_a_fitted_hasher_has_asymmetric_queries_on_its_codebook():
    keras.utils.set_random_seed(2)
    backbone = model.get_backbone("mnist_cnn", (28, 28, 1), width=4)
    classifier = model.build_classifier(backbone, 10)
    hasher = model.build_graded_hasher(classifier, 12, temperature=0.125)
    assert isinstance(hasher.layers[-1], FittedClassCodes)
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    probs = classifier.predict(images, verbose=0)
    np.testing.assert_array_equal(hasher.predict(images, verbose=0),
                                  fitted(probs, class_codebook(10, 12), 0.125))
    query = model.build_query_hasher(hasher)
    np.testing.assert_array_equal(query.predict(images, verbose=0),
                                  class_codebook(10, 12)[probs.argmax(1)])
