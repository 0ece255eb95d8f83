"""PatchWhitening against a brute-force numpy whitening; the whitening stem in training."""

import keras
import numpy as np
import pytest

from tfhash import data, model
from tfhash.backbones import get_backbone
from tfhash.errors import TfhashError
from tfhash.whitening import PatchWhitening, adapt_whitening


def correlated_images(n=40, size=9, channels=3, seed=0):
    """Images whose neighbouring pixels and channels are correlated, as in photographs, on
    the raw pixel scale."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, size + 1, size + 1, channels))
    smooth = noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1]
    mixed = smooth @ (np.eye(channels) + 0.5)  # every channel shares the others
    return 128 + 30 * mixed


def loop_patches(images, p, fill):
    """Every p x p patch (one per pixel, as "same" padding gives: (p - 1) // 2 rows and
    columns before the image, the rest after, reading ``fill``) flattened in (row, column,
    channel) order, by plain loops."""
    n, h, w, c = images.shape
    padded = np.empty((n, h + p - 1, w + p - 1, c))
    padded[:] = fill
    before = (p - 1) // 2
    padded[:, before:before + h, before:before + w] = images
    out = np.empty((n, h, w, p * p * c))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = padded[:, i:i + p, j:j + p].reshape(n, -1)
    return out


@pytest.mark.parametrize("patch_size, channels, epsilon", [(2, 3, 0.0), (3, 1, 0.0),
                                                           (2, 3, 0.01)])
def test_outputs_have_the_mahalanobis_norm_of_the_patches(patch_size, channels, epsilon):
    images = correlated_images(channels=channels)
    layer = PatchWhitening(patch_size, epsilon=epsilon)
    layer.adapt(images)
    out = np.asarray(layer(images), dtype="float64")
    d = patch_size**2 * channels
    assert out.shape == (*images.shape[:3], 2 * d)
    np.testing.assert_allclose(out[..., d:], -out[..., :d], atol=1e-6)
    # reference: the covariance of every patch inside the images, by loops
    mean = images.mean(axis=(0, 1, 2))
    patches = loop_patches(images, patch_size, mean) - np.tile(mean, patch_size**2)
    before, after = (patch_size - 1) // 2, patch_size // 2  # the padding
    height, width = images.shape[1:3]
    inside = patches[:, before:height - after, before:width - after].reshape(-1, d)
    cov = np.cov(inside, rowvar=False)
    largest = np.linalg.eigvalsh(cov).max()
    precision = np.linalg.inv(cov + epsilon * largest * np.eye(d))
    # |whitened patch|^2 = (x - mean)^T (cov + eps)^-1 (x - mean), whatever the basis; at
    # the last rows and columns too, where "same" padding reads the mean
    expected = np.einsum("...i,ij,...j->...", patches, precision, patches)
    np.testing.assert_allclose((out[..., :d] ** 2).sum(-1), expected, rtol=2e-3, atol=1e-3)


def test_adapted_outputs_are_white_on_the_adapt_images():
    images = correlated_images()
    layer = PatchWhitening(2, epsilon=0.0)
    layer.adapt(images)
    inside = np.asarray(layer(images))[:, :-1, :-1, :12].reshape(-1, 12)
    # near zero: the centring is on every pixel's mean, these patches miss the last row
    np.testing.assert_allclose(inside.mean(0), 0, atol=0.05)
    np.testing.assert_allclose(np.cov(inside, rowvar=False), np.eye(12), atol=2e-3)
    sampled = PatchWhitening(2, epsilon=0.0)
    sampled.adapt(images, max_patches=1000)  # an estimate from 1,000 of 2,560 patches
    assert not np.allclose(np.asarray(sampled.kernel), np.asarray(layer.kernel), atol=1e-3)
    inside = np.asarray(sampled(images))[:, :-1, :-1, :12].reshape(-1, 12)
    np.testing.assert_allclose(np.cov(inside, rowvar=False), np.eye(12), atol=0.25)


def test_before_adapt_the_layer_passes_the_patch_values():
    images = correlated_images(n=2, size=5)
    out = np.asarray(PatchWhitening(2)(images))
    np.testing.assert_allclose(out[..., :12], loop_patches(images, 2, 0.0), rtol=1e-6)


def test_it_computes_in_float32_under_a_mixed_policy():
    with model.precision_policy("mixed_bfloat16"):
        layer = PatchWhitening(2)
        inputs = keras.Input((8, 8, 3))
        outputs = layer(inputs)
    assert layer.compute_dtype == "float32" and outputs.dtype == "float32"


def test_adapted_filters_save_and_load_with_the_model(tmp_path):
    images = correlated_images()
    inputs = keras.Input(images.shape[1:])
    saved = keras.Model(inputs, PatchWhitening(2, epsilon=0.01)(inputs))
    assert adapt_whitening(saved, images) == 1
    saved.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.layers[-1]
    assert isinstance(layer, PatchWhitening) and layer.is_adapted
    assert (layer.patch_size, layer.epsilon) == (2, 0.01)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  saved.predict(images, verbose=0))
    before = layer.get_weights()
    assert adapt_whitening(loaded, images[:5] * 2) == 0  # adapted layers are kept
    for new, old in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(new, old)


def test_a_stem_shared_by_two_nested_models_is_adapted_once():
    images = correlated_images()
    stem = PatchWhitening(2)
    nested = []
    for name in ("left", "right"):
        inputs = keras.Input(images.shape[1:])
        nested.append(keras.Model(inputs, stem(inputs), name=name))
    outer_inputs = keras.Input(images.shape[1:])
    outer = keras.Model(outer_inputs, keras.layers.Add()([m(outer_inputs) for m in nested]))
    assert adapt_whitening(outer, images) == 1  # found through both models, adapted once
    assert stem.is_adapted


@pytest.mark.parametrize("kwargs, message", [
    ({"patch_size": 0}, "`patch_size` must be an integer >= 1, got 0"),
    ({"patch_size": True}, "`patch_size` must be an integer >= 1, got True"),
    ({"patch_size": 2.0}, "`patch_size` must be an integer >= 1, got 2.0"),
    ({"epsilon": -1e-3}, "`epsilon` must be a number >= 0, got -0.001"),
    ({"epsilon": True}, "`epsilon` must be a number >= 0, got True"),
])
def test_bad_layer_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(TfhashError, match=message):
        PatchWhitening(**kwargs)


@pytest.mark.parametrize("images, kwargs, message", [
    (np.zeros((4, 8, 8)), {}, "`images` must be \\(n, height, width, channels\\)"),
    (np.zeros((4, 1, 8, 3)), {}, "height and width >= patch_size \\(2\\)"),
    (np.zeros((0, 8, 8, 3)), {}, "`images` must hold at least one image"),
    (np.zeros((4, 8, 8, 1)), {}, "`images` must have 3 channels"),
    (np.zeros((4, 8, 8, 3)), {"max_patches": 1}, "`max_patches` must be an integer >= 2"),
])
def test_bad_adapt_arguments_are_refused_by_name(images, kwargs, message):
    layer = PatchWhitening(2)
    layer.build((None, 8, 8, 3))
    with pytest.raises(TfhashError, match=message):
        layer.adapt(images, **kwargs)
    with pytest.raises(TfhashError, match="`model` must be a keras.Model, got PatchWhitening"):
        adapt_whitening(layer, images)


def test_the_whitening_stem_is_a_backbone_and_config_option():
    for name, shape, channels in (("cifar_resnet", (32, 32, 3), 24),
                                  ("mnist_cnn", (28, 28, 1), 18)):
        backbone = get_backbone(name, shape, width=4, stem="whitening")
        stem = backbone.get_layer("whitening")
        assert isinstance(stem, PatchWhitening) and stem.output.shape[-1] == channels
    config = model.TrainConfig(backbone_stem="whitening", backbone_width=4)
    assert isinstance(config.make_backbone((32, 32, 3)).layers[1], PatchWhitening)
    plain = model.TrainConfig(backbone_width=4).make_backbone((32, 32, 3))
    assert not any(isinstance(layer, PatchWhitening) for layer in plain.layers)
    with pytest.raises(TfhashError, match="`stem` must be one of \\('conv', 'whitening'\\)"):
        get_backbone("cifar_resnet", (32, 32, 3), stem="pca")
    with pytest.raises(TfhashError, match="`backbone_stem` must be one of"):
        model.TrainConfig(backbone_stem="pca")
    with pytest.raises(TfhashError, match="applies to the built-in backbones"):
        model.TrainConfig(backbone_stem="whitening", backbone="applications.MobileNetV3Small")


@pytest.fixture(scope="module")
def digits_split():
    order = np.random.default_rng(0).permutation(5000)[:500]  # the file is sorted by class
    images = data.load_dataset("mnist-5k").train.take(order)
    return data.Split("cnnh", 0, images.take(slice(0, 300)), images.take(slice(0, 0)),
                      images.take(slice(300, 340)), images.take(slice(340, 500)))


@pytest.mark.parametrize("pretrain", [True, False])
def test_training_adapts_the_stem_to_the_training_images(digits_split, pretrain):
    config = model.TrainConfig(bits=(12,), backbone_stem="whitening", backbone_width=4,
                               pretrain=pretrain, pretrain_epochs=1, hash_epochs=1)
    result = model.fit_two_phase(digits_split, config, verbose=0)
    stem = result.hashers[12].get_layer("mnist_cnn").get_layer("whitening")
    reference = PatchWhitening(3)
    reference.adapt(digits_split.train.images)  # the training images, not query or database
    assert stem.is_adapted
    for trained, fitted in zip(stem.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(trained, fitted, rtol=1e-6, atol=1e-6)
