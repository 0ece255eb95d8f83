"""tf.data input pipelines: images stay uint8 until the batch, augmentation runs in parallel.

Example:

>>> images = np.zeros((256, 32, 32, 3), dtype="uint8")
>>> labels = np.arange(256) % 10
>>> ds = make_dataset(images, labels, batch_size=128, training=True, augment="crop_flip")
>>> batch, batch_labels = next(iter(ds))
>>> tuple(batch.shape), batch.dtype.name, tuple(batch_labels.shape)
((128, 32, 32, 3), 'float32', (128,))

``model.fit(ds, epochs=10)`` then trains on it.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from tfhash.errors import check, check_int, check_unit_interval

AUGMENTATIONS = ("none", "crop_flip", "crop_flip_cutout", "randaugment", "mild_randaugment",
                 "shift", "affine", "auto")
STRENGTH_AUGMENTATIONS = ("randaugment", "mild_randaugment")  # the ones augment_strength sets
MIXES = ("none", "cutmix", "mixup")
RANDAUGMENT_STRENGTH = 0.5  # Keras's default factor


def resolve_augment(augment, image_shape):
    """``"auto"`` means crop + flip for colour images and small shifts for grayscale ones."""
    check(augment in AUGMENTATIONS, f"`augment` must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment == "auto":
        return "crop_flip" if image_shape[-1] == 3 else "shift"
    return augment


def cutout(image, size):
    """Sets one random ``size`` x ``size`` square (clipped at the borders) to grey 128."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    cy = tf.random.uniform([], 0, h, tf.int32)
    cx = tf.random.uniform([], 0, w, tf.int32)
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (tf.abs(rows - cy) <= size // 2) & (tf.abs(cols - cx) <= size // 2)
    grey = tf.cast(tf.fill(tf.shape(image), 128), image.dtype)
    return tf.where(inside[:, :, None], grey, image)


def make_dataset(images, labels, batch_size, training=False, augment="none", seed=0,
                 augment_strength=RANDAUGMENT_STRENGTH):
    """Batches ``(images, labels)`` into float32 images in [0, 255] and int labels.

    With ``training`` the data is shuffled each epoch and ``augment`` applied:
    ``"crop_flip"`` (pad 4, random 32x32 crop, horizontal flip: the standard CIFAR
    recipe), ``"crop_flip_cutout"`` (the same, then one random square of half the image
    side set to grey), ``"randaugment"`` (crop and flip, then two operations drawn per
    image by `keras.layers.RandAugment`, then cutout: the "strong" augmentation of
    semi-supervised CIFAR recipes), ``"mild_randaugment"`` (the same with two of the seven
    operations of `mild_operations` instead), ``"shift"`` (pad 2, random crop: small
    translations for digits), ``"affine"`` (per image a random rotation of up to 10
    degrees, zoom of up to 10% and shift of up to 10% of the side, black fill: the usual
    digit recipe, see `affine_augmenter`) or ``"none"``.

    ``augment_strength`` is RandAugment's ``factor``, a number in (0, 1], or with
    ``"mild_randaugment"`` the ``strength`` of `mild_operations` (the other augmentations
    ignore it). Keras's factor bounds the geometric and colour operations alike: its
    default 0.5 rotates by up to half a turn and shifts by up to half the side, stronger
    geometry than the RandAugment paper's; 0.1 rotates by up to 36 degrees and shifts by up
    to a tenth of the side. Two operations run the other way (Keras 3.15): solarization
    inverts every pixel above a threshold drawn between 0 and 255 times the strength (at
    0.1, nearly the whole image), and posterization keeps from 1 to ``int(8 * strength) - 1``
    bits per channel (1 whenever the strength is below 0.375).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    check(len(images) == len(labels), f"{len(images)} images but {len(labels)} labels")
    batch_size = check_int(batch_size, "batch_size", 1)
    check_unit_interval(augment_strength, "augment_strength")
    augment = resolve_augment(augment, images.shape[1:]) if training else "none"
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment not in ("none", "affine"):
        pad = 2 if augment == "shift" else 4
        shape = images.shape[1:]
        # float32 whatever the global policy: the augmentation is data, not computation
        strong = None  # the operations after crop and flip, on float32 pixels
        if augment == "randaugment":
            strong = functools.partial(
                keras.layers.RandAugment(value_range=(0, 255), factor=augment_strength,
                                         seed=seed, dtype="float32"), training=True)
        elif augment == "mild_randaugment":
            strong = functools.partial(apply_random_operations,
                                       operations=mild_operations(augment_strength, seed))

        def augment_one(image, label):
            padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            image = tf.image.random_crop(padded, shape)
            if augment != "shift":
                image = tf.image.random_flip_left_right(image)
            if strong is not None:
                image = strong(tf.cast(image, tf.float32))
            if augment in ("crop_flip_cutout", *STRENGTH_AUGMENTATIONS):
                image = cutout(image, shape[0] // 2)
            return image, label

        ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment == "affine":
        augmenter = affine_augmenter(seed)
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def mild_operations(strength=RANDAUGMENT_STRENGTH, seed=0):
    """RandAugment's geometric and colour operations, both ways, as Keras layers for [0, 255].

    Seven operations, each bounded by the RandAugment paper's largest magnitude times
    ``strength`` (a number in (0, 1]): rotation by up to 30 degrees, shear by up to 0.3 and
    translation by up to 0.45 of the side (both along both axes, borders reflected), brightness
    shifted by up to 0.45 of the value range, contrast scaled by 1 plus or minus 0.9,
    colour blended towards grey by up to 0.9, and sharpness from blurred to sharpened by up
    to 0.9 of the way. Solarization, posterization, auto-contrast and equalization, which
    `keras.layers.RandAugment` also draws and which its factor does not soften (see
    `make_dataset`), are left out. Every operation but colour (towards grey only) is drawn
    both ways, where Keras's RandAugment draws its rotation, shift, brightness and contrast
    one way only, and up to strength 0.5 its sharpness only blurs.
    `apply_random_operations` applies two of them per image.

    >>> operations = mild_operations(0.1)
    >>> [type(op).__name__ for op in operations][:3]
    ['RandomRotation', 'RandomShear', 'RandomTranslation']
    """
    s = check_unit_interval(strength, "strength")
    layers = keras.layers
    pixels = {"value_range": (0, 255)}  # the colour operations' keyword
    bounds = [
        (layers.RandomRotation, (30.0 * s / 360.0,), {}),
        (layers.RandomShear, (0.3 * s, 0.3 * s), {}),
        (layers.RandomTranslation, (0.45 * s, 0.45 * s), {}),
        (layers.RandomBrightness, (0.45 * s,), pixels),
        (layers.RandomContrast, ((0.9 * s, 0.9 * s),), pixels),
        (layers.RandomColorDegeneration, (0.9 * s,), pixels),
        (layers.RandomSharpness, ((0.5 - 0.45 * s, 0.5 + 0.45 * s),), pixels),
    ]
    # seeds one apart: the operations' draws are independent of one another
    operations = [layer(*factors, **kwargs, seed=seed + i, dtype="float32")
                  for i, (layer, factors, kwargs) in enumerate(bounds)]
    return operations


def apply_random_operations(image, operations, count=2):
    """Applies ``count`` operations drawn at random (with repeats) from ``operations`` to one
    image, computing only the ones drawn (`tf.switch_case`).

    >>> image = tf.fill((8, 8, 3), 200.0)
    >>> tuple(apply_random_operations(image, mild_operations(0.1)).shape)
    (8, 8, 3)
    """
    check(len(operations) >= 1, "`operations` must hold at least one operation, got none")
    count = check_int(count, "count", 1)
    for _ in range(count):
        index = tf.random.uniform([], 0, len(operations), dtype=tf.int32)
        image = tf.switch_case(
            index, [functools.partial(op, image, training=True) for op in operations])
    return image


def affine_augmenter(seed=0, rotation_degrees=10.0, zoom=0.1, shift=0.1):
    """Random rotation, zoom and shift, drawn per image of a batch, empty space filled black.

    Built from `keras.layers.RandomRotation`, `RandomZoom` and `RandomTranslation`; the
    bounds are plus or minus ``rotation_degrees``, ``zoom`` and ``shift`` (fractions of the
    image side).

    >>> images = np.zeros((2, 28, 28, 1), dtype="float32")
    >>> augmenter = affine_augmenter(seed=0)
    >>> augmenter(images, training=True).shape == images.shape
    True
    """
    fill = {"fill_mode": "constant", "fill_value": 0.0, "dtype": "float32"}
    return keras.Sequential([
        keras.layers.RandomRotation(rotation_degrees / 360.0, seed=seed, **fill),
        keras.layers.RandomZoom(zoom, seed=seed + 1, **fill),
        keras.layers.RandomTranslation(shift, shift, seed=seed + 2, **fill),
    ], name="affine_augmenter")


def mix_batches(ds, mix, seed=0):
    """Mixes images and one-hot labels across each batch of ``ds`` (phase 1 only).

    ``"cutmix"`` pastes a random box of another image of the batch into each image,
    ``"mixup"`` blends each image with another one; labels are mixed in the same
    proportions (`keras.layers.CutMix`, `keras.layers.MixUp`). ``"none"`` returns ``ds``.

    >>> x, y = np.zeros((256, 32, 32, 3), dtype="uint8"), np.arange(256) % 10
    >>> train = make_dataset(x, keras.ops.one_hot(y, 10), 128, training=True)
    >>> train = mix_batches(train, "cutmix", seed=0)
    >>> _, mixed_labels = next(iter(train))
    >>> np.allclose(keras.ops.convert_to_numpy(mixed_labels).sum(axis=1), 1.0)  # still sum to 1
    True
    """
    check(mix in MIXES, f"`mix` must be one of {MIXES}, got {mix!r}")
    if mix == "none":
        return ds
    layer_class = keras.layers.CutMix if mix == "cutmix" else keras.layers.MixUp
    mixer = layer_class(seed=seed)

    def mix_one(images, labels):
        out = mixer({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]

    return ds.map(mix_one, num_parallel_calls=tf.data.AUTOTUNE)
