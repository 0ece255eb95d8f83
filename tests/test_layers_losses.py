import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfhash import ExactHashingLoss, ExponentiatedHashingLoss, HashingHead
from tfhash.errors import TfhashError
from tfhash.losses import ContrastiveHashingLoss, OrthoHashLoss


def numpy_exponentiated_loss(labels, u, margin, temperature, binary=False):
    """The DESIGN.md definition written out pair by pair."""
    n, bits = u.shape
    if binary:
        u = np.where(u >= 0, 1.0, -1.0)
    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            s = 1.0 if labels[i] == labels[j] else -1.0
            a = float(np.dot(u[i], u[j])) / bits
            value = np.exp(-min(s * a, margin) / temperature)
            (pos if s > 0 else neg).append(value)
    if pos and neg:
        return 0.5 * np.mean(pos) + 0.5 * np.mean(neg)
    return np.mean(pos or neg)


def test_loss_matches_hand_computed_value():
    # Two items of class 0, one of class 1, 2 bits, T = 1, m = 1.
    u = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32)
    y = np.array([0, 0, 1])
    # positive pairs (0,1),(1,0): a = 0 -> exp(0) = 1
    # negative pairs (0,2),(2,0),(1,2),(2,1): a = -0.5, s*a = 0.5 -> exp(-0.5)
    expected = 0.5 * 1.0 + 0.5 * np.exp(-0.5)
    loss = ExponentiatedHashingLoss(margin=1.0, temperature=1.0)
    assert float(loss(y, u)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("margin, temperature", [(1.0, 0.5), (0.3, 0.2), (0.7, 2.0)])
def test_loss_matches_numpy_definition(margin, temperature):
    rng = np.random.default_rng(0)
    u = np.tanh(rng.normal(size=(16, 12))).astype(np.float32)
    y = rng.integers(0, 4, 16)
    got = float(ExponentiatedHashingLoss(margin=margin, temperature=temperature)(y, u))
    assert got == pytest.approx(numpy_exponentiated_loss(y, u, margin, temperature), rel=1e-5)
    metric = ExactHashingLoss(margin=margin, temperature=temperature)
    metric.update_state(y, u)
    exact = numpy_exponentiated_loss(y, u, margin, temperature, binary=True)
    assert float(metric.result()) == pytest.approx(exact, rel=1e-5)


def test_multi_hot_labels_share_at_least_one_label():
    u = np.tanh(np.random.default_rng(1).normal(size=(5, 8))).astype(np.float32)
    multi = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32)
    n = len(u)
    s = np.where(multi @ multi.T > 0, 1.0, -1.0)
    a = u @ u.T / 8
    pair = np.exp(-np.minimum(s * a, 1.0) / 0.5)
    off = ~np.eye(n, dtype=bool)
    expected = 0.5 * pair[(s > 0) & off].mean() + 0.5 * pair[(s < 0) & off].mean()
    got = float(ExponentiatedHashingLoss(temperature=0.5)(multi, u))
    assert got == pytest.approx(expected, rel=1e-5)


def test_quantization_term_is_added():
    u = np.array([[0.5, -0.5], [0.9, 0.1]], np.float32)
    y = np.array([0, 1])
    base = float(ExponentiatedHashingLoss()(y, u))
    with_q = float(ExponentiatedHashingLoss(quantization=0.1)(y, u))
    penalty = np.mean((np.abs(u) - 1) ** 2)
    assert with_q - base == pytest.approx(0.1 * penalty, rel=1e-5)


@pytest.mark.parametrize(
    "labels, logits",
    [
        (np.zeros(8), np.random.default_rng(0).normal(size=(8, 16))),  # no negative pairs
        (np.arange(8), np.random.default_rng(1).normal(size=(8, 16))),  # no positive pairs
        (np.array([0, 1, 0, 1]), np.full((4, 16), 50.0)),  # saturated tanh
        (np.array([3]), np.ones((1, 16))),  # a single item: no pairs at all
    ],
)
def test_gradients_are_finite_on_edge_batches(labels, logits):
    loss = ExponentiatedHashingLoss(margin=0.5, temperature=0.02, quantization=0.1)
    z = tf.Variable(logits.astype(np.float32))
    with tf.GradientTape() as tape:
        value = loss(labels.astype(np.float32), tf.tanh(z))
    grad = tape.gradient(value, z)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


def test_head_binary_mode_and_any_feature_rank():
    features = keras.Input((4, 4, 8))
    relaxed = HashingHead(12, name="h")(features)
    assert relaxed.shape == (None, 12)
    head = HashingHead(12, output_mode="binary")
    out = head(np.random.default_rng(0).normal(size=(3, 4, 4, 8)).astype(np.float32))
    assert set(np.unique(out.numpy())) <= {-1.0, 1.0}


