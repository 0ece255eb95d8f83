"""Export contract: TF Serving layout, signatures, REST-shaped requests, ONNX parity."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfhash import data, model
from tfhash.export import export, export_onnx, export_savedmodel, next_version

sys.path.insert(0, str(Path(__file__).parents[1] / "export"))
from rest_client import build_request  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    keras_seed = 3
    tf.keras.utils.set_random_seed(keras_seed)
    return model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1)), 12)


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("mnist-5k").train.images[:64].astype(np.float32)


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving")
    return out, export_savedmodel(encoder, out, name="digits")


def packbits_reference(codes):
    return np.packbits(codes > 0, axis=1)


def test_layout_and_version_numbering(encoder, exported):
    out, path = exported
    assert path == out / "digits" / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert next_version(out / "digits") == 2
    with pytest.raises(ValueError, match="already exists"):
        export_savedmodel(encoder, out, name="digits", version=1)
    assert export_savedmodel(encoder, out, name="digits", version=7).name == "7"
    assert next_version(out / "digits") == 8


def test_failed_export_leaves_nothing(encoder, tmp_path, monkeypatch):
    real_save = tf.saved_model.save

    def crash_midway(obj, path, signatures=None):
        real_save(obj, path, signatures=signatures)  # files are written, then it dies
        raise RuntimeError("killed")

    monkeypatch.setattr(tf.saved_model, "save", crash_midway)
    with pytest.raises(RuntimeError):
        export_savedmodel(encoder, tmp_path, name="m")
    assert list((tmp_path / "m").iterdir()) == []


SERVER_SIDE = r"""
import base64, json, sys
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
body = json.loads(open(sys.argv[2]).read())
fn = loaded.signatures[body["signature_name"]]
spec = list(fn.structured_input_signature[1].values())[0]
rows = body["instances"]
if isinstance(rows[0], dict):  # TF Serving decodes {"b64": ...} to bytes
    value = tf.constant([base64.b64decode(r["b64"]) for r in rows])
else:
    value = tf.constant(rows, dtype=spec.dtype)
