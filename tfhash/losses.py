"""Pairwise hashing losses on relaxed codes, labels as class ids or multi-hot.

All losses here compare every pair of items in a batch. Two items are similar
(``s_ij = +1``) when they share a label, else dissimilar (``s_ij = -1``); pairs of an item
with itself are left out. Positive and negative pairs are weighted to equal total weight, so
the batch's class balance does not decide the loss. Each loss returns one value per sample
whose batch mean is the pair-weighted loss, so Keras' reductions, sample weights and
`tf.distribute` loss scaling behave as for any per-sample loss.
"""

import keras
import numpy as np
from keras import ops

from tfhash.codebooks import class_codebook
from tfhash.errors import check, check_int, check_non_negative, check_number, check_unit_interval

LABEL_MODES = ("auto", "sparse", "multi_hot", "soft")
FORMS = ("bilinear", "exact")
CODEBOOKS = ("random", "greedy")  # OrthoHashLoss's class codewords
MIN_TEMPERATURE = 0.02  # exp(1 / T) must stay finite in float32


def pair_overlap(y_true, label_mode="auto", y_other=None):
    """Chance ``t_ij`` in [0, 1] that row i of ``y_true`` and row j of ``y_other`` share a
    label: 1 or 0 for class ids ``(n,)`` / ``(n, 1)`` and multi-hot rows ``(n, classes)``
    (sharing at least one label); for soft labels (``label_mode="soft"``: rows of class
    probabilities, e.g. labels mixed by mixup) the dot product ``y_i . y_j``. ``y_other``
    defaults to ``y_true`` (all pairs within one batch).
    """
    y_true = ops.convert_to_tensor(y_true)
    y_other = y_true if y_other is None else ops.convert_to_tensor(y_other)
    if label_mode == "soft":
        rows, columns = ops.cast(y_true, "float32"), ops.cast(y_other, "float32")
        return ops.clip(ops.matmul(rows, ops.transpose(columns)), 0.0, 1.0)
    sparse = label_mode == "sparse" or (
        label_mode == "auto" and (len(y_true.shape) == 1 or y_true.shape[-1] == 1)
    )
    if sparse:
        same = ops.equal(ops.reshape(y_true, (-1,))[:, None], ops.reshape(y_other, (-1,))[None, :])
    else:
        hot = ops.cast(y_true > 0, "float32")
        other = ops.cast(y_other > 0, "float32")
        same = ops.matmul(hot, ops.transpose(other)) > 0
    return ops.cast(same, "float32")


def balanced_pair_weights(positive, negative, self_pairs=None, total=None):
    """Weights of the similar and the dissimilar side of each pair, each side summing to half
    of the total weight 1.

    ``positive`` and ``negative`` are the pairs' masses on each side (for hard labels a 0/1
    mask and its complement; for soft labels ``t_ij`` and ``1 - t_ij``, see
    `pair_overlap`). ``self_pairs`` marks the pairs of an item with itself (weight 0;
    default the diagonal). When a batch has only one side, that side gets all of the
    weight; a batch with no pairs gets weight 0 everywhere. ``total`` sums a mass over
    replicas (default: none).

    Returns:
        ``(positive, negative)``: the two weight matrices.
    """
    if self_pairs is None:
        self_pairs = ops.eye(ops.shape(positive)[0], dtype="float32")
    total = total or (lambda x: x)
    positive = positive * (1.0 - self_pairs)
    negative = negative * (1.0 - self_pairs)
    mass_pos = total(ops.sum(positive))
    mass_neg = total(ops.sum(negative))
    share = ops.where(ops.logical_and(mass_pos > 0, mass_neg > 0), 0.5, 1.0)
    w_pos = ops.where(mass_pos > 0, share / ops.maximum(mass_pos, 1e-6), 0.0)
    w_neg = ops.where(mass_neg > 0, share / ops.maximum(mass_neg, 1e-6), 0.0)
    return positive * w_pos, negative * w_neg


