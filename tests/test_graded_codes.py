"""Class codebooks and class-graded codes, against brute force and a loop-by-loop reference."""

import itertools

import keras
import numpy as np
import pytest

from tfhash import data, model
from tfhash.codebooks import (
    arrange_codebook,
    capped_codebook,
    class_codebook,
    class_similarity,
    min_distance,
    named_codebook,
)
from tfhash.errors import TfhashError
from tfhash.layers import (
    FittedClassCodes,
    GradedClassCodes,
    NearestCodeword,
    PredictedClassCodes,
)


def brute_min_distance(book):
    return min(int((a != b).sum()) for a, b in itertools.combinations(book, 2))


def graded_reference(probs, book):
    """The rule of GradedClassCodes' docstring, one image at a time."""
    d_min = brute_min_distance(book)
    out = []
    for p in probs:
        a, b = np.argsort(-p, kind="stable")[:2]
        differ = np.flatnonzero(book[a] != book[b])
        shift = min((d_min - 1) // 2, int(np.round(len(differ) * p[b] / (p[a] + p[b]))))
        code = book[a].astype(np.float32)
        code[differ[:shift]] = book[b, differ[:shift]]
        out.append(code)
    return np.array(out)


def test_codebook_for_ten_classes_of_12_bits_reaches_the_largest_possible_distance():
    book = class_codebook(10, 12)
    assert book.shape == (10, 12) and book.dtype == np.int8
    assert np.isin(book, (-1, 1)).all() and len({row.tobytes() for row in book}) == 10
    # 6 is the most: no 5 words of 12 bits are pairwise 7 or more apart (A(12, 7) = 4)
    assert brute_min_distance(book) == min_distance(book) == 6
    # the spread arrange_codebook has to work with (the README quotes it)
    pairs = [int((a != b).sum()) for a, b in itertools.combinations(book, 2)]
    assert {d: pairs.count(d) for d in set(pairs)} == {6: 36, 8: 8, 12: 1}


def test_codebook_matches_the_best_of_every_subset_on_a_small_case():
    words = [np.array(w) * 2 - 1 for w in itertools.product((0, 1), repeat=4)]
    best = max(brute_min_distance(s) for s in itertools.combinations(words, 4))
    assert brute_min_distance(class_codebook(4, 4)) == best == 2


def test_long_codebooks_depend_on_the_seed_and_short_ones_do_not():
    assert np.array_equal(class_codebook(10, 12, seed=1), class_codebook(10, 12, seed=2))
    assert not np.array_equal(class_codebook(10, 48, seed=1), class_codebook(10, 48, seed=2))
    assert np.array_equal(class_codebook(10, 48, seed=1), class_codebook(10, 48, seed=1))
    assert brute_min_distance(class_codebook(10, 48)) >= 20


@pytest.mark.parametrize("args, match", [
    ((1, 12), "num_classes"), ((5, 2), "num_classes"), ((True, 12), "num_classes"),
    ((10, 0), "bits"), ((10, 12, "0"), "seed"),
])
def test_codebook_rejects_bad_arguments(args, match):
    with pytest.raises(TfhashError, match=match):
        class_codebook(*args)


def test_capped_codebook_follows_its_rule_word_by_word():
    """Each codeword after class_codebook's first is, among the words 6 to 8 from all
    before it, one of largest total distance to them (a loop over every word); the default
    cap is 8, the least that completes; no complementary pair, fewer pairs at 6 than
    class_codebook's 36."""
    book = capped_codebook(10, 12)
    assert book.shape == (10, 12) and book.dtype == np.int8
    np.testing.assert_array_equal(book[0], class_codebook(10, 12)[0])
    words = np.array(list(itertools.product((-1, 1), repeat=12)))
    for k in range(1, 10):
        d = (words[:, None, :] != book[None, :k]).sum(-1)
        allowed = (d.min(1) >= 6) & (d.max(1) <= 8)
        assert (book[k] != book[:k]).sum() == d[allowed].sum(1).max()
    pairs = [int((a != b).sum()) for a, b in itertools.combinations(book, 2)]
    assert {d: pairs.count(d) for d in set(pairs)} == {6: 32, 8: 13}
    np.testing.assert_array_equal(capped_codebook(10, 12, 6, 8), book)
    with pytest.raises(TfhashError, match="6 to 7 bits apart.*`max_distance`"):
        capped_codebook(10, 12, max_distance=7)


@pytest.mark.parametrize("bits", [24, 48])
def test_long_capped_codebooks_keep_every_pair_in_the_least_cap_that_completes(bits):
    floor = min_distance(class_codebook(10, bits, seed=3))
    book = capped_codebook(10, bits, seed=3)
    pairs = [int((a != b).sum()) for a, b in itertools.combinations(book, 2)]
    assert min(pairs) >= floor and len({row.tobytes() for row in book}) == 10
    with pytest.raises(TfhashError, match="max_distance"):
        capped_codebook(10, bits, floor, max(pairs) - 1, seed=3)
    assert not np.array_equal(book, capped_codebook(10, bits, seed=4))


@pytest.mark.parametrize("kwargs, match", [
    ({"min_distance": 13}, "min_distance"), ({"min_distance": 6, "max_distance": 5},
                                             "max_distance"),
    ({"min_distance": 7}, "lower `min_distance`"), ({"num_classes": 1}, "num_classes"),
])
def test_capped_codebook_rejects_bad_arguments(kwargs, match):
    with pytest.raises(TfhashError, match=match):
        capped_codebook(**{"num_classes": 10, "bits": 12, **kwargs})


def test_codebooks_by_name():
    np.testing.assert_array_equal(named_codebook("capped", 10, 12), capped_codebook(10, 12))
    np.testing.assert_array_equal(named_codebook("max-min", 10, 48, seed=2),
                                  class_codebook(10, 48, seed=2))
    with pytest.raises(TfhashError, match="`codebook` must be one of"):
        named_codebook("spread", 10, 12)


def random_probabilities(rng, n, classes):
    """Probabilities from sure to unsure: Dirichlet draws at several concentrations."""
    parts = [rng.dirichlet(np.full(classes, alpha), n // 4) for alpha in (0.05, 0.2, 1.0, 5.0)]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("classes, bits", [(10, 12), (10, 32), (4, 8)])
def test_graded_codes_follow_the_rule_image_by_image(classes, bits):
    rng = np.random.default_rng(bits)
    book = class_codebook(classes, bits)
    probs = random_probabilities(rng, 400, classes)
    layer = GradedClassCodes(book)
    codes = keras.ops.convert_to_numpy(layer(probs))
    np.testing.assert_array_equal(codes, graded_reference(probs, book))
    # every shift from 0 to the cap occurs, so the comparison covers the whole rule
    shifts = (codes != book[probs.argmax(1)]).sum(1)
    assert set(shifts) == set(range(layer.max_shift + 1))


def test_each_code_stays_nearest_its_likeliest_class_and_sure_images_sit_on_it():
    rng = np.random.default_rng(0)
    book = class_codebook(10, 24)
    probs = random_probabilities(rng, 400, 10)
    codes = keras.ops.convert_to_numpy(GradedClassCodes(book)(probs))
    distances = (codes[:, None, :] != book[None, :, :]).sum(-1)
    top = probs.argmax(1)
    nearest = np.sort(distances, axis=1)
    assert (distances.argmin(1) == top).all() and (nearest[:, 0] < nearest[:, 1]).all()
    sure = keras.ops.convert_to_numpy(GradedClassCodes(book)(np.eye(10, dtype=np.float32)))
    np.testing.assert_array_equal(sure, book)


def test_an_unsure_image_ranks_after_the_sure_ones_of_its_class():
    book = class_codebook(3, 12)
    probs = np.array([[0.98, 0.01, 0.01], [0.55, 0.45, 0.0]], np.float32)
    codes = keras.ops.convert_to_numpy(GradedClassCodes(book)(probs))
    query = book[0]
    assert (codes[0] != query).sum() == 0 < (codes[1] != query).sum()


@pytest.mark.parametrize("layer", [GradedClassCodes, PredictedClassCodes, NearestCodeword])
@pytest.mark.parametrize("codebook, match", [
    ([[1, -1, 1]], "num_classes >= 2"), ([[1, 0], [-1, 1]], r"\+-1"), ([1, -1], "shape"),
])
def test_class_code_layers_reject_bad_codebooks(layer, codebook, match):
    with pytest.raises(TfhashError, match=f"{layer.__name__}: .*{match}"):
        layer(codebook)


def test_graded_codes_reject_a_codebook_with_equal_rows():
    with pytest.raises(TfhashError, match="distinct"):
        GradedClassCodes([[1, -1], [1, -1]])


@pytest.mark.parametrize("layer", [GradedClassCodes, PredictedClassCodes])
def test_class_code_layers_reject_probabilities_over_another_number_of_classes(layer):
    with pytest.raises(TfhashError, match=f"{layer.__name__}: expected probabilities over 3"):
        layer(class_codebook(3, 8))(np.full((2, 4), 0.25, np.float32))


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(1)
    backbone = model.get_backbone("mnist_cnn", (28, 28, 1), width=4)
    return model.build_classifier(backbone, 10)


def test_graded_hasher_codes_its_classifiers_probabilities(classifier):
    images = np.random.default_rng(0).random((16, 28, 28, 1), np.float32)
    hasher = model.build_graded_hasher(classifier, 24)
    assert hasher.output_shape == (None, 24)
    expected = graded_reference(classifier.predict(images, verbose=0), class_codebook(10, 24))
    np.testing.assert_array_equal(hasher.predict(images, verbose=0), expected)


def test_graded_hasher_saves_and_reloads_in_safe_mode(classifier, tmp_path):
    images = np.random.default_rng(1).random((16, 28, 28, 1), np.float32)
    hasher = model.build_graded_hasher(classifier, 12)
    hasher.save(tmp_path / "graded.keras")
    loaded = keras.saving.load_model(tmp_path / "graded.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  hasher.predict(images, verbose=0))


def test_graded_hashers_share_the_classifiers_input_and_take_a_list_of_lengths(classifier):
    hashers = model.build_graded_hashers(classifier, (12, 24))
    assert {bits: h.output_shape for bits, h in hashers.items()} == {12: (None, 12),
                                                                     24: (None, 24)}
    assert hashers[12].inputs[0] is hashers[24].inputs[0] is classifier.inputs[0]
    for bad in (12, ()):
        with pytest.raises(TfhashError, match="bits_list"):
            model.build_graded_hashers(classifier, bad)


def test_graded_hasher_refuses_what_is_not_a_classifier(classifier):
    with pytest.raises(TfhashError, match="classifier"):
        model.build_graded_hasher("classifier", 12)
    flat = keras.Model(classifier.inputs, keras.layers.Flatten()(classifier.inputs[0]))
    with pytest.raises(TfhashError, match="classifier"):
        model.build_graded_hasher(keras.Model(flat.inputs, keras.layers.Reshape((28, 28))(
            flat.outputs[0])), 12)


def test_class_similarity_against_a_loop_over_images():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 3, size=50)  # class 3 has no image
    expected = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            if a != b:
                expected[a, b] = sum(probs[labels == a, b].mean() if (labels == a).any() else 0
                                     for a, b in ((a, b), (b, a)))
    np.testing.assert_allclose(class_similarity(probs, labels), expected)


@pytest.mark.parametrize("probs, labels, match", [
    (np.ones(5), np.zeros(5, int), "probabilities"),
    (np.full((2, 3), np.nan), np.zeros(2, int), "probabilities"),
    (np.ones((2, 3)), np.array([0, 3]), "labels"),
    (np.ones((2, 3)), np.array([0.0, 1.0]), "labels"),
    (np.ones((2, 3)), np.zeros(3, int), "labels"),
])
def test_class_similarity_rejects_bad_arguments(probs, labels, match):
    with pytest.raises(TfhashError, match=match):
        class_similarity(probs, labels)


def arrangement_cost(book, similarity):
    distances = (book[:, None, :] != book[None, :, :]).sum(-1)
    return float((similarity * distances).sum())


def test_arranged_codebook_reaches_the_best_order_of_every_permutation():
    rng = np.random.default_rng(1)
    book = class_codebook(7, 10)
    for _ in range(3):
        similarity = rng.random((7, 7)) ** 4  # a few pairs much alike
        similarity = similarity + similarity.T
        np.fill_diagonal(similarity, 0)
        best = min(arrangement_cost(book[list(order)], similarity)
                   for order in itertools.permutations(range(7)))
        arranged = arrange_codebook(book, similarity)
        assert sorted(map(bytes, arranged)) == sorted(map(bytes, book))  # same codewords
        assert arrangement_cost(arranged, similarity) == pytest.approx(best)
        assert arrangement_cost(arranged, similarity) < arrangement_cost(book, similarity)


def test_arranging_many_classes_beats_every_random_order_and_no_swap_improves_it():
    rng = np.random.default_rng(2)
    book = class_codebook(300, 32)
    similarity = rng.random((300, 300)) ** 8
    similarity = similarity + similarity.T
    np.fill_diagonal(similarity, 0)
    arranged = arrange_codebook(book, similarity, restarts=1)
    cost = arrangement_cost(arranged, similarity)
    assert cost < min(arrangement_cost(book[rng.permutation(300)], similarity)
                      for _ in range(20))
    assert min_distance(arranged) == min_distance(book)
    for i, j in rng.integers(0, 300, size=(50, 2)):  # a local optimum: no swap helps
        swapped = arranged.copy()
        swapped[[i, j]] = swapped[[j, i]]
        assert arrangement_cost(swapped, similarity) >= cost - 1e-6


@pytest.mark.parametrize("similarity, kwargs, match", [
    (np.ones((3, 3)), {}, "similarity"),
    (np.ones((4, 4)), {"codebook": np.ones(6)}, "codebook"),
    (np.triu(np.ones((4, 4))), {}, "similarity"),
    (-np.ones((4, 4)), {}, "similarity"),
    (np.ones((4, 4)), {"restarts": 0}, "restarts"),
])
def test_arrange_codebook_rejects_bad_arguments(similarity, kwargs, match):
    kwargs = {"codebook": class_codebook(4, 6), **kwargs}
    with pytest.raises(TfhashError, match=match):
        arrange_codebook(similarity=similarity, **kwargs)


def test_graded_hasher_with_a_similarity_codes_with_the_arranged_codebook(classifier):
    similarity = np.zeros((10, 10))
    similarity[2, 7] = similarity[7, 2] = 1.0
    hasher = model.build_graded_hasher(classifier, 24, similarity=similarity)
    (layer,) = [lay for lay in hasher.layers if isinstance(lay, GradedClassCodes)]
    expected = arrange_codebook(class_codebook(10, 24), similarity)
    np.testing.assert_array_equal(layer.codebook, expected)
    assert not np.array_equal(expected, class_codebook(10, 24))


def test_graded_hasher_takes_its_codebook_rule_by_name(classifier):
    similarity = np.zeros((10, 10))
    similarity[2, 7] = similarity[7, 2] = 1.0
    hashers = model.build_graded_hashers(classifier, (12,), similarity=similarity,
                                         temperature=0.15, codebook="capped")
    (layer,) = [lay for lay in hashers[12].layers if isinstance(lay, FittedClassCodes)]
    np.testing.assert_array_equal(layer.codebook,
                                  arrange_codebook(capped_codebook(10, 12), similarity))
    with pytest.raises(TfhashError, match="`codebook` must be one of"):
        model.build_graded_hasher(classifier, 12, codebook="capped-8")


@pytest.fixture(scope="module")
def tiny_split():
    split = data.make_split(data.load_dataset("mnist-5k"), "cnnh", seed=0, val_fraction=0.0)
    return data.Split("cnnh", 0, split.train.take(slice(0, 256)), split.val,
                      split.query.take(slice(0, 64)), split.database.take(slice(0, 256)))


def test_fit_graded_codes_its_phase1_classifier(tiny_split):
    config = model.TrainConfig(bits=(8, 12), pretrain_epochs=1, backbone_width=4)
    result = model.fit_graded(tiny_split, config, verbose=0)
    assert set(result.hashers) == {8, 12} and "pretrain" in result.wall_s
    assert not any(phase.startswith("hash") for phase in result.wall_s)
    images = tiny_split.query.images
    probs = result.classifier.predict(images, verbose=0)
    train = tiny_split.train
    similarity = class_similarity(result.classifier.predict(train.images, verbose=0),
                                  train.labels)
    for bits, hasher in result.hashers.items():  # arranged by the training images
        book = arrange_codebook(class_codebook(10, bits), similarity)
        assert not np.array_equal(book, class_codebook(10, bits))
        np.testing.assert_array_equal(model.encode(hasher, images, verbose=0),
                                      graded_reference(probs, book))
    plain = model.fit_graded(tiny_split, config, verbose=0, arrange=False)
    np.testing.assert_array_equal(
        model.encode(plain.hashers[12], images, verbose=0),
        graded_reference(plain.classifier.predict(images, verbose=0), class_codebook(10, 12)))


def test_fit_graded_with_flip_average_places_codes_from_mirror_averaged_probabilities(
        tiny_split):
    config = model.TrainConfig(bits=(12,), pretrain_epochs=1, backbone_width=4)
    result = model.fit_graded(tiny_split, config, verbose=0, average="flip", arrange=False)
    images = tiny_split.query.images
    probs = (result.classifier.predict(images, verbose=0)
             + result.classifier.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_array_equal(model.encode(result.hashers[12], images, verbose=0),
                                  graded_reference(probs, class_codebook(10, 12)))


def test_fit_graded_refuses_an_unknown_average_or_arrange_before_training(tiny_split):
    config = model.TrainConfig(bits=12, pretrain_epochs=1000)
    with pytest.raises(TfhashError, match="`average` must be one of"):
        model.fit_graded(tiny_split, config, average="mirror")
    with pytest.raises(TfhashError, match="`arrange` must be True or False"):
        model.fit_graded(tiny_split, config, arrange="yes")
    with pytest.raises(TfhashError, match="`codebook` must be one of"):
        model.fit_graded(tiny_split, config, codebook="greedy")


def test_fit_graded_in_mixed_precision_returns_float32_encoders(tiny_split):
    config = model.TrainConfig(bits=(12,), pretrain_epochs=1, backbone_width=4,
                               precision="mixed_bfloat16", ensemble_size=2)
    hasher = model.fit_graded(tiny_split, config, verbose=0).hashers[12]

    def layers(m):
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    assert {layer.dtype_policy.name for layer in layers(hasher)} == {"float32"}


def test_fit_graded_refuses_a_config_without_pretraining(tiny_split):
    with pytest.raises(TfhashError, match="pretrain"):
        model.fit_graded(tiny_split, model.TrainConfig(bits=12, pretrain=False))


def test_graded_codes_scale_to_a_thousand_classes():
    rng = np.random.default_rng(3)
    book = class_codebook(1000, 64)
    probs = random_probabilities(rng, 64, 1000)
    codes = keras.ops.convert_to_numpy(GradedClassCodes(book)(probs))
    np.testing.assert_array_equal(codes, graded_reference(probs, book))