def test_keras_round_trip_with_safe_mode(tmp_path):
    inputs = keras.Input((10,))
    outputs = HashingHead(24, kernel_regularizer="l2")(keras.layers.Dense(16)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss=ExponentiatedHashingLoss(margin=0.6, temperature=0.3, quantization=0.01),
        metrics=[ExactHashingLoss(margin=0.6, temperature=0.3)],
    )
    x = np.random.default_rng(0).normal(size=(32, 10)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 32)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert isinstance(loaded.loss, ExponentiatedHashingLoss)
    assert loaded.loss.get_config()["margin"] == 0.6
    assert loaded.loss.get_config()["temperature"] == 0.3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"margin": 0}, "margin"),
        ({"margin": 1.5}, "margin"),
        ({"temperature": 0.001}, "temperature"),
        ({"quantization": -1}, "quantization"),
        ({"label_mode": "dense"}, "label_mode"),
    ],
)
def test_loss_bad_arguments(kwargs, match):
    with pytest.raises(TfhashError, match=match):
        ExponentiatedHashingLoss(**kwargs)


@pytest.mark.parametrize("make, kwargs, message", [
    (ExactHashingLoss, {"temperature": 0.0}, "`temperature` must be a number >= 0.02, got 0.0"),
    (ExactHashingLoss, {"negative_margin": True},
     "`negative_margin` must be None or a number in [0, 1], got True"),
    (ContrastiveHashingLoss, {"margin": 0}, "`margin` must be a number in (0, 4], got 0"),
    (ContrastiveHashingLoss, {"margin": "2"}, "`margin` must be a number in (0, 4], got '2'"),
    (lambda **kw: OrthoHashLoss(10, 12, **kw), {"scale": 0},
     "`scale` must be a number > 0, got 0"),
    (lambda **kw: OrthoHashLoss(10, 12, **kw), {"margin": 1.0},
     "`margin` must be a number in [0, 1), got 1.0"),
])
def test_every_loss_names_a_bad_number_and_its_range(make, kwargs, message):
    with pytest.raises(TfhashError) as raised:
        make(**kwargs)
    assert str(raised.value) == message


@pytest.mark.parametrize("bits", [0, 1025, 2.5, "12"])
def test_head_bad_bits(bits):
    with pytest.raises(TfhashError, match="bits"):
        HashingHead(bits)


def balanced_mean(labels, pair):
    s = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    return 0.5 * pair[s & off].mean() + 0.5 * pair[~s & off].mean()


def test_peer_losses_match_numpy_definitions(tmp_path):
    from tfhash.losses import ContrastiveHashingLoss, OrthoHashLoss, PairwiseLikelihoodLoss

    rng = np.random.default_rng(0)
    u = np.tanh(rng.normal(size=(12, 16))).astype(np.float32)
    y = rng.integers(0, 3, 12)
    s01 = (y[:, None] == y[None, :]).astype(np.float64)
    theta = 0.5 * u @ u.T
    want = balanced_mean(y, np.log1p(np.exp(theta)) - s01 * theta)
    want += 0.1 * np.mean((np.abs(u) - 1) ** 2)
    assert float(PairwiseLikelihoodLoss(quantization=0.1)(y, u)) == pytest.approx(want, rel=1e-5)

    d = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1) / 16
    pair = np.where(s01 > 0, d / 2, np.maximum(2.0 - d, 0) / 2)
    want = balanced_mean(y, pair) + 0.01 * np.mean(np.abs(np.abs(u) - 1))
    assert float(ContrastiveHashingLoss()(y, u)) == pytest.approx(want, rel=1e-5)

    loss = OrthoHashLoss(num_classes=3, bits=16, scale=8, margin=0.2, quantization=0.0)
    cos = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ loss.codewords.T
    logits = 8 * (cos - 0.2 * np.eye(3)[y])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(loss(y, u)) == pytest.approx(-logp[np.arange(12), y].mean(), rel=1e-5)
    restored = OrthoHashLoss.from_config(loss.get_config())
    np.testing.assert_array_equal(restored.codewords, loss.codewords)


def test_negative_margin_applies_to_dissimilar_pairs_only():
    rng = np.random.default_rng(3)
    u = np.tanh(rng.normal(size=(10, 8))).astype(np.float32)
    y = rng.integers(0, 3, 10)
    s = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    a = u @ u.T / 8
    m = np.where(s > 0, 0.9, 0.1)
    expected = balanced_mean(y, np.exp(-np.minimum(s * a, m) / 0.4))
    loss = ExponentiatedHashingLoss(margin=0.9, negative_margin=0.1, temperature=0.4)
    assert float(loss(y, u)) == pytest.approx(expected, rel=1e-5)
    assert ExponentiatedHashingLoss.from_config(loss.get_config()).negative_margin == 0.1


def numpy_soft_pair_loss(p, similar, dissimilar):
    """Soft labels written out pair by pair: a pair weighs t = p_i . p_j on the similar side
    and 1 - t on the dissimilar one, each side normalized to half the total weight."""
    n = len(p)
    pos = neg = pos_mass = neg_mass = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                t = float(p[i] @ p[j])
                pos += t * similar[i, j]
                neg += (1 - t) * dissimilar[i, j]
                pos_mass, neg_mass = pos_mass + t, neg_mass + 1 - t
    return 0.5 * pos / pos_mass + 0.5 * neg / neg_mass


