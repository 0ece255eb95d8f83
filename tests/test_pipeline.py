import keras
import numpy as np
import pytest
import tensorflow as tf

from tfhash.errors import TfhashError
from tfhash.pipeline import (
    apply_random_operations,
    cutout,
    make_dataset,
    mild_operations,
    mix_batches,
)

N, SIDE, CLASSES = 16, 32, 16


def flat_images():
    """Image i is the constant 10 * i, so a pixel's value names the image it came from."""
    values = (np.arange(N, dtype=np.uint8) * 10)[:, None, None, None]
    return np.broadcast_to(values, (N, SIDE, SIDE, 3)).copy()


def one_hot_batches(images, labels):
    return make_dataset(images, labels, N).map(lambda x, y: (x, tf.one_hot(y, CLASSES)))


def test_training_batches_are_float_shuffled_and_complete():
    images, labels = flat_images(), np.arange(N)
    x, y = next(iter(make_dataset(images, labels, N, training=True, augment="none", seed=3)))
    assert x.dtype == tf.float32 and x.shape == (N, SIDE, SIDE, 3)
    assert sorted(y.numpy()) == list(range(N))
    assert not np.array_equal(y.numpy(), labels)  # shuffled
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], y.numpy() * 10)  # pairs kept


def test_crop_flip_moves_pixels_without_inventing_values():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, SIDE, SIDE, 3), dtype=np.uint8)
    x, y = next(iter(make_dataset(images, np.arange(N), N, training=True, augment="crop_flip")))
    for out, label in zip(x.numpy(), y.numpy()):
        assert set(np.unique(out)) <= set(np.unique(images[label]))
    assert not np.array_equal(x.numpy(), images[y.numpy()].astype(np.float32))


def test_cutout_greys_one_square_of_the_given_side():
    image = tf.zeros((SIDE, SIDE, 3), tf.uint8)
    out = cutout(image, 8).numpy()
    grey = np.argwhere((out == 128).all(axis=-1))
    rows, cols = np.unique(grey[:, 0]), np.unique(grey[:, 1])
    assert len(grey) == len(rows) * len(cols)  # a rectangle (a square clipped at borders)
    assert 1 <= len(rows) <= 9 and 1 <= len(cols) <= 9
    assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_mixed_labels_weigh_classes_as_the_pixels_do(mix):
    """Each class's label weight equals its share of the mixed image (independent count)."""
    ds = mix_batches(one_hot_batches(flat_images(), np.arange(N)), mix, seed=1)
    x, y = (t.numpy() for t in next(iter(ds)))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    values = np.arange(N) * 10.0
    mixed = 0
    for image, label in zip(x, y):
        if mix == "cutmix":  # every pixel is copied from one source image
            shares = np.array([(image == v).mean() for v in values])
            np.testing.assert_allclose(shares.sum(), 1.0)
            np.testing.assert_allclose(shares, label, atol=0.07)
        else:  # a convex blend: the mean pixel is the label-weighted mean of the sources
            np.testing.assert_allclose(image.mean(), label @ values, atol=0.05)
        mixed += label.max() < 0.99
    assert mixed >= 2  # the batch was actually mixed


def test_mix_none_is_the_identity_and_unknown_mix_is_refused():
    ds = one_hot_batches(flat_images(), np.arange(N))
    assert mix_batches(ds, "none") is ds
    with pytest.raises(TfhashError, match="`mix` must be one of"):
        mix_batches(ds, "cutout")


def test_bad_arguments_name_the_argument():
    with pytest.raises(TfhashError, match="`augment` must be one of"):
        make_dataset(flat_images(), np.arange(N), 4, training=True, augment="rotate")
    with pytest.raises(TfhashError, match="`batch_size`"):
        make_dataset(flat_images(), np.arange(N), 0)
    with pytest.raises(TfhashError, match="16 images but 3 labels"):
        make_dataset(flat_images(), np.arange(3), 4)