class PairBatch:
    """The pairs a loss compares: this batch's rows against all rows of the global batch.

    Under a `tf.distribute` strategy with ``gather=True``, codes and labels are all-gathered
    so each replica compares its rows with every replica's rows (the same pairs as one
    device with the global batch); pair counts are summed over replicas and the per-sample
    values are scaled so that Keras' division by the replica count gives the global mean.
    Without the gather each replica only sees pairs inside its own slice.
    """

    def __init__(self, y_true, y_pred, label_mode="auto", gather=True):
        import tensorflow as tf

        self.rows = ops.convert_to_tensor(y_pred, "float32")
        n = ops.shape(self.rows)[0]
        context = tf.distribute.get_replica_context() if gather else None
        if context is None or context.num_replicas_in_sync == 1:
            self.columns, y_columns, self_pairs, total = self.rows, y_true, None, None
            replicas = 1
        else:
            sizes = context.all_gather(tf.reshape(n, [1]), axis=0)
            offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
            self.columns = context.all_gather(self.rows, axis=0)
            y_columns = context.all_gather(ops.convert_to_tensor(y_true), axis=0)
            m = tf.shape(self.columns)[0]
            self_pairs = tf.one_hot(offset + tf.range(n), m)

            def total(x):
                return context.all_reduce(tf.distribute.ReduceOp.SUM, x)

            replicas = context.num_replicas_in_sync
        # Keras averages per-sample values over the local rows, then divides by replicas.
        self.scale = ops.cast(n, "float32") * replicas
        same = pair_overlap(y_true, label_mode, y_columns)
        self.positive, self.negative = balanced_pair_weights(same, 1.0 - same, self_pairs,
                                                             total)

    def affinity(self, binary=False):
        """``a_ij = u_i . u_j / bits`` in [-1, 1]; with ``binary`` the codes are signed first."""
        rows, columns = self.rows, self.columns
        if binary:
            rows = ops.stop_gradient(ops.where(rows >= 0, 1.0, -1.0))
            columns = ops.stop_gradient(ops.where(columns >= 0, 1.0, -1.0))
        bits = ops.cast(ops.shape(rows)[-1], "float32")
        return ops.clip(ops.matmul(rows, ops.transpose(columns)) / bits, -1.0, 1.0)

    def per_sample(self, pair_loss, weights):
        """Per-row values whose mean (over rows and replicas) is ``pair_loss`` weighted by
        ``weights`` (`positive` for a loss's similar side, `negative` for its other side)."""
        return ops.sum(weights * pair_loss, axis=1) * self.scale


def quantization_penalty(u):
    """Per-sample ``mean_k (|u_k| - 1)^2``: distance of relaxed codes from the cube corners."""
    return ops.mean(ops.square(ops.abs(u) - 1.0), axis=-1)


def exponentiated_hashing_loss(
    y_true, y_pred, margin=1.0, temperature=0.5, form="bilinear", label_mode="auto",
    gather=True, negative_margin=None,
):
    """Per-sample exponentiated hashing loss ``exp(-min(s_ij a_ij, m) / T)``, pair-balanced.

    ``form="bilinear"`` uses the smooth affinity ``u_i . u_j / bits`` (gradients flow);
    ``form="exact"`` the discrete affinity of the signed codes (a measurement, no gradient).
    ``negative_margin`` (default: ``margin``) is the margin of dissimilar pairs. With
    ``label_mode="soft"`` a pair costs the similar side's loss in proportion to the chance
    ``t_ij`` it shares its class and the dissimilar side's in proportion to ``1 - t_ij``
    (see `pair_overlap`); for one-hot labels that is the loss above.
    """
    _check_choice(form, FORMS, "form")
    pairs = PairBatch(y_true, y_pred, label_mode, gather)
    affinity = pairs.affinity(binary=form == "exact")
    negative_margin = margin if negative_margin is None else negative_margin
    similar = ops.exp(-ops.minimum(affinity, margin) / temperature)
    dissimilar = ops.exp(-ops.minimum(-affinity, negative_margin) / temperature)
    return (pairs.per_sample(similar, pairs.positive)
            + pairs.per_sample(dissimilar, pairs.negative))


