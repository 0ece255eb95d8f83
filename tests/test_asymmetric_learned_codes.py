"""Asymmetric learned codes: class centres of the training codes (class_centres,
model.training_centres) and queries snapped to the nearest one (NearestCodeword,
build_query_hasher with centres), against loops over images and codewords."""

import keras
import numpy as np
import pytest

from tfhash import data, model
from tfhash.codebooks import class_centres, class_codebook
from tfhash.errors import TfhashError
from tfhash.layers import NearestCodeword


def centres_reference(codes, labels, num_classes):
    """Each class's bitwise majority, ties to +1, by a loop over classes and bits."""
    out = np.empty((num_classes, codes.shape[1]), np.int8)
    for c in range(num_classes):
        members = codes[labels == c]
        for k in range(codes.shape[1]):
            ones = sum(1 for v in members[:, k] if v >= 0)
            out[c, k] = 1 if ones >= len(members) - ones else -1
    return out


def nearest_reference(codes, book):
    """The codeword at the least Hamming distance from each code's signs, the first on ties."""
    signs = np.where(codes >= 0, 1, -1)
    out = []
    for code in signs:
        distances = [int(np.sum(code != word)) for word in book]
        out.append(book[distances.index(min(distances))])
    return np.array(out, np.float32)


@pytest.mark.parametrize("classes, bits", [(10, 12), (3, 5), (20, 64)])
def test_class_centres_are_each_classes_bitwise_majority(classes, bits):
    rng = np.random.default_rng(bits)
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, 200)])
    binary = np.where(rng.random((len(labels), bits)) < 0.5, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(class_centres(binary, labels),
                                  centres_reference(binary, labels, classes))
    # with one or two images in most classes many bits tie: those go to +1
    few = slice(0, 2 * classes)
    np.testing.assert_array_equal(class_centres(binary[few], labels[few], classes),
                                  centres_reference(binary[few], labels[few], classes))
    # relaxed codes count by value, not by sign
    relaxed = np.array([[0.9, -0.1], [-0.2, -0.1], [0.5, 0.5]])
    np.testing.assert_array_equal(class_centres(relaxed, np.array([0, 0, 1])),
                                  [[1, -1], [1, 1]])


@pytest.mark.parametrize("codes, labels, kwargs, match", [
    (np.ones((3, 4)), np.array([0, 2, 2]), {}, "none of class 1"),
    (np.ones((3, 4)), np.array([0, 1]), {}, "`labels` must be 3"),
    (np.ones((3, 4)), np.array([0, 1, 1]), {"num_classes": 1}, "`num_classes`"),
    (np.ones((0, 4)), np.array([], int), {}, "non-empty"),
    (np.full((2, 4), np.nan), np.array([0, 1]), {}, "finite"),
])
def test_class_centres_refuse_bad_input(codes, labels, kwargs, match):
    with pytest.raises(TfhashError, match=match):
        class_centres(codes, labels, **kwargs)


@pytest.mark.parametrize("classes, bits", [(10, 12), (4, 3), (50, 32)])
def test_nearest_codeword_matches_a_search_over_the_codebook(classes, bits):
    rng = np.random.default_rng(classes)
    book = class_codebook(classes, bits)
    relaxed = rng.uniform(-1, 1, (500, bits)).astype(np.float32)
    relaxed[:5] = 0.0  # sign(0) = +1
    codes = keras.ops.convert_to_numpy(NearestCodeword(book)(relaxed))
    np.testing.assert_array_equal(codes, nearest_reference(relaxed, book))


def test_nearest_codeword_refuses_codes_of_another_length():
    with pytest.raises(TfhashError, match="NearestCodeword: expected codes of 8 bits"):
        NearestCodeword(class_codebook(3, 8))(np.ones((2, 12), np.float32))


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(4)
    labels = np.concatenate([np.arange(10), rng.integers(0, 10, 54)])
    return data.Images(rng.uniform(0, 255, (64, 28, 28, 1)).astype(np.float32), labels)


def test_query_hasher_of_a_learned_hasher_snaps_to_the_nearest_training_centre(
        heads, train, tmp_path):
    queries = np.random.default_rng(5).uniform(0, 255, (40, 28, 28, 1)).astype(np.float32)
    hasher = heads[24]
    centres = model.training_centres(hasher, train)
    training_codes = hasher.predict(train.images, verbose=0)
    np.testing.assert_array_equal(centres, centres_reference(training_codes, train.labels, 10))
    query = model.build_query_hasher(hasher, centres)
    assert query.inputs[0] is hasher.inputs[0] and query.output_shape == (None, 24)
    expected = nearest_reference(hasher.predict(queries, verbose=0), centres)
    assert len(np.unique(expected, axis=0)) > 1  # more than one centre is reached
    np.testing.assert_array_equal(query.predict(queries, verbose=0), expected)
    query.save(tmp_path / "query.keras")
    loaded = keras.saving.load_model(tmp_path / "query.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(queries, verbose=0), expected)


def test_query_hashers_of_heads_take_each_lengths_centres(heads, train):
    queries = np.random.default_rng(6).uniform(0, 255, (20, 28, 28, 1)).astype(np.float32)
    centres = model.training_centres(heads, train)
    assert set(centres) == {12, 24}
    query = model.build_query_hashers(heads, centres)
    codes = model.encode_heads(query, queries)  # the query heads still share one input
    for bits, head in heads.items():
        np.testing.assert_array_equal(centres[bits], model.training_centres(head, train))
        np.testing.assert_array_equal(
            codes[bits], nearest_reference(head.predict(queries, verbose=0), centres[bits]))


def test_query_hasher_refuses_a_mismatch_of_hasher_and_centres(heads, train):
    classifier = model.build_classifier(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 10)
    graded = model.build_graded_hasher(classifier, 12)
    centres = class_codebook(10, 12)
    for hasher, given, match in (
            (heads[12], None, "`centres`.*needed for a hasher that is not graded"),
            (heads[24], centres, "hasher's 24 bits, got shape \\(10, 12\\)"),
            (graded, centres, "`centres` must be None for a graded hasher"),
            ("hasher", centres, "must be a keras.Model, got str")):
        with pytest.raises(TfhashError, match=match):
            model.build_query_hasher(hasher, given)
    with pytest.raises(TfhashError, match=r"code lengths \[12, 24\], got \[12\]"):
        model.build_query_hashers(heads, {12: centres})
    with pytest.raises(TfhashError, match="labelled images"):
        model.training_centres(heads, train.images)
