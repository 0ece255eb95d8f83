"""Feature extractors a hashing head sits on: two built-in CNNs and any Keras model.

Every backbone takes float images in [0, 255] of shape ``(h, w, c)`` and returns a feature
vector; the scaling to [0, 1] happens inside the model, so exported encoders take raw pixels.

Example:

>>> backbone = get_backbone("mnist_cnn", (28, 28, 1))
>>> backbone.output_shape
(None, 256)
>>> backbone = get_backbone("applications.MobileNetV3Small", (96, 96, 3))  # weights=None
"""

import keras
from keras import layers

from tfhash.errors import check
from tfhash.whitening import PatchWhitening


def mnist_cnn(input_shape=(28, 28, 1), width=32, features=256, stem="conv"):
    """A LeNet-style CNN for small grayscale images: 4 convolutions, 2 poolings, one dense.

    ``stem``: the first layer, ``"conv"`` (a convolution) or ``"whitening"`` (see
    `stem_layers`).
    """
    inputs = keras.Input(input_shape, name="images")
    x = stem_layers(inputs, stem, width)
    for k, filters in enumerate((width, width, 2 * width, 2 * width)):
        if k:
            x = _conv_bn(x, filters)
        if k % 2:
            x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Dense(features, activation="relu")(x)
    return keras.Model(inputs, x, name="mnist_cnn")


def cifar_resnet(input_shape=(32, 32, 3), width=32, stem="conv"):
    """A residual CNN for 32x32 colour images (the ResNet-9 layout at reduced width).

    Stem (``"conv"``: a conv of w channels; ``"whitening"``: see `stem_layers`), then
    three stages at 2w, 4w, 8w channels, each a conv + max-pool, with a two-conv residual
    block after the first and third; global max-pool gives 8w features.
    """
    inputs = keras.Input(input_shape, name="images")
    x = stem_layers(inputs, stem, width)
    for stage, filters in enumerate((2 * width, 4 * width, 8 * width)):
        x = _conv_bn(x, filters)
        x = layers.MaxPooling2D()(x)
        if stage != 1:
            shortcut = x
            x = _conv_bn(_conv_bn(x, filters), filters)
            x = layers.Add()([shortcut, x])
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, x, name="cifar_resnet")


STEMS = ("conv", "whitening")


def stem_layers(inputs, stem, width):
    """The first layer of a built-in backbone on raw pixels ``inputs``, normalized and
    rectified: ``"conv"``, a 3x3 convolution of ``width`` channels on pixels scaled to
    [0, 1]; ``"whitening"``, a `PatchWhitening` of 2x2 patches (3x3 for one channel),
    whose filters training fits to the training images (`adapt_whitening`) and keeps.
    """
    check(stem in STEMS, f"`stem` must be one of {STEMS}, got {stem!r}")
    if stem == "conv":
        return _conv_bn(layers.Rescaling(1 / 255.0)(inputs), width)
    x = PatchWhitening(patch_size=2 if inputs.shape[-1] > 1 else 3, name="whitening")(inputs)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def _conv_bn(x, filters):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def ensemble(members, name="ensemble"):
    """Runs several backbones on the same images and concatenates their features.

    A hashing head on an ensemble of independently pre-trained backbones sums one linear
    map of each member's features before its ``tanh``: where the members disagree about
    an image, its code lands between their answers, as an ensemble of classifiers
    averages its members' scores. The members keep their weights (they are shared, not
    copied), so phase 2 fine-tunes them all through the one head.

    Args:
        members: backbones (`keras.Model`) taking the same image shape; a single one is
            returned as it is.
        name: the ensemble model's name.

    Example:

    >>> members = [get_backbone("mnist_cnn", (28, 28, 1)) for _ in range(2)]
    >>> ensemble(members).output_shape
    (None, 512)
    """
    return combine(members, layers.Concatenate(name="features"), "members", "member", name)


def combine(models, merge, arg_name, prefix, name):
    """Runs models that take the same images on one shared input and merges their outputs
    with the layer ``merge``; a single model is returned as it is.

    Each model is wrapped under its own name (``<prefix><k>``), since nested models must be
    named uniquely; the wrappers share the models' layers and weights.

    Args:
        models: one or more `keras.Model`, all taking one input of the same shape.
        merge: a Keras merge layer (e.g. `Concatenate`, `Average`).
        arg_name: the caller's name for ``models``, for error messages.
        prefix: name prefix of the wrapped models.
        name: the combined model's name.
    """
    models = list(models)
    check(
        models and all(isinstance(m, keras.Model) for m in models),
        f"`{arg_name}` must be one or more keras.Model, got "
        f"{[type(m).__name__ for m in models]}",
    )
    if len(models) == 1:
        return models[0]
    shapes = [m.input_shape[1:] for m in models]
    check(len(set(shapes)) == 1, f"`{arg_name}` must take the same image shape, got {shapes}")
    inputs = keras.Input(shapes[0], name="images")
    outputs = [keras.Model(m.input, m.output, name=f"{prefix}{k}")(inputs)
               for k, m in enumerate(models)]
    return keras.Model(inputs, merge(outputs), name=name)


BACKBONES = {"mnist_cnn": mnist_cnn, "cifar_resnet": cifar_resnet}
DEFAULT_BACKBONE = {1: "mnist_cnn", 3: "cifar_resnet"}


def get_backbone(backbone, input_shape, weights=None, **kwargs):
    """Returns a backbone model for ``input_shape``.

    Args:
        backbone: a built-in name (``"mnist_cnn"``, ``"cifar_resnet"``),
            ``"applications.<Name>"`` for any `keras.applications` model (top removed,
            global average pooling), ``None`` for the default by channel count, or a
            `keras.Model` (returned as it is).
        input_shape: ``(h, w, c)`` of the images.
        weights: for `keras.applications` only: ``None`` (random) or a weights file path.
        **kwargs: passed to the built-in builder (e.g. ``width``).
    """
    if isinstance(backbone, keras.Model):
        return backbone
    check(
        len(input_shape) == 3,
        f"`input_shape` must be (height, width, channels), got {tuple(input_shape)}",
    )
    if backbone is None:
        backbone = DEFAULT_BACKBONE.get(input_shape[-1], "cifar_resnet")
    check(isinstance(backbone, str), f"`backbone` must be a name or keras.Model, got {backbone!r}")
    if backbone.startswith("applications."):
        check(not kwargs, f"{sorted(kwargs)} apply to the built-in backbones "
                          f"{sorted(BACKBONES)} only, not to {backbone!r}")
        app_name = backbone.split(".", 1)[1]
        app = getattr(keras.applications, app_name, None)
        check(callable(app), f"`backbone`: keras.applications has no model {app_name!r}")
        return app(include_top=False, weights=weights, input_shape=tuple(input_shape),
                   pooling="avg")
    check(
        backbone in BACKBONES,
        f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}, "
        "'applications.<Name>' or a keras.Model",
    )
    return BACKBONES[backbone](tuple(input_shape), **kwargs)