def _check_choice(value, choices, name):
    check(value in choices, f"`{name}` must be one of {choices}, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="tfhash")
class ExponentiatedHashingLoss(keras.losses.Loss):
    """The exponentiated hashing loss of Mu and Liu (AAAI 2017), as tfhash reads it.

    With code affinity ``a_ij = b_i . b_j / bits`` (``= 1 - 2 Hamming / bits``), similarity
    ``s_ij`` in {-1, +1}, temperature ``T`` and margin ``m``, each pair costs
    ``exp(-min(s_ij a_ij, m) / T)``; positive and negative pairs get equal total weight.
    Each bit acts as a weak learner voting on the pair, as in AdaBoost's exponential loss.
    The binary codes are replaced by the relaxed codes ``u = tanh(z)`` in the bilinear form
    ``u_i . u_j`` (the smooth approximation gradients flow through); ``quantization``
    adds ``lambda * mean((|u| - 1)^2)`` to pull codes to the cube's corners.

    Args:
        margin: ``m`` in (0, 1]; 1 is the plain exponentiated loss, m < 1 stops pulling a
            pair once it is m inside its own side.
        temperature: ``T`` >= 0.02; smaller values focus on the hardest pairs.
        quantization: Weight ``lambda`` >= 0 of the quantization term.
        label_mode: ``"auto"`` (rank 1 or one column: class ids, else multi-hot),
            ``"sparse"``, ``"multi_hot"``, or ``"soft"`` (rows of class probabilities,
            e.g. labels mixed by mixup; see `pair_overlap`).
        gather: under `tf.distribute`, compare each replica's codes with the whole global
            batch (all-gather; see `PairBatch`). No effect on one device.
        negative_margin: margin of dissimilar pairs in [0, 1], ``None`` for ``margin``
            (tfhash's extension: e.g. 0 stops pushing a dissimilar pair apart once its codes
            are orthogonal, while similar pairs are still pulled all the way together).
        reduction, name, dtype: As for any `keras.losses.Loss`.

    Example (self-pairs are left out; similar and dissimilar pairs each weigh one half):

    >>> loss = ExponentiatedHashingLoss(temperature=0.5)
    >>> codes = np.array([[1.0, 1, -1, 1], [1, 1, -1, 1], [-1, -1, 1, -1]])
    >>> round(float(loss(np.array([0, 0, 1]), codes)), 4)  # every pair agrees: exp(-1 / T)
    0.1353
    >>> round(float(loss(np.array([0, 1, 0]), codes)), 4)  # (exp(2) + (exp(2) + exp(-2)) / 2) / 2
    5.5756

    In training, on a hasher's relaxed codes:

    ```python
    hasher.compile(optimizer="adam",
                   loss=ExponentiatedHashingLoss(margin=1.0, temperature=0.5),
                   metrics=[ExactHashingLoss()])
    hasher.fit(images, class_ids, batch_size=128)
    ```
    """

    def __init__(
        self,
        margin=1.0,
        temperature=0.5,
        quantization=0.0,
        label_mode="auto",
        gather=True,
        negative_margin=None,
        reduction="sum_over_batch_size",
        name="exponentiated_hashing_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gather = bool(gather)
        self.margin = check_unit_interval(margin, "margin")
        self.negative_margin = check_number(negative_margin, "negative_margin", 0, 1,
                                            optional=True)
        self.temperature = check_number(temperature, "temperature", low=MIN_TEMPERATURE)
        self.quantization = check_non_negative(quantization, "quantization")
        self.label_mode = _check_choice(label_mode, LABEL_MODES, "label_mode")

    def call(self, y_true, y_pred):
        loss = exponentiated_hashing_loss(
            y_true, y_pred, self.margin, self.temperature, "bilinear", self.label_mode,
            self.gather, self.negative_margin,
        )
        if self.quantization:
            loss = loss + self.quantization * quantization_penalty(y_pred)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "temperature": self.temperature,
                "quantization": self.quantization,
                "label_mode": self.label_mode,
                "gather": self.gather,
                "negative_margin": self.negative_margin,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfhash")
class ExactHashingLoss(keras.metrics.Mean):
    """Metric: the exponentiated loss on the binary codes ``sign(u)`` (the discrete objective).

    Reported beside the trained (bilinear) loss, it shows the gap between the surrogate and
    the objective it stands for.

    Example:

    >>> model.compile(loss=ExponentiatedHashingLoss(), metrics=[ExactHashingLoss()])
    """

    def __init__(
        self, margin=1.0, temperature=0.5, label_mode="auto", negative_margin=None,
        name="exact_loss", dtype=None
    ):
        super().__init__(name=name, dtype=dtype)
        self.margin = check_unit_interval(margin, "margin")
        self.negative_margin = check_number(negative_margin, "negative_margin", 0, 1,
                                            optional=True)
        self.temperature = check_number(temperature, "temperature", low=MIN_TEMPERATURE)
        self.label_mode = _check_choice(label_mode, LABEL_MODES, "label_mode")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = exponentiated_hashing_loss(
            y_true, y_pred, self.margin, self.temperature, "exact", self.label_mode,
            negative_margin=self.negative_margin,
        )
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "temperature": self.temperature,
                "label_mode": self.label_mode,
                "negative_margin": self.negative_margin,
            }
        )
        return config


