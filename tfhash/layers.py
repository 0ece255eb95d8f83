"""Hashing layers: the hashing head, class-graded and class-fitted codes (database side),
queries on their class's codeword or snapped to the nearest class centre, the fixed views of
test-time averaging."""

import keras
import numpy as np
from keras import ops

from tfhash.codebooks import min_distance
from tfhash.codes import check_bits, every_code
from tfhash.errors import check, check_int, check_number

OUTPUT_MODES = ("relaxed", "binary")


@keras.saving.register_keras_serializable(package="tfhash")
class HashingHead(keras.layers.Layer):
    """Maps a feature tensor to hash codes of ``bits`` bits.

    The head computes ``z = dense(features)`` and emits the relaxed codes
    ``u = tanh(z)`` in ``(-1, 1)^bits`` (what the hashing losses train on), or with
    ``output_mode="binary"`` the binary codes ``sign(z)`` as float +-1 with sign(0) = +1
    (what an index stores). Features of rank > 2 are flattened first, so the head can sit
    on any backbone's output.

    Args:
        bits: Code length, 1 to 1024.
        output_mode: ``"relaxed"`` (default) or ``"binary"``.
        use_bias: Whether the projection has a bias.
        kernel_initializer: Initializer of the projection matrix.
        kernel_regularizer: Optional regularizer of the projection matrix.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> features = keras.Input((128,))
    >>> codes = HashingHead(48)(features)
    >>> model = keras.Model(features, codes)
    >>> model.output_shape
    (None, 48)
    """

    def __init__(
        self,
        bits,
        output_mode="relaxed",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.bits = check_bits(bits)
        check(
            output_mode in OUTPUT_MODES,
            f"`output_mode` must be one of {OUTPUT_MODES}, got {output_mode!r}",
        )
        self.output_mode = output_mode
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.flatten = keras.layers.Flatten()
        self.projection = keras.layers.Dense(
            self.bits,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            name="projection",
        )

    def build(self, input_shape):
        flat_shape = self.flatten.compute_output_shape(input_shape)
        self.projection.build(flat_shape)
        self.built = True

    def call(self, inputs):
        z = self.projection(self.flatten(inputs))
        if self.output_mode == "binary":
            return ops.where(z >= 0, 1.0, -1.0)
        return ops.tanh(z)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bits)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bits": self.bits,
                "output_mode": self.output_mode,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfhash")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left to right, in training and at inference alike.

    Unlike `keras.layers.RandomFlip`, which is an augmentation (random, and the identity at
    inference), this layer always flips: `tfhash.model.flip_averaged` uses it to encode
    each image together with its mirror image. Inputs are ``(batch, height, width,
    channels)``; the width axis is reversed.

    Example:

    >>> images = np.arange(6.0).reshape(1, 1, 3, 2)
    >>> keras.ops.convert_to_numpy(HorizontalFlip()(images))[0, 0, :, 0]
    array([4., 2., 0.], dtype=float32)
    """

    def call(self, inputs):
        check(len(inputs.shape) == 4,
              f"HorizontalFlip: expected images (batch, height, width, channels), "
              f"got shape {tuple(inputs.shape)}")
        return ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfhash")
class Shift(keras.layers.Layer):
    """Moves image content by whole pixels, ``rows`` down and ``cols`` right (negative: up,
    left), filling the vacated pixels with 0; in training and at inference alike.

    `tfhash.model.shift_averaged` uses it to encode each image together with its one-pixel
    shifts. Inputs are ``(batch, height, width, channels)``.

    Args:
        rows: pixels down (negative: up), smaller than the height.
        cols: pixels right (negative: left), smaller than the width.

    Example:

    >>> images = np.arange(4.0).reshape(1, 1, 4, 1)
    >>> keras.ops.convert_to_numpy(Shift(0, 1)(images))[0, 0, :, 0]
    array([0., 0., 1., 2.], dtype=float32)
    """

    def __init__(self, rows=0, cols=0, **kwargs):
        super().__init__(**kwargs)
        self.rows = check_int(rows, "rows")
        self.cols = check_int(cols, "cols")

    def call(self, inputs):
        check(len(inputs.shape) == 4,
              f"Shift: expected images (batch, height, width, channels), "
              f"got shape {tuple(inputs.shape)}")
        h, w = inputs.shape[1], inputs.shape[2]
        check(h is None or abs(self.rows) < h, f"Shift: `rows` must be under the height {h}")
        check(w is None or abs(self.cols) < w, f"Shift: `cols` must be under the width {w}")
        padded = ops.pad(inputs, [[0, 0], [max(self.rows, 0), max(-self.rows, 0)],
                                  [max(self.cols, 0), max(-self.cols, 0)], [0, 0]])
        top, left = max(-self.rows, 0), max(-self.cols, 0)
        shape = ops.shape(inputs)
        return padded[:, top:top + shape[1], left:left + shape[2], :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "cols": self.cols}


class _ClassCodes(keras.layers.Layer):
    """Base of the layers that code with one codeword per class (from class probabilities
    ``(batch, num_classes)``, or from codes): holds and checks the codebook."""

    def __init__(self, codebook, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        book = np.asarray(codebook)
        check(book.ndim == 2 and len(book) >= 2 and np.isin(book, (-1, 1)).all(),
              f"{owner}: `codebook` must be +-1 codewords of shape (num_classes >= 2, bits), "
              f"got shape {book.shape}")
        self.codebook = book.astype(np.int8)
        self.bits = check_bits(book.shape[1], "codebook.shape[1]")

    def _probabilities(self, inputs):
        check(inputs.shape[-1] == len(self.codebook),
              f"{type(self).__name__}: expected probabilities over {len(self.codebook)} "
              f"classes, got shape {tuple(inputs.shape)}")
        return ops.cast(inputs, "float32"), ops.convert_to_tensor(self.codebook, "float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bits)

    def get_config(self):
        return {**super().get_config(), "codebook": self.codebook.tolist()}


@keras.saving.register_keras_serializable(package="tfhash")
class GradedClassCodes(_ClassCodes):
    """Maps class probabilities to binary codes placed between class codewords, by how sure
    the classifier is.

    An image whose two likeliest classes are ``a`` and ``b`` (probabilities ``p_a >= p_b``)
    gets class ``a``'s codeword with ``r`` of the bits where it differs from ``b``'s
    codeword set to ``b``'s (the lowest-numbered such bits first), where ``r`` is
    ``round(d_ab * p_b / (p_a + p_b))`` capped at ``(d_min - 1) // 2``: ``d_ab`` is the
    distance between the two codewords and ``d_min`` the codebook's minimum distance. A
    sure image sits on its class's codeword; an unsure one sits up to ``(d_min - 1) // 2``
    bits towards its runner-up, so it stays nearer its own class's codeword than any other
    (by the triangle inequality) yet ranks after the sure images of that class, at every
    query. Outputs are float +-1 (signs already taken).

    Args:
        codebook: +-1 codewords, one row per class, shape ``(num_classes, bits)``, e.g.
            from `tfhash.codebooks.class_codebook`.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> layer = GradedClassCodes([[-1, -1, -1, -1], [1, 1, 1, 1]])
    >>> keras.ops.convert_to_numpy(layer(np.array([[0.9, 0.1], [0.6, 0.4]])))
    array([[-1., -1., -1., -1.],
           [ 1., -1., -1., -1.]], dtype=float32)
    """

    def __init__(self, codebook, **kwargs):
        super().__init__(codebook, **kwargs)
        d_min = min_distance(self.codebook)
        check(d_min > 0, "GradedClassCodes: `codebook` rows must be distinct")
        self.max_shift = (d_min - 1) // 2

    def call(self, inputs):
        probabilities, book = self._probabilities(inputs)
        top, index = ops.top_k(probabilities, 2)
        first, second = ops.take(book, index[:, 0], axis=0), ops.take(book, index[:, 1], axis=0)
        differ = ops.cast(ops.not_equal(first, second), "float32")
        share = top[:, 1] / ops.maximum(top[:, 0] + top[:, 1], 1e-12)
        shift = ops.clip(ops.round(ops.sum(differ, axis=-1) * share), 0, self.max_shift)
        # the first `shift` bits where the two codewords differ take the runner-up's value
        moved = ops.logical_and(differ > 0, ops.cumsum(differ, axis=-1) <= shift[:, None])
        return ops.where(moved, second, first)


@keras.saving.register_keras_serializable(package="tfhash")
class FittedClassCodes(_ClassCodes):
    """Maps class probabilities to the binary code whose Hamming distances to the class
    codewords best explain them.

    Reading a code ``z`` of ``bits`` bits as the class probabilities
    ``softmax(-d(z, c_k) / (temperature * bits))`` over the codewords ``c_k`` (Hamming
    distances as a share of the code length, so one temperature serves every length), the
    layer picks the ``z`` whose reading is nearest the classifier's probabilities ``p``
    (least cross-entropy ``-sum_k p_k log softmax_k``). A sure image sits on its class's
    codeword; an unsure one moves towards every class by how likely it is, so its distance
    to each codeword falls as that class's probability rises: Hamming ranking from any
    class's codeword (`PredictedClassCodes` queries) follows the classifier's probability
    of that class, for the images given to other classes too (`GradedClassCodes` moves
    towards the runner-up alone). The search is exact over every code of up to 12 bits;
    longer codes are split into blocks of at most 12 bits, each searched exactly with the
    others held, block after block, twice, starting from the likeliest class's codeword.
    Outputs are float +-1 (signs already taken).

    Args:
        codebook: +-1 codewords, one row per class, shape ``(num_classes, bits)``, e.g.
            from `tfhash.codebooks.class_codebook`.
        temperature: the share of the code length per e-fold of probability, > 0: small
            values keep images on their class's codeword, large ones spread them out.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> layer = FittedClassCodes([[-1, -1, -1, -1], [1, 1, 1, 1]], temperature=0.25)
    >>> keras.ops.convert_to_numpy(layer(np.array([[0.99, 0.01], [0.6, 0.4]])))
    array([[-1., -1., -1., -1.],
           [-1., -1.,  1.,  1.]], dtype=float32)
    """

    BLOCK_BITS = 12  # exact search over 2**12 codes per block
    PASSES = 2  # sweeps over the blocks when there are several
    TIE = 1e-12  # losses this close count as equal
    DEFAULT_TEMPERATURE = 0.15  # best on held-out CIFAR-10 images (fit_temperature.py)

    def __init__(self, codebook, temperature=DEFAULT_TEMPERATURE, **kwargs):
        super().__init__(codebook, **kwargs)
        self.temperature = check_number(temperature, "temperature", 0, low_open=True)
        scale = self.temperature * self.bits  # bits of distance per e-fold
        n_blocks = -(-self.bits // self.BLOCK_BITS)
        edges = np.linspace(0, self.bits, n_blocks + 1).round().astype(int)
        self._blocks = []  # (start, stop, the block's codes, their distances to the book)
        for start, stop in zip(edges[:-1], edges[1:]):
            width = stop - start
            words = every_code(width)
            distances = (width - words @ self.codebook[:, start:stop].T.astype(int)) // 2
            # per code: its distances over the scale, and exp(-that), (classes, codes)
            self._blocks.append((start, stop, words.astype("float32"),
                                 (distances / scale).T.astype("float64"),
                                 np.exp(-distances / scale).T.astype("float64")))

    def call(self, inputs):
        probabilities, book = self._probabilities(inputs)
        _, likeliest = ops.top_k(probabilities, 1)
        codes = ops.take(book, likeliest[:, 0], axis=0)
        # float64: once a class dominates, codes differ in the loss by exp(-distance / scale)
        weights = ops.cast(probabilities, "float64")
        passes = 1 if len(self._blocks) == 1 else self.PASSES
        for _ in range(passes):
            for start, stop, words, scaled, decay in self._blocks:
                # distances from the rest of the code, the block left out: (batch, classes),
                # less their least (a constant of the loss)
                rest = (ops.sum(ops.abs(codes[:, None, :] - book[None]), axis=-1)
                        - ops.sum(ops.abs(codes[:, None, start:stop]
                                          - book[None, :, start:stop]), axis=-1)) / 2
                rest = ops.cast(rest - ops.min(rest, axis=-1, keepdims=True), "float64")
                # the cross-entropy with logits -(rest + d) / s (s: temperature * bits), less a
                # constant of the image: sum_k p_k d_k / s + log sum_k e^(-rest_k / s) e^(-d_k / s)
                loss = (ops.matmul(weights, scaled)
                        + ops.log(ops.matmul(
                            ops.exp(-rest / (self.temperature * self.bits)), decay)))
                # the first code of least loss; losses within TIE of it count as equal (the
                # same distances, or classes of equal probability swapped), so rounding that
                # differs elsewhere (an export) picks the same code. top_k, not argmin: it
                # exports to ONNX
                least = ops.min(loss, axis=-1, keepdims=True)
                tied = ops.cast(loss <= least + self.TIE, "float32")
                _, best = ops.top_k(tied, 1)
                chosen = ops.take(words, best[:, 0], axis=0)
                codes = ops.concatenate([codes[:, :start], chosen, codes[:, stop:]], axis=-1)
        return codes

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="tfhash")
class PredictedClassCodes(_ClassCodes):
    """Maps class probabilities to the codeword of the likeliest class: the query side of
    asymmetric graded codes.

    Database images coded by `GradedClassCodes` sit on their likeliest class's codeword
    or a few bits towards their runner-up's, by how sure the classifier is. A query coded
    by this layer sits on its likeliest class's codeword itself, so Hamming ranking lists
    every database image the classifier gives to the query's class before any other, and
    among those with the same runner-up the surer before the less sure. Outputs are float
    +-1 (signs already taken).

    Args:
        codebook: +-1 codewords, one row per class, shape ``(num_classes, bits)``: the
            database encoder's codebook (`GradedClassCodes.codebook`).
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> layer = PredictedClassCodes([[-1, -1, -1, -1], [1, 1, 1, 1]])
    >>> keras.ops.convert_to_numpy(layer(np.array([[0.9, 0.1], [0.4, 0.6]])))
    array([[-1., -1., -1., -1.],
           [ 1.,  1.,  1.,  1.]], dtype=float32)
    """

    def call(self, inputs):
        probabilities, book = self._probabilities(inputs)
        # top_k, as GradedClassCodes picks the likeliest class (ties alike; it also exports
        # to ONNX, where argmax's TensorFlow lowering does not)
        _, likeliest = ops.top_k(probabilities, 1)
        return ops.take(book, likeliest[:, 0], axis=0)


@keras.saving.register_keras_serializable(package="tfhash")
class NearestCodeword(_ClassCodes):
    """Maps codes to the nearest codeword of a codebook in Hamming distance: the query side
    of asymmetric learned codes.

    A learned hasher codes the database as it is; a query coded through this layer sits on
    the codeword of the class centre nearest to its own code (one centre per class, e.g.
    `tfhash.codebooks.class_centres` of the training images' codes), so Hamming ranking
    lists the database images nearest that centre first. Inputs are codes, +-1 or relaxed
    (their signs are taken, sign(0) = +1); ties go to the lowest-numbered codeword. Outputs
    are float +-1.

    Args:
        codebook: +-1 codewords, one row per class, shape ``(num_classes, bits)``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Example:

    >>> layer = NearestCodeword([[-1, -1, -1, -1], [1, 1, 1, 1]])
    >>> keras.ops.convert_to_numpy(layer(np.array([[0.3, -0.9, -0.2, -0.5], [1, 1, -1, 1]])))
    array([[-1., -1., -1., -1.],
           [ 1.,  1.,  1.,  1.]], dtype=float32)
    """

    def call(self, inputs):
        check(inputs.shape[-1] == self.bits,
              f"NearestCodeword: expected codes of {self.bits} bits, got shape "
              f"{tuple(inputs.shape)}")
        book = ops.convert_to_tensor(self.codebook, "float32")
        signs = ops.where(ops.cast(inputs, "float32") >= 0, 1.0, -1.0)
        # the most agreeing bits is the least Hamming distance; top_k takes the lowest row
        # on ties and exports to ONNX
        _, nearest = ops.top_k(ops.matmul(signs, ops.transpose(book)), 1)
        return ops.take(book, nearest[:, 0], axis=0)