def blob_images(n=N, side=28):
    """Digit-like images: black, with a bright 6x6 square at the centre."""
    images = np.zeros((n, side, side, 1), np.uint8)
    images[:, side // 2 - 3:side // 2 + 3, side // 2 - 3:side // 2 + 3] = 255
    return images


def test_affine_moves_each_image_its_own_way_within_the_bounds():
    images, side = blob_images(), 28
    x, _ = next(iter(make_dataset(images, np.arange(N), N, training=True, augment="affine",
                                  seed=2)))
    x = x.numpy()[..., 0]
    assert x.min() >= 0 and x.max() <= 255 and x[:, 0, 0].max() == 0  # filled black
    grid = np.arange(side)
    mass = x.sum(axis=(1, 2))
    centre_y = (x.sum(axis=2) @ grid) / mass
    centre_x = (x.sum(axis=1) @ grid) / mass
    shift = np.hypot(centre_y - (side - 1) / 2, centre_x - (side - 1) / 2)
    # a centred blob moves by the translation only (at most 10% of the side on each axis);
    # its area scales by at most (1 +- 10%) squared under the zoom; the rotation keeps both
    assert shift.max() <= np.hypot(2.8, 2.8) + 0.5
    area = mass / (36 * 255)
    assert area.min() >= 0.9**2 - 0.05 and area.max() <= 1.1**2 + 0.05
    assert len(np.unique(shift.round(3))) > N // 2  # drawn per image, not per batch
    assert shift.max() > 0.5  # it did move them


def test_affine_is_reproducible_from_the_seed_and_new_each_epoch():
    def first_batch(seed):
        ds = make_dataset(blob_images(), np.arange(N), N, training=True, augment="affine",
                          seed=seed)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first_batch(5), first_batch(5))
    assert not np.array_equal(first_batch(5), first_batch(6))
    ds = make_dataset(blob_images(), np.zeros(N, int), N, training=True, augment="affine")
    epochs = iter(ds.repeat(2))  # identical images: the outputs differ by the draws alone
    assert not np.array_equal(next(epochs)[0].numpy(), next(epochs)[0].numpy())


def three_value_images(n=N):
    """Copies of one random image whose pixels take only the values 0, 60 and 200."""
    image = np.random.default_rng(0).choice(np.array([0, 60, 200], np.uint8), (SIDE, SIDE, 3))
    return np.broadcast_to(image, (n, SIDE, SIDE, 3)).copy()


def test_randaugment_invents_pixel_values_then_cuts_out():
    """Crop, flip and cutout alone keep every pixel at a source value or cutout's grey; the
    RandAugment operations (brightness, contrast, solarize, interpolated shifts, ...) do not."""
    x, _ = next(iter(make_dataset(three_value_images(), np.arange(N), N, training=True,
                                  augment="randaugment", seed=1)))
    x = x.numpy()
    assert x.dtype == np.float32 and x.shape == (N, SIDE, SIDE, 3)
    assert x.min() >= 0 and x.max() <= 255
    invented = [not set(np.unique(image)) <= {0.0, 60.0, 200.0, 128.0} for image in x]
    assert sum(invented) >= N // 2
    greys = [(image == 128).all(axis=-1).sum() for image in x]  # cutout comes last
    assert min(greys) >= 1
    epochs = iter(make_dataset(three_value_images(), np.zeros(N, int), N, training=True,
                               augment="randaugment").repeat(2))
    assert not np.array_equal(next(epochs)[0].numpy(), next(epochs)[0].numpy())


def test_augment_strength_is_randaugments_factor(monkeypatch):
    """The strength reaches `keras.layers.RandAugment` from `make_dataset` and from a
    `TrainConfig` (Keras owns what its factor does)."""
    from tfhash.data import Images
    from tfhash.model import TrainConfig, training_batches

    factors = []

    class Spy(keras.layers.RandAugment):
        def __init__(self, **kwargs):
            factors.append(kwargs["factor"])
            super().__init__(**kwargs)

    monkeypatch.setattr(keras.layers, "RandAugment", Spy)
    x, _ = next(iter(make_dataset(three_value_images(), np.arange(N), N, training=True,
                                  augment="randaugment", augment_strength=0.1)))
    assert not set(np.unique(x.numpy())) <= {0.0, 60.0, 200.0, 128.0}
    config = TrainConfig(augment="randaugment", augment_strength=0.03, batch_size=N)
    training_batches(Images(three_value_images(), np.arange(N) % 10), config, 10, "none")
    make_dataset(three_value_images(), np.arange(N), N, training=True, augment="randaugment")
    assert factors == [0.1, 0.03, 0.5]


