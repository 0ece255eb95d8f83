"""A first layer that whitens image patches, fitted to the training images by ``adapt``.

`PatchWhitening` is a frozen convolution whose filters are the whitening transform of the
training images' ``patch_size x patch_size`` patches (their covariance's eigenvectors,
each scaled by one over the square root of its eigenvalue), as in the fast CIFAR-10
training recipes after Page's ResNet-9 (Jordan, "94% on CIFAR-10 in 3.29 seconds on a
single GPU", 2024). The next layers then start from decorrelated inputs of unit variance in
every direction, edges and colour contrasts included, instead of learning the first filters
from random ones. `adapt_whitening` fits every such layer of a model that is not yet fitted;
tfhash's training phases call it on their training images.
"""

import keras
import numpy as np

from tfhash.errors import check, check_int, check_non_negative


@keras.saving.register_keras_serializable(package="tfhash")
class PatchWhitening(keras.layers.Layer):
    """Whitens the image's ``patch_size x patch_size`` patches; fitted by ``adapt``.

    For ``d = patch_size**2 * channels`` patch values the layer outputs ``2 * d`` channels:
    the patch (centred on the training images' per-channel mean) projected on each
    eigenvector ``v`` of the patch covariance and scaled by ``1 / sqrt(lambda + epsilon *
    max(lambda))``, then the same values negated, so a ReLU after it keeps both signs. On
    the images it was adapted to, the first ``d`` channels have zero mean and (for a small
    ``epsilon``) unit covariance. The filters are not trained: ``adapt`` sets them from data,
    like `keras.layers.Normalization`'s statistics, and they are saved with the model.
    Before ``adapt`` the layer passes the centred patch values through unscaled.
    The layer computes in float32 whatever the global dtype policy, since it takes raw pixel
    values and subtracts their mean. Padding is ``"same"``, with the per-channel mean (for
    2x2 patches, one row and column after the image), so the output has the input's height
    and width.

    Args:
        patch_size: side of the square patches, an integer >= 1.
        epsilon: added to every eigenvalue, relative to the largest, a float >= 0; it keeps
            the near-constant directions (sensor noise) from being amplified without bound.

    Example:

    >>> images = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3))
    >>> layer = PatchWhitening(patch_size=2)
    >>> layer.adapt(images)
    >>> tuple(layer(images[:2]).shape)  # 2 x (2 * 2 * 3) channels
    (2, 8, 8, 24)
    """

    def __init__(self, patch_size=2, epsilon=5e-4, **kwargs):
        patch_size = check_int(patch_size, "patch_size", 1)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.epsilon = check_non_negative(epsilon, "epsilon")

    def build(self, input_shape):
        channels = input_shape[-1]
        check(len(input_shape) == 4 and channels is not None,
              f"PatchWhitening takes images (batch, height, width, channels) with a known "
              f"channel count, got shape {tuple(input_shape)}")
        size = self.patch_size**2 * channels
        identity = np.eye(size, dtype="float32")
        self.mean = self.add_weight(shape=(channels,), initializer="zeros",
                                    trainable=False, name="mean")
        self.kernel = self.add_weight(
            shape=(self.patch_size, self.patch_size, channels, 2 * size),
            initializer=lambda shape, dtype: _as_kernel(identity, shape, dtype),
            trainable=False, name="kernel")
        self.adapted = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       name="adapted")

    @property
    def is_adapted(self):
        """Whether ``adapt`` has set the filters (saved with the model)."""
        return self.built and bool(keras.ops.convert_to_numpy(self.adapted))

    def adapt(self, images, max_patches=1_000_000, seed=0):
        """Sets the mean and the whitening filters from ``images`` ``(n, h, w, channels)``,
        at the scale the layer will see them (raw pixels for a model's first layer).

        ``max_patches``: the covariance is estimated from at most this many patches, taken
        at random positions (``seed``) once the images hold more.
        """
        images = np.asarray(images, dtype="float64")
        check(images.ndim == 4 and min(images.shape[1:3]) >= self.patch_size,
              f"`images` must be (n, height, width, channels) with height and width >= "
              f"patch_size ({self.patch_size}), got shape {images.shape}")
        check(len(images) > 0, "`images` must hold at least one image")
        max_patches = check_int(max_patches, "max_patches", 2)
        if not self.built:
            self.build((None, *images.shape[1:]))
        check(images.shape[-1] == self.mean.shape[0],
              f"`images` must have {self.mean.shape[0]} channels (the layer's input), got "
              f"{images.shape[-1]}")
        mean = images.mean(axis=(0, 1, 2))
        patches = _patches(images - mean, self.patch_size, max_patches, seed)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches, rowvar=False))
        eigenvalues = np.maximum(eigenvalues, 0.0)
        scale = 1.0 / np.sqrt(eigenvalues + self.epsilon * eigenvalues.max() + 1e-12)
        self.mean.assign(mean.astype("float32"))
        self.kernel.assign(_as_kernel(eigenvectors * scale, self.kernel.shape, "float32"))
        self.adapted.assign(1.0)

    def call(self, inputs):
        centred = keras.ops.cast(inputs, self.compute_dtype) - self.mean
        return keras.ops.conv(centred, self.kernel, padding="same")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.kernel.shape[-1])

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size,
                "epsilon": self.epsilon}


def _as_kernel(filters, shape, dtype):
    """Convolution kernel ``shape`` ``(p, p, c, 2d)`` holding the columns of ``filters``
    ``(d, d)`` (each one filter over a flattened ``(p, p, c)`` patch) and their negations."""
    both = np.concatenate([filters, -filters], axis=1)
    return keras.ops.convert_to_tensor(np.reshape(both, shape), dtype=dtype)


def _patches(images, patch_size, max_patches, seed):
    """Every ``patch_size``-square patch of ``images`` (or ``max_patches`` of them at random)
    as rows ``(n, patch_size * patch_size * channels)``, flattened in kernel order."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (patch_size, patch_size),
                                                       axis=(1, 2))  # (n, h', w', c, p, p)
    positions = windows.shape[:3]
    if np.prod(positions) > max_patches:
        picked = np.random.default_rng(seed).choice(np.prod(positions), max_patches,
                                                    replace=False)
        windows = windows[np.unravel_index(picked, positions)]
    else:
        windows = windows.reshape(-1, *windows.shape[3:])
    return np.moveaxis(windows, 1, -1).reshape(len(windows), -1)  # (c, p, p) -> (p, p, c)


def adapt_whitening(model, images):
    """Adapts every `PatchWhitening` layer of ``model`` that is not adapted yet to
    ``images``; returns how many it adapted. Only a model's first layers can be adapted
    this way (``images`` are what the layer sees), so a whitening layer must take the
    model's input directly.

    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, PatchWhitening()(inputs))
    >>> adapt_whitening(model, np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)))
    1
    """
    check(isinstance(model, keras.Model),
          f"`model` must be a keras.Model, got {type(model).__name__}")
    count = 0
    for layer in _whitening_layers(model):
        if not layer.is_adapted:  # a layer shared by nested models comes once adapted
            layer.adapt(images)
            count += 1
    return count


def _whitening_layers(model):
    """The `PatchWhitening` layers of ``model`` and of the models nested in it."""
    for layer in model.layers:
        if isinstance(layer, PatchWhitening):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _whitening_layers(layer)