def mixed_labels(rng, n, classes):
    """Rows of class probabilities as mixup makes them: two classes blended."""
    lam = rng.uniform(0, 1, n)[:, None]
    eye = np.eye(classes)
    return (lam * eye[rng.integers(0, classes, n)]
            + (1 - lam) * eye[rng.integers(0, classes, n)]).astype(np.float32)


def test_soft_labels_weigh_each_side_of_a_pair_by_the_chance_it_is_similar():
    from tfhash.losses import ContrastiveHashingLoss, PairwiseLikelihoodLoss

    rng = np.random.default_rng(4)
    u = np.tanh(rng.normal(size=(9, 12))).astype(np.float64)
    p = mixed_labels(rng, 9, 3).astype(np.float64)
    a = u @ u.T / 12
    want = numpy_soft_pair_loss(p, np.exp(-np.minimum(a, 1.0) / 0.5),
                                np.exp(-np.minimum(-a, 0.0) / 0.5))
    loss = ExponentiatedHashingLoss(negative_margin=0.0, label_mode="soft")
    assert float(loss(p.astype(np.float32), u.astype(np.float32))) == pytest.approx(want, rel=1e-5)
    theta = 0.5 * u @ u.T
    want = numpy_soft_pair_loss(p, np.log1p(np.exp(-theta)), np.log1p(np.exp(theta)))
    got = PairwiseLikelihoodLoss(quantization=0.0, label_mode="soft")(p.astype(np.float32),
                                                                       u.astype(np.float32))
    assert float(got) == pytest.approx(want, rel=1e-5)
    d = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1) / 12
    want = numpy_soft_pair_loss(p, d / 2, np.maximum(2.0 - d, 0) / 2)
    got = ContrastiveHashingLoss(quantization=0.0, label_mode="soft")(p.astype(np.float32),
                                                                       u.astype(np.float32))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_one_hot_soft_labels_give_the_class_id_loss():
    rng = np.random.default_rng(6)
    u = np.tanh(rng.normal(size=(10, 8))).astype(np.float32)
    y = rng.integers(0, 3, 10)
    hot = np.eye(3, dtype=np.float32)[y]
    for margin, negative_margin in ((1.0, None), (0.8, 0.0)):
        sparse = ExponentiatedHashingLoss(margin, negative_margin=negative_margin)
        soft = ExponentiatedHashingLoss(margin, negative_margin=negative_margin,
                                        label_mode="soft")
        assert float(soft(hot, u)) == pytest.approx(float(sparse(y, u)), rel=1e-6)


def test_orthohash_greedy_codebook_spreads_the_codewords_and_round_trips():
    from tfhash.codebooks import min_distance
    from tfhash.losses import OrthoHashLoss

    greedy = OrthoHashLoss(num_classes=10, bits=12, codebook="greedy")
    words = np.sign(greedy.codewords).astype(np.int8)
    np.testing.assert_allclose(np.abs(greedy.codewords), 1 / np.sqrt(12), rtol=1e-6)
    # 10 words of 12 bits can be at most 6 apart (Plotkin); random words are far closer
    assert min_distance(words) == 6
    randoms = [min_distance(np.sign(OrthoHashLoss(10, 12, seed=s).codewords).astype(np.int8))
               for s in range(5)]
    assert max(randoms) < 6
    restored = OrthoHashLoss.from_config(greedy.get_config())
    assert restored.codebook == "greedy"
    np.testing.assert_array_equal(restored.codewords, greedy.codewords)
    with pytest.raises(ValueError, match="`codebook` must be one of"):
        OrthoHashLoss(10, 12, codebook="hadamard")
    given = -np.sign(greedy.codewords).astype(int)  # any +-1 rows of the right shape
    chosen = OrthoHashLoss(10, 12, codebook=given)
    np.testing.assert_allclose(chosen.codewords * np.sqrt(12), given, rtol=1e-6)
    np.testing.assert_array_equal(OrthoHashLoss.from_config(chosen.get_config()).codewords,
                                  chosen.codewords)
    with pytest.raises(ValueError, match=re.escape("codewords of shape (10, 12), got shape (9")):
        OrthoHashLoss(10, 12, codebook=given[:9])
    with pytest.raises(ValueError, match="`codebook` codewords must be"):
        OrthoHashLoss(10, 12, codebook=np.zeros((10, 12)))


def test_orthohash_takes_rows_of_class_probabilities():
    from tfhash.losses import OrthoHashLoss

    rng = np.random.default_rng(7)
    u = np.tanh(rng.normal(size=(6, 16))).astype(np.float32)
    p = mixed_labels(rng, 6, 4)
    loss = OrthoHashLoss(num_classes=4, bits=16, scale=8, margin=0.2, quantization=0.0)
    cos = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ loss.codewords.T
    logits = 8 * (cos - 0.2 * p)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(loss(p, u)) == pytest.approx(-(p * logp).sum(1).mean(), rel=1e-5)
    y = rng.integers(0, 4, 6)
    assert float(loss(np.eye(4, dtype=np.float32)[y], u)) == pytest.approx(float(loss(y, u)),
                                                                          rel=1e-6)