def _sparse_ids(y_true):
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


@keras.saving.register_keras_serializable(package="tfhash")
class PairwiseLikelihoodLoss(keras.losses.Loss):
    """DPSH-style pairwise likelihood on relaxed codes (a peer for comparison).

    With ``theta_ij = 0.5 * u_i . u_j`` and ``s01_ij`` in {0, 1}, each pair costs the negative
    log-likelihood ``log(1 + exp(theta_ij)) - s01_ij * theta_ij``; pairs are balanced as in
    `ExponentiatedHashingLoss`, plus ``quantization * mean((|u| - 1)^2)``.

    Example:

    >>> hasher.compile(optimizer="adam", loss=PairwiseLikelihoodLoss(quantization=0.1))
    """

    def __init__(self, quantization=0.1, label_mode="auto", gather=True,
                 reduction="sum_over_batch_size", name="pairwise_likelihood_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gather = bool(gather)
        self.quantization = check_non_negative(quantization, "quantization")
        self.label_mode = _check_choice(label_mode, LABEL_MODES, "label_mode")

    def call(self, y_true, y_pred):
        pairs = PairBatch(y_true, y_pred, self.label_mode, self.gather)
        theta = 0.5 * ops.matmul(pairs.rows, ops.transpose(pairs.columns))
        # softplus(theta) - s01 * theta, split into its similar and dissimilar sides
        loss = (pairs.per_sample(ops.softplus(-theta), pairs.positive)
                + pairs.per_sample(ops.softplus(theta), pairs.negative))
        return loss + self.quantization * quantization_penalty(y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"quantization": self.quantization, "label_mode": self.label_mode,
                       "gather": self.gather})
        return config


@keras.saving.register_keras_serializable(package="tfhash")
class ContrastiveHashingLoss(keras.losses.Loss):
    """DSH-style contrastive loss on relaxed codes (a peer for comparison).

    With ``d_ij = |u_i - u_j|^2 / bits`` in [0, 4], similar pairs cost ``d_ij / 2`` and
    dissimilar ones ``max(margin - d_ij, 0) / 2`` (DSH's margin 2 * bits, scaled by bits);
    plus ``quantization * mean(| |u| - 1 |)``, DSH's L1 regularizer. Pairs are balanced.

    Example:

    >>> hasher.compile(optimizer="adam", loss=ContrastiveHashingLoss(margin=2.0))
    """

    def __init__(self, margin=2.0, quantization=0.01, label_mode="auto", gather=True,
                 reduction="sum_over_batch_size", name="contrastive_hashing_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gather = bool(gather)
        self.margin = check_number(margin, "margin", 0, 4, low_open=True)
        self.quantization = check_non_negative(quantization, "quantization")
        self.label_mode = _check_choice(label_mode, LABEL_MODES, "label_mode")

    def call(self, y_true, y_pred):
        pairs = PairBatch(y_true, y_pred, self.label_mode, self.gather)
        rows, columns = pairs.rows, pairs.columns
        bits = ops.cast(ops.shape(rows)[-1], "float32")
        dist = (ops.sum(ops.square(rows), axis=-1)[:, None]
                + ops.sum(ops.square(columns), axis=-1)[None, :]
                - 2.0 * ops.matmul(rows, ops.transpose(columns)))
        dist = ops.maximum(dist, 0.0) / bits
        loss = (pairs.per_sample(0.5 * dist, pairs.positive)
                + pairs.per_sample(0.5 * ops.maximum(self.margin - dist, 0.0), pairs.negative))
        return loss + self.quantization * ops.mean(ops.abs(ops.abs(y_pred) - 1.0), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "quantization": self.quantization,
                       "label_mode": self.label_mode, "gather": self.gather})
        return config