@pytest.mark.parametrize("strength", [0, 1.5, -0.1, True, "0.1"])
def test_augment_strength_outside_0_1_is_refused(strength):
    with pytest.raises(TfhashError, match=r"`augment_strength` must be a number in \(0, 1\]"):
        make_dataset(three_value_images(), np.arange(N), N, training=True,
                     augment="randaugment", augment_strength=strength)


def test_keras_randaugment_solarizes_and_posterizes_harder_when_weaker():
    """What `make_dataset`'s docstring and the notes say of Keras's layer: at strength 0.1
    its solarization inverts nearly every pixel and its posterization keeps one bit, while
    at 0.5 neither always does."""
    images = np.random.default_rng(0).uniform(0, 255, (32, SIDE, SIDE, 3)).astype(np.float32)

    def effects(strength):
        layer = keras.layers.RandAugment(value_range=(0, 255), factor=strength, seed=0)
        solarized = layer.solarization(images, training=True).numpy()
        posterized = layer.random_posterization(images, training=True).numpy()
        correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
                        for a, b in zip(images, solarized)]
        levels = {len(np.unique(image[..., 0])) for image in posterized}
        return np.median(correlations), levels

    correlation, levels = effects(0.1)
    assert correlation < -0.99 and levels == {2}
    correlation, levels = effects(0.5)
    assert correlation > -0.97 and max(levels) > 2


def grey_images(value=200):
    return np.full((N, SIDE, SIDE, 3), value, np.uint8)


def far_from_grey(images, value=200, tolerance=25):
    """Per image, whether a pixel other than cutout's 128 lies more than ``tolerance`` from
    ``value``."""
    off = (np.abs(images - value) > tolerance) & (images != 128)
    return off.any(axis=(1, 2, 3))


def test_mild_randaugment_keeps_a_grey_image_grey_where_keras_randaugment_inverts_it():
    """On a flat grey image the mild operations can only brighten or darken it a little (by
    up to 0.045 of the range at strength 0.1, plus sharpening's rim); Keras's RandAugment at
    the same strength solarizes some of them (200 becomes about 55)."""
    mild = np.concatenate([x.numpy() for x, _ in make_dataset(
        grey_images(), np.arange(N), N, training=True, augment="mild_randaugment",
        augment_strength=0.1).repeat(4)])
    assert not far_from_grey(mild).any()
    keras_ra = np.concatenate([x.numpy() for x, _ in make_dataset(
        grey_images(), np.arange(N), N, training=True, augment="randaugment",
        augment_strength=0.1).repeat(4)])
    assert far_from_grey(keras_ra).any()


def test_mild_randaugment_draws_per_image_both_ways():
    """Identical grey images come out brightened or darkened by amounts of their own (Keras's
    RandAugment brightens only), and cutout still comes last."""
    x = np.concatenate([x.numpy() for x, _ in make_dataset(
        grey_images(), np.arange(N), N, training=True, augment="mild_randaugment",
        augment_strength=0.5, seed=4).repeat(4)])
    means = np.nanmean(np.where(x == 128, np.nan, x), axis=(1, 2, 3))
    assert (means > 205).any() and (means < 195).any()
    assert len(np.unique(np.round(means[np.abs(means - 200) > 5]))) >= 6  # > 4 batches
    assert min((image == 128).all(axis=-1).sum() for image in x) >= 1


