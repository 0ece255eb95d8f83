"""Test-time averaged encodings against numpy references: HorizontalFlip and
model.flip_averaged, Shift and model.shift_averaged, model.flip_and_shift_averaged."""

import keras
import numpy as np
import pytest

from tfhash import model
from tfhash.errors import TfhashError
from tfhash.evaluation import encode_heads
from tfhash.export import export_onnx
from tfhash.layers import HashingHead, HorizontalFlip, Shift


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


def shifted(images, rows, cols):
    """``images`` moved ``rows`` down and ``cols`` right, vacated pixels 0 (by index)."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    for i in range(h):
        for j in range(w):
            if 0 <= i - rows < h and 0 <= j - cols < w:
                out[:, i, j] = images[:, i - rows, j - cols]
    return out


@pytest.mark.parametrize("rows, cols", [(0, 1), (0, -2), (1, 0), (-1, 0), (2, -3), (0, 0)])
def test_shift_moves_content_and_fills_with_zero(rows, cols):
    x = np.random.default_rng(2).uniform(1, 255, (2, 6, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Shift(rows, cols)(x)),
                                  shifted(x, rows, cols))


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 1.5}, "`rows` must be an integer"),
    ({"cols": True}, "`cols` must be an integer"),
])
def test_shift_rejects_non_integer_shifts(kwargs, message):
    with pytest.raises(TfhashError, match=message):
        Shift(**kwargs)


def test_shift_rejects_a_shift_as_large_as_the_image():
    with pytest.raises(TfhashError, match="`cols` must be under the width 4"):
        Shift(0, 4)(np.zeros((1, 3, 4, 1), np.float32))


def test_shift_averaged_codes_average_the_image_and_its_four_shifts(heads, images):
    averaged = model.shift_averaged(heads, pixels=2)
    assert set(averaged) == {12, 24}
    views = [images] + [shifted(images, r, c) for r, c in ((-2, 0), (2, 0), (0, -2), (0, 2))]
    for bits, head in heads.items():
        reference = np.mean([head.predict(v, verbose=0) for v in views], axis=0)
        np.testing.assert_allclose(averaged[bits].predict(images, verbose=0), reference,
                                   atol=1e-5)


def test_flip_and_shift_averaged_codes_average_ten_views(heads, images):
    averaged = model.flip_and_shift_averaged(heads)
    assert set(averaged) == {12, 24}
    moved = [images] + [shifted(images, r, c) for r, c in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    views = moved + [view[:, :, ::-1] for view in moved]
    for bits, head in heads.items():
        reference = np.mean([head.predict(v, verbose=0) for v in views], axis=0)
        np.testing.assert_allclose(averaged[bits].predict(images, verbose=0), reference,
                                   atol=1e-5)
    single = model.view_averaged(heads[12], "flip+shift")
    np.testing.assert_allclose(single.predict(images, verbose=0),
                               averaged[12].predict(images, verbose=0), atol=1e-6)


def test_shift_averaged_saves_loads_and_exports_to_onnx(heads, images, tmp_path):
    import onnxruntime as ort

    averaged = model.shift_averaged(heads[12])
    expected = averaged.predict(images, verbose=0)
    averaged.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    session = ort.InferenceSession(str(export_onnx(averaged, tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"images": images})))
    np.testing.assert_allclose(out["relaxed"], expected, atol=1e-4)


@pytest.mark.parametrize("pixels", [0, -1, 1.0, True])
def test_shift_averaged_rejects_a_bad_shift(heads, pixels):
    with pytest.raises(TfhashError, match="`pixels` must be an integer >= 1"):
        model.shift_averaged(heads, pixels=pixels)


def test_shift_averaged_rejects_heads_that_do_not_share_their_input(heads):
    other = model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1)), 12)
    with pytest.raises(TfhashError, match="shift_averaged: the hashers"):
        model.shift_averaged({12: heads[12], 24: other})