@keras.saving.register_keras_serializable(package="tfhash")
class OrthoHashLoss(keras.losses.Loss):
    """OrthoHash-style loss: cosine softmax against fixed +-1 class codewords (a peer).

    Each class gets a fixed +-1 codeword ``c_k``; logits are
    ``scale * (cos(u, c_k) - margin * [k == y])`` and the loss is their cross-entropy, plus
    ``quantization * mean((|u| - 1)^2)``. Targets are class ids, or rows of class
    probabilities ``(n, num_classes)`` such as mixed labels (then the margin is taken in
    proportion to each class's share).

    Args:
        num_classes, bits: the codebook's shape.
        scale, margin: of the cosine logits.
        quantization: weight of the pull of each relaxed bit towards +-1.
        codebook: ``"random"`` (OrthoHash's: each bit a seeded coin flip), ``"greedy"``
            (`tfhash.codebooks.class_codebook`: codewords chosen for the largest minimum
            Hamming distance, which matters when ``bits`` is short for ``num_classes``), or
            the codewords themselves, +-1 of shape ``(num_classes, bits)`` (such as an
            arranged codebook, `tfhash.codebooks.arrange_codebook`).
        seed: seed of the codewords (a ``"greedy"`` codebook of up to 16 bits ignores it).

    Example:

    >>> hasher.compile(optimizer="adam", loss=OrthoHashLoss(num_classes=10, bits=32))
    """

    def __init__(self, num_classes, bits, scale=8.0, margin=0.2, quantization=0.1,
                 codebook="random", seed=0, reduction="sum_over_batch_size",
                 name="orthohash_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        num_classes = check_int(num_classes, "num_classes", 2)
        bits = check_int(bits, "bits", 1)
        self.num_classes, self.bits = num_classes, bits
        self.seed = check_int(seed, "seed")
        self.scale = check_number(scale, "scale", low=0, low_open=True)
        self.margin = check_number(margin, "margin", 0, 1, high_open=True)
        self.quantization = check_non_negative(quantization, "quantization")
        if isinstance(codebook, str):
            self.codebook = _check_choice(codebook, CODEBOOKS, "codebook")
            codewords = (class_codebook(num_classes, bits, seed=self.seed)
                         if codebook == "greedy" else
                         np.random.default_rng(self.seed).choice([-1.0, 1.0], (num_classes, bits)))
        else:
            codewords = np.asarray(codebook)
            check(codewords.shape == (num_classes, bits),
                  f"`codebook` must be one of {CODEBOOKS} or codewords of shape "
                  f"({num_classes}, {bits}), got shape {codewords.shape}")
            check(np.isin(codewords, (-1, 1)).all(), "`codebook` codewords must be +-1")
            self.codebook = codewords.astype(int).tolist()  # as get_config stores it
        self.codewords = (codewords / np.sqrt(bits)).astype(np.float32)

    def call(self, y_true, y_pred):
        if len(y_true.shape) == 2 and y_true.shape[-1] == self.num_classes > 1:
            target = ops.cast(y_true, "float32")
        else:
            target = ops.one_hot(_sparse_ids(y_true), self.num_classes)
        unit = y_pred / (ops.norm(y_pred, axis=-1, keepdims=True) + 1e-7)
        cosine = ops.matmul(unit, ops.transpose(ops.convert_to_tensor(self.codewords)))
        logits = self.scale * (cosine - self.margin * target)
        loss = keras.losses.categorical_crossentropy(target, logits, from_logits=True)
        return loss + self.quantization * quantization_penalty(y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "bits": self.bits, "scale": self.scale,
                       "margin": self.margin, "quantization": self.quantization,
                       "codebook": self.codebook, "seed": self.seed})
        return config
