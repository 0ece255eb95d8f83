"""Asymmetric graded codes: queries on their likeliest class's codeword (PredictedClassCodes,
build_query_hasher), the database graded (GradedClassCodes)."""

import keras
import numpy as np
import pytest
from test_graded_codes import random_probabilities

from tfhash import model
from tfhash.codebooks import arrange_codebook, class_codebook
from tfhash.errors import TfhashError
from tfhash.layers import GradedClassCodes, PredictedClassCodes
from tfhash.metrics import mean_average_precision


@pytest.mark.parametrize("classes, bits", [(10, 12), (4, 8), (100, 64)])
def test_query_codes_are_the_likeliest_classes_codewords(classes, bits):
    book = class_codebook(classes, bits)
    probs = random_probabilities(np.random.default_rng(bits), 400, classes)
    codes = keras.ops.convert_to_numpy(PredictedClassCodes(book)(probs))
    expected = np.array([book[max(range(classes), key=lambda c: p[c])] for p in probs])
    np.testing.assert_array_equal(codes, expected)


def test_a_query_ranks_its_class_first_the_sure_images_before_the_unsure():
    """From a query on class a's codeword, every database image the classifier gives to a
    comes before every other image, and among those with the same runner-up a surer one
    (smaller runner-up share) never comes after a less sure one."""
    book = class_codebook(10, 12)
    probs = random_probabilities(np.random.default_rng(3), 4000, 10)
    database = keras.ops.convert_to_numpy(GradedClassCodes(book)(probs))
    top2 = np.argsort(-probs, axis=1)[:, :2]
    share = np.take_along_axis(probs, top2, 1)
    share = share[:, 1] / share.sum(1)
    for a in range(10):
        query = keras.ops.convert_to_numpy(PredictedClassCodes(book)(np.eye(10)[[a]]))[0]
        distance = (database != query).sum(1)
        mine = top2[:, 0] == a
        assert distance[mine].max() < distance[~mine].min()
        for b in set(top2[mine, 1]):
            group = mine & (top2[:, 1] == b)
            order = np.argsort(share[group], kind="stable")
            assert (np.diff(distance[group][order]) >= 0).all()


def test_an_unsure_query_meets_the_sure_images_of_its_class_before_the_unsure_ones():
    """A hand-made case: class-0 images the classifier is sure of, and class-1 images it
    wrongly gives to class 0 with class 1 as runner-up. A symmetric code puts an unsure
    class-0 query exactly where those mistaken images sit, so they rank first; on its
    class's codeword it meets the sure class-0 images first (AP 1)."""
    book = class_codebook(2, 12)
    sure, unsure = [0.95, 0.05], [0.6, 0.4]
    probs = np.array([sure] * 5 + [unsure] * 5 + [sure[::-1]] * 5, np.float32)
    labels = np.repeat([0, 1, 1], 5)
    query = np.array([unsure], np.float32)
    graded = GradedClassCodes(book)
    db = keras.ops.convert_to_numpy(graded(probs))
    symmetric = mean_average_precision(keras.ops.convert_to_numpy(graded(query)), [0], db,
                                       labels)
    asymmetric = mean_average_precision(
        keras.ops.convert_to_numpy(PredictedClassCodes(book)(query)), [0], db, labels)
    # by hand: symmetric ranks the 5 mistaken images first, then the 5 of class 0
    assert symmetric == pytest.approx(np.mean([k / (5 + k) for k in range(1, 6)]))
    assert asymmetric == pytest.approx(1.0)


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(2)
    return model.build_classifier(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 10)


def test_query_hasher_codes_with_the_database_hashers_arranged_codebook(classifier, tmp_path):
    images = np.random.default_rng(0).random((32, 28, 28, 1), np.float32)
    similarity = np.zeros((10, 10))
    similarity[2, 7] = similarity[7, 2] = 1.0
    graded = model.build_graded_hasher(classifier, 24, similarity=similarity)
    arranged = arrange_codebook(class_codebook(10, 24), similarity)
    assert not np.array_equal(arranged, class_codebook(10, 24))
    query = model.build_query_hasher(graded)
    assert query.inputs[0] is graded.inputs[0] and query.output_shape == (None, 24)
    probs = classifier.predict(images, verbose=0)
    np.testing.assert_array_equal(query.predict(images, verbose=0), arranged[probs.argmax(1)])
    # from a reloaded database encoder too, and the query encoder itself saves and reloads
    graded.save(tmp_path / "graded.keras")
    reloaded = keras.saving.load_model(tmp_path / "graded.keras", safe_mode=True)
    again = model.build_query_hasher(reloaded)
    again.save(tmp_path / "query.keras")
    loaded = keras.saving.load_model(tmp_path / "query.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), arranged[probs.argmax(1)])


def test_query_hashers_take_the_dict_that_build_graded_hashers_returns(classifier):
    hashers = model.build_query_hashers(model.build_graded_hashers(classifier, (12, 32)))
    assert {bits: h.output_shape for bits, h in hashers.items()} == {12: (None, 12),
                                                                     32: (None, 32)}
    for bad in ({}, [classifier], None):
        with pytest.raises(TfhashError, match="`hashers` must be a non-empty dict"):
            model.build_query_hashers(bad)
