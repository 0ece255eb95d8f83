"""Flip-averaged encoding: HorizontalFlip and model.flip_averaged against numpy references."""

import keras
import numpy as np
import pytest

from tfhash import model
from tfhash.errors import TfhashError
from tfhash.evaluation import encode_heads
from tfhash.export import export_onnx
from tfhash.layers import HashingHead, HorizontalFlip


@pytest.fixture(scope="module")
def heads():
    keras.utils.set_random_seed(5)
    backbone = model.get_backbone("mnist_cnn", (28, 28, 1))
    inputs = keras.Input((28, 28, 1), name="images")
    features = backbone(inputs)
    return {bits: keras.Model(inputs, HashingHead(bits, name=f"codes_{bits}")(features))
            for bits in (12, 24)}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype(np.float32)


def test_horizontal_flip_reverses_the_width_axis_only():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(HorizontalFlip()(x)),
                                  x[:, :, ::-1, :])
    with pytest.raises(TfhashError, match="height, width, channels"):
        HorizontalFlip()(x[0])


def test_codes_average_the_image_and_its_mirror(heads, images):
    averaged = model.flip_averaged(heads)
    assert set(averaged) == {12, 24}
    for bits, head in heads.items():
        reference = (head.predict(images, verbose=0)
                     + head.predict(images[:, :, ::-1], verbose=0)) / 2
        relaxed = averaged[bits].predict(images, verbose=0)
        np.testing.assert_allclose(relaxed, reference, atol=1e-5)
        # an image and its mirror share a code
        np.testing.assert_array_equal(model.encode(averaged[bits], images, verbose=0),
                                      model.encode(averaged[bits], images[:, :, ::-1], verbose=0))
    joint = encode_heads(averaged, images)  # one forward pass for all heads
    for bits in heads:
        np.testing.assert_array_equal(joint[bits], model.encode(averaged[bits], images, verbose=0))


def test_single_model_in_single_model_out(heads, images):
    averaged = model.flip_averaged(heads[12])
    assert isinstance(averaged, keras.Model) and averaged.output_shape == (None, 12)


def test_saves_and_loads_without_unsafe_deserialization(heads, images, tmp_path):
    averaged = model.flip_averaged(heads[24])
    averaged.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               averaged.predict(images, verbose=0), atol=1e-6)


def test_onnx_export_keeps_the_mirror(heads, images, tmp_path):
    import onnxruntime as ort

    averaged = model.flip_averaged(heads[12])
    session = ort.InferenceSession(str(export_onnx(averaged, tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"images": images})))
    np.testing.assert_allclose(out["relaxed"], averaged.predict(images, verbose=0), atol=1e-4)


@pytest.mark.parametrize("bad, message", [
    ("not a model", "keras.Model or a non-empty dict"),
    ({}, "keras.Model or a non-empty dict"),
])
def test_rejects_what_is_not_a_hasher(bad, message):
    with pytest.raises(TfhashError, match=message):
        model.flip_averaged(bad)


def test_rejects_heads_that_do_not_share_their_input(heads):
    other = model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1)), 12)
    with pytest.raises(TfhashError, match="share their input"):
        model.flip_averaged({12: heads[12], 24: other})


def test_rejects_hashers_of_non_images():
    flat = keras.Sequential([keras.Input((8,)), HashingHead(12)])
    with pytest.raises(TfhashError, match="height, width, channels"):
        model.flip_averaged(flat)