def test_mild_randaugment_takes_grayscale_images():
    """The colour operations leave one channel one channel (the digits' datasets)."""
    images = np.random.default_rng(2).integers(0, 256, (N, 28, 28, 1), dtype=np.uint8)
    x, _ = next(iter(make_dataset(images, np.arange(N), N, training=True,
                                  augment="mild_randaugment")))
    assert x.shape == (N, 28, 28, 1) and 0 <= x.numpy().min() and x.numpy().max() <= 255
    assert not set(np.unique(x.numpy())) <= set(np.unique(images)) | {128}


def test_keras_randaugment_brightens_and_raises_contrast_one_way_only():
    """What `mild_operations`'s docstring says of Keras's layer (3.15): its brightness never
    darkens and its contrast never lowers, where the mild operations do both."""
    images = np.random.default_rng(1).uniform(50, 200, (64, SIDE, SIDE, 3)).astype(np.float32)
    layer = keras.layers.RandAugment(value_range=(0, 255), factor=0.5, seed=0)
    brightened = layer.random_brightness(images, training=True).numpy()
    contrasted = layer.random_contrast(images, training=True).numpy()
    assert (brightened.mean(axis=(1, 2, 3)) >= images.mean(axis=(1, 2, 3)) - 1e-3).all()
    assert (contrasted.std(axis=(1, 2)) >= images.std(axis=(1, 2)) - 1e-3).all()
    brightness, contrast = mild_operations(0.5)[3:5]
    darker = brightness(images, training=True).numpy().mean(axis=(1, 2, 3))
    flatter = contrast(images, training=True).numpy().std(axis=(1, 2))
    assert (darker < images.mean(axis=(1, 2, 3)) - 1).any()
    assert (flatter < images.std(axis=(1, 2)) - 1).any()


def test_mild_operations_scale_with_strength():
    """A smooth colour image: near the identity at strength 0.001, far from it at 1 (16
    calls of two draws each: every one of the seven operations about four times)."""
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 255, SIDE, dtype=np.float32)
    image = np.stack([np.add.outer(rows, rows) / 2, np.add.outer(rows, -rows) / 2 + 128,
                      rng.uniform(100, 150, (SIDE, SIDE))], axis=-1).astype(np.float32)

    def mean_change(strength):
        operations = mild_operations(strength, seed=1)
        return np.mean([np.abs(apply_random_operations(tf.constant(image), operations)
                               .numpy() - image).mean() for _ in range(16)])

    assert mean_change(0.001) < 1.0
    assert mean_change(1.0) > 10.0


def test_apply_random_operations_applies_count_draws_with_repeats():
    operations = [lambda image, training: image + 1, lambda image, training: image + 10]
    image = tf.zeros((2, 2, 1))
    added = {float(apply_random_operations(image, operations)[0, 0, 0]) for _ in range(40)}
    assert added == {2.0, 11.0, 20.0}
    once = {float(apply_random_operations(image, operations, count=1)[0, 0, 0])
            for _ in range(20)}
    assert once == {1.0, 10.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"operations": []}, "`operations` must hold at least one operation"),
    ({"count": 0}, "`count` must be an integer >= 1, got 0"),
    ({"count": 2.0}, "`count` must be an integer >= 1, got 2.0"),
])
def test_apply_random_operations_refuses_bad_arguments(kwargs, message):
    arguments = {"image": tf.zeros((2, 2, 1)), "operations": mild_operations(0.1), **kwargs}
    with pytest.raises(TfhashError, match=message):
        apply_random_operations(**arguments)


@pytest.mark.parametrize("strength", [0, 1.5, True])
def test_mild_operations_refuse_a_strength_outside_0_1(strength):
    with pytest.raises(TfhashError, match=r"`strength` must be a number in \(0, 1\]"):
        mild_operations(strength)


def test_randaugment_computes_in_float32_under_a_bfloat16_policy():
    """The augmentation is data: under mixed_bfloat16 it must not round pixels to bfloat16
    (whose step is 0.5 to 1 between 64 and 255)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x, _ = next(iter(make_dataset(three_value_images(), np.arange(N), N, training=True,
                                      augment="randaugment", seed=2)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    x = x.numpy()
    as_bfloat16 = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()
    assert np.mean(x != as_bfloat16) > 0.01