out = fn(**{spec.name: value})
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def serve_in_fresh_process(version_dir, body, tmp_path):
    (tmp_path / "body.json").write_text(json.dumps(body))
    (tmp_path / "server.py").write_text(SERVER_SIDE)
    proc = subprocess.run([sys.executable, str(tmp_path / "server.py"), str(version_dir),
                           str(tmp_path / "body.json")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {k: np.array(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def test_rest_instances_request_in_fresh_process(encoder, exported, digits, tmp_path):
    _, path = exported
    out = serve_in_fresh_process(path, build_request(images=digits[:5]), tmp_path)
    relaxed = encoder.predict(digits[:5], verbose=0)
    np.testing.assert_allclose(out["relaxed"], relaxed, atol=1e-5)
    codes = np.where(relaxed >= 0, 1, -1)
    np.testing.assert_array_equal(out["codes"], codes)
    np.testing.assert_array_equal(out["packed"], packbits_reference(codes))


def test_rest_b64_request_in_fresh_process(encoder, exported, digits, tmp_path):
    _, path = exported
    files = []
    for i, image in enumerate(digits[:3].astype(np.uint8)):
        files.append(tmp_path / f"d{i}.png")
        Image.fromarray(image[..., 0]).save(files[-1])
    out = serve_in_fresh_process(path, build_request(image_files=files), tmp_path)
    np.testing.assert_allclose(out["relaxed"], encoder.predict(digits[:3], verbose=0), atol=1e-5)


def test_signatures_reject_bad_inputs(exported, digits):
    _, path = exported
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        fn(images=tf.constant(digits[:2], tf.float64))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        fn(images=tf.zeros((2, 32, 32, 3)))
    decode = loaded.signatures["encode_images"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a JPEG or PNG"):
        decode(image_bytes=tf.constant([b"this is not an image"]))
    buffer = io.BytesIO()
    Image.fromarray(digits[0, ..., 0].astype(np.uint8)).save(buffer, format="PNG")
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode(image_bytes=tf.constant([buffer.getvalue()[:40]]))  # truncated PNG


def test_saved_model_cli_shows_signatures(exported):
    _, path = exported
    cli = Path(sys.executable).parent / "saved_model_cli"
    proc = subprocess.run([str(cli), "show", "--dir", str(path), "--all"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "signature_def['serving_default']" in text and "signature_def['encode_images']" in text
    assert "dtype: DT_FLOAT" in text and "shape: (-1, 28, 28, 1)" in text
    assert "dtype: DT_INT8" in text and "shape: (-1, 12)" in text
    assert "dtype: DT_UINT8" in text and "shape: (-1, 2)" in text
    assert "dtype: DT_STRING" in text


def test_onnx_parity_on_real_images(encoder, digits, tmp_path):
    import onnxruntime as ort

    path = export_onnx(encoder, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"images": digits})))
    relaxed = encoder.predict(digits, verbose=0)
    assert np.abs(out["relaxed"] - relaxed).max() <= 1e-4
    codes = np.where(relaxed >= 0, 1, -1)
    confident = np.abs(relaxed) >= 1e-4
    np.testing.assert_array_equal(out["codes"][confident], codes[confident])
    np.testing.assert_array_equal(out["packed"], packbits_reference(out["codes"]))
    assert out["codes"].dtype == np.int8 and out["packed"].dtype == np.uint8


def test_export_both_formats(encoder, tmp_path):
    paths = export(encoder, tmp_path, name="both")
    assert paths["savedmodel"].name == "1" and paths["onnx"].name == "both-1.onnx"
    with pytest.raises(ValueError, match="formats"):
        export(encoder, tmp_path, formats=("tflite",))


def test_an_ensemble_encoder_reloads_safely_and_exports_with_the_same_codes(digits, tmp_path):
    from tfhash.backbones import ensemble

    tf.keras.utils.set_random_seed(5)
    members = [model.get_backbone("mnist_cnn", (28, 28, 1), width=4) for _ in range(2)]
    assert_reloads_and_serves_the_same_codes(model.build_hasher(ensemble(members), 12), digits,
                                             tmp_path)


def assert_reloads_and_serves_the_same_codes(encoder, digits, tmp_path):
    """``encoder`` saved and loaded safely predicts the same relaxed codes, and serves them
    from SavedModel and ONNX Runtime."""
    import onnxruntime as ort

    from tfhash.artifacts import load_encoder, save_encoder

    relaxed = encoder.predict(digits, verbose=0)
    save_encoder(encoder, tmp_path / "encoder.keras")
    loaded, meta = load_encoder(tmp_path / "encoder.keras")
    assert meta["bits"] == relaxed.shape[1]
    np.testing.assert_array_equal(loaded.predict(digits, verbose=0), relaxed)
    served = tf.saved_model.load(str(export_savedmodel(loaded, tmp_path, name="encoder")))
    out = served.signatures["serving_default"](images=tf.constant(digits))
    np.testing.assert_allclose(out["relaxed"].numpy(), relaxed, atol=1e-5)
    session = ort.InferenceSession(str(export_onnx(loaded, tmp_path / "encoder.onnx")),
                                   providers=["CPUExecutionProvider"])
    onnx_relaxed = session.run(["relaxed"], {"images": digits})[0]
    np.testing.assert_allclose(onnx_relaxed, relaxed, atol=1e-4)


def peaked_classifier():
    """A tiny untrained classifier whose logits are scaled up: sure and unsure images."""
    tf.keras.utils.set_random_seed(6)
    classifier = model.build_classifier(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 10)
    kernel, bias = classifier.get_layer("classes").get_weights()
    classifier.get_layer("classes").set_weights([kernel * 100, bias])
    return classifier


def test_a_graded_hasher_exports_with_the_same_codes(digits, tmp_path):
    import onnxruntime as ort

    from tfhash.codebooks import class_codebook

    classifier = peaked_classifier()
    hasher = model.build_graded_hasher(classifier, 12)
    codes = hasher.predict(digits, verbose=0)
    probs = classifier.predict(digits, verbose=0)
    shifts = (codes != class_codebook(10, 12)[probs.argmax(1)]).sum(1)
    assert set(shifts) == {0, 1, 2}  # every shift the 12-bit codebook allows is exported
    served = tf.saved_model.load(str(export_savedmodel(hasher, tmp_path, name="graded")))
    out = served.signatures["serving_default"](images=tf.constant(digits))
    np.testing.assert_array_equal(out["codes"].numpy(), codes)
    np.testing.assert_array_equal(out["packed"].numpy(), packbits_reference(codes))
    session = ort.InferenceSession(str(export_onnx(hasher, tmp_path / "graded.onnx")),
                                   providers=["CPUExecutionProvider"])
    onnx_codes, onnx_packed = session.run(["codes", "packed"], {"images": digits})
    np.testing.assert_array_equal(onnx_codes, codes)
    np.testing.assert_array_equal(onnx_packed, packbits_reference(codes))


@pytest.mark.parametrize("bits", [12, 24])
def test_a_fitted_hasher_exports_with_the_same_codes(digits, tmp_path, bits):
    """FittedClassCodes in one block (12 bits) and in two searched in turn (24)."""
    from tfhash.codebooks import class_codebook

    classifier = peaked_classifier()
    hasher = model.build_graded_hasher(classifier, bits, temperature=0.125)
    codes = hasher.predict(digits, verbose=0)
    probs = classifier.predict(digits, verbose=0)
    moved = (codes != class_codebook(10, bits)[probs.argmax(1)]).sum(1)
    assert moved.min() == 0 and moved.max() > 0  # codes on and off their class's codeword
    assert_serves_the_same_codes(hasher, digits, codes, tmp_path)


def assert_serves_the_same_codes(query, digits, codes, tmp_path):
    """``query`` predicts ``codes`` and serves them from SavedModel and ONNX Runtime."""
    import onnxruntime as ort

    np.testing.assert_array_equal(query.predict(digits, verbose=0), codes)
    served = tf.saved_model.load(str(export_savedmodel(query, tmp_path, name="query")))
    out = served.signatures["serving_default"](images=tf.constant(digits))
    np.testing.assert_array_equal(out["codes"].numpy(), codes)
    session = ort.InferenceSession(str(export_onnx(query, tmp_path / "query.onnx")),
                                   providers=["CPUExecutionProvider"])
    onnx_codes, onnx_packed = session.run(["codes", "packed"], {"images": digits})
    np.testing.assert_array_equal(onnx_codes, codes)
    np.testing.assert_array_equal(onnx_packed, packbits_reference(codes))


def test_a_query_hasher_of_asymmetric_codes_exports_with_the_same_codes(digits, tmp_path):
    from tfhash.codebooks import class_codebook

    tf.keras.utils.set_random_seed(7)
    classifier = model.build_classifier(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 10)
    query = model.build_query_hasher(model.build_graded_hasher(classifier, 12))
    probs = classifier.predict(digits, verbose=0)
    assert len(set(probs.argmax(1))) > 1  # more than one codeword is exported
    codes = class_codebook(10, 12)[probs.argmax(1)].astype(np.float32)
    assert_serves_the_same_codes(query, digits, codes, tmp_path)


def test_a_query_hasher_of_learned_codes_exports_with_the_same_codes(digits, tmp_path):
    from tfhash.codebooks import class_codebook

    tf.keras.utils.set_random_seed(8)
    hasher = model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 12)
    centres = class_codebook(10, 12)
    query = model.build_query_hasher(hasher, centres)
    agree = np.where(hasher.predict(digits, verbose=0) >= 0, 1, -1) @ centres.T
    nearest = agree.argmax(1)  # argmax takes the first row on ties, as the layer must
    assert len(set(nearest)) > 1
    assert_serves_the_same_codes(query, digits, centres[nearest].astype(np.float32), tmp_path)


def test_a_whitening_stem_reloads_safely_and_exports_with_the_same_codes(digits, tmp_path):
    from tfhash.whitening import adapt_whitening

    tf.keras.utils.set_random_seed(9)
    backbone = model.get_backbone("mnist_cnn", (28, 28, 1), width=4, stem="whitening")
    assert adapt_whitening(backbone, digits) == 1  # the saved filters are not the initial ones
    assert_reloads_and_serves_the_same_codes(model.build_hasher(backbone, 12), digits, tmp_path)
