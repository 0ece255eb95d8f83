"""Serving without TensorFlow: the exported ONNX file in ONNX Runtime, against the Keras
encoder it came from, and searching an index with it in a process that cannot import
TensorFlow or Keras."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tfhash import cli, data, model
from tfhash.artifacts import fingerprint, save_encoder
from tfhash.errors import TfhashError
from tfhash.export import export_onnx
from tfhash.index import HammingIndex
from tfhash.onnx_encoder import OnnxEncoder

CLIENT = Path(__file__).parents[1] / "export" / "onnx_client.py"


def make_encoder(seed, bits=12):
    import keras

    keras.utils.set_random_seed(seed)
    return model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), bits)


@pytest.fixture(scope="module")
def encoder():
    return make_encoder(3)


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("mnist-5k").train.images[:50]


@pytest.fixture(scope="module")
def onnx_path(encoder, tmp_path_factory):
    return export_onnx(encoder, tmp_path_factory.mktemp("onnx") / "digits.onnx",
                       metadata={"dataset": "mnist-5k", "class_names": np.array(["0", "1"]),
                                 "seed": np.int64(7)})


def rewrite_metadata(source, target, value):
    """A copy of the ONNX file ``source`` whose tfhash metadata is ``value`` (None: none)."""
    proto = onnx.load(str(source))
    kept = [p for p in proto.metadata_props if p.key != "tfhash"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    if value is not None:
        proto.metadata_props.add(key="tfhash", value=value)
    onnx.save(proto, str(target))
    return target


def test_codes_equal_the_keras_encoders_and_the_metadata_names_it(encoder, digits, onnx_path):
    onnx_encoder = OnnxEncoder(onnx_path)
    assert onnx_encoder.bits == 12 and onnx_encoder.image_shape == (28, 28, 1)
    assert onnx_encoder.fingerprint == fingerprint(encoder)
    assert onnx_encoder.metadata["dataset"] == "mnist-5k"
    assert onnx_encoder.metadata["class_names"] == ["0", "1"]  # numpy, written as JSON
    assert onnx_encoder.metadata["seed"] == 7
    relaxed = encoder.predict(digits.astype(np.float32), verbose=0)
    codes = onnx_encoder.encode(digits, batch_size=7)  # uint8 pixels, a ragged last batch
    assert codes.dtype == np.int8 and codes.shape == (50, 12)
    confident = np.abs(relaxed) >= 1e-4  # a sign within float error of 0 may differ
    assert confident.mean() > 0.99
    np.testing.assert_array_equal(codes[confident], np.where(relaxed >= 0, 1, -1)[confident])
    assert onnx_encoder.encode(digits[:0]).shape == (0, 12)
    assert "bits=12" in repr(onnx_encoder)


def test_an_index_accepts_the_export_of_the_encoder_that_built_it_and_no_other(
        encoder, digits, onnx_path, tmp_path):
    index = HammingIndex(12, fingerprint=fingerprint(encoder))
    index.add(model.encode(encoder, digits, verbose=0))
    index.save(tmp_path / "ix")
    onnx_encoder = OnnxEncoder(onnx_path)
    loaded = HammingIndex.load(tmp_path / "ix", bits=onnx_encoder.bits,
                               fingerprint=onnx_encoder.fingerprint)
    ids, distances = loaded.search(onnx_encoder.encode(digits[:5]), k=1)
    assert (distances[:, 0] == 0).all()  # each image finds its own code
    other = OnnxEncoder(export_onnx(make_encoder(4), tmp_path / "other.onnx"))
    assert other.fingerprint != onnx_encoder.fingerprint
    with pytest.raises(TfhashError, match="not the one that built the index"):
        HammingIndex.load(tmp_path / "ix", bits=other.bits, fingerprint=other.fingerprint)


def test_a_query_encoder_searches_the_index_its_database_encoder_built(encoder, digits,
                                                                       onnx_path, tmp_path):
    assert OnnxEncoder(onnx_path).database_fingerprint == fingerprint(encoder)
    database = make_encoder(4)  # as `train --asymmetric` names it in the query's sidecar
    index = HammingIndex(12, fingerprint=fingerprint(database))
    index.add(model.encode(database, digits, verbose=0))
    index.save(tmp_path / "ix")
    query = OnnxEncoder(export_onnx(encoder, tmp_path / "query-12.onnx", metadata={
        "database_fingerprint": fingerprint(database)}))
    assert query.fingerprint == fingerprint(encoder)
    assert query.database_fingerprint == fingerprint(database)
    HammingIndex.load(tmp_path / "ix", bits=12, fingerprint=query.database_fingerprint)


def test_a_file_without_tfhash_metadata_reads_its_shapes_from_the_graph(onnx_path, tmp_path):
    bare = OnnxEncoder(rewrite_metadata(onnx_path, tmp_path / "bare.onnx", None))
    assert bare.bits == 12 and bare.image_shape == (28, 28, 1)
    assert bare.fingerprint is None and bare.database_fingerprint is None
    assert bare.metadata == {}


@pytest.mark.parametrize("name, make, fragment", [
    ("model.keras", None, "must be an .onnx file"),
    ("missing.onnx", None, "does not exist"),
    ("garbage.onnx", lambda path, _: path.write_bytes(b"not a protobuf"),
     "cannot load ONNX model"),
    ("identity.onnx", lambda path, _: onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])), str(path)),
     "is not a tfhash encoder"),
    ("bad-json.onnx", lambda path, source: rewrite_metadata(source, path, "{"),
     "metadata is not valid JSON"),
    ("list-json.onnx", lambda path, source: rewrite_metadata(source, path, "[12]"),
     "must be a JSON object"),
])
def test_a_bad_file_is_refused_naming_what_is_wrong(name, make, fragment, onnx_path, tmp_path):
    path = tmp_path / name
    if make is not None:
        make(path, onnx_path)
    with pytest.raises(TfhashError, match=fragment):
        OnnxEncoder(path)


@pytest.mark.parametrize("images, batch_size, fragment", [
    (np.zeros((2, 28, 28)), 256, r"`images` must have shape \(n, 28, 28, 1\)"),
    (np.zeros((2, 32, 32, 3)), 256, r"`images` must have shape \(n, 28, 28, 1\)"),
    (np.zeros((2, 28, 28, 1), bool), 256, "`images` must hold numbers"),
    (np.zeros((2, 28, 28, 1)), 0, "`batch_size` must be an integer >= 1"),
])
def test_bad_images_are_refused_naming_the_argument(images, batch_size, fragment, onnx_path):
    with pytest.raises(TfhashError, match=fragment):
        OnnxEncoder(onnx_path).encode(images, batch_size=batch_size)


def test_exported_by_the_cli_searched_without_tensorflow_as_tfhash_search_finds(
        tmp_path, capsys):
    """`tfhash export` then `export/onnx_client.py` in a process where importing TensorFlow
    or Keras fails: the same hits as `tfhash search` with the .keras encoder."""
    from PIL import Image

    keras_path = tmp_path / "model-16.keras"
    save_encoder(make_encoder(0, bits=16), keras_path, {"dataset": "mnist-5k"})
    part = data.load_dataset("mnist-5k").train
    (tmp_path / "images" / "digit").mkdir(parents=True)
    for i in range(20):
        Image.fromarray(part.images[i, ..., 0]).save(tmp_path / "images" / "digit" / f"{i}.png")
    queries = [str(tmp_path / "images" / "digit" / f"{i}.png") for i in (0, 7)]
    assert cli.main(["export", str(keras_path), "--out", str(tmp_path / "serving"),
                     "--format", "onnx"]) == 0
    assert cli.main(["index", "build", str(keras_path), "--images", str(tmp_path / "images"),
                     "--out", str(tmp_path / "ix")]) == 0
    capsys.readouterr()
    assert cli.main(["search", str(tmp_path / "ix"), *queries, "--model", str(keras_path),
                     "--k", "5"]) == 0
    expected = capsys.readouterr().out

    blocked = ("import sys, runpy; sys.modules.update(tensorflow=None, keras=None); "
               "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    onnx_file = str(tmp_path / "serving" / "tfhash-model.onnx")
    proc = subprocess.run([sys.executable, "-c", blocked, str(CLIENT), onnx_file, *queries,
                           "--index", str(tmp_path / "ix"), "--k", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected and "distance=0" in expected
    metadata = OnnxEncoder(onnx_file).metadata
    sidecar = json.loads(keras_path.with_suffix(".json").read_text())
    assert metadata["dataset"] == "mnist-5k"
    assert metadata["fingerprint"] == sidecar["fingerprint"]

    codes = subprocess.run([sys.executable, "-c", blocked, str(CLIENT), onnx_file, queries[0]],
                           capture_output=True, text=True, timeout=120)
    bits = codes.stdout.split("\t")[1]
    assert codes.returncode == 0 and len(bits) == 16 and set(bits) <= {"0", "1"}

    other = tmp_path / "other.onnx"
    export_onnx(make_encoder(1, bits=16), other)
    refused = subprocess.run([sys.executable, "-c", blocked, str(CLIENT), str(other),
                              *queries, "--index", str(tmp_path / "ix")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("onnx_client: error: the encoder (fingerprint")
    assert len(refused.stderr.strip().splitlines()) == 1

    no_hits = subprocess.run([sys.executable, str(CLIENT), onnx_file, queries[0], "--index",
                              str(tmp_path / "ix"), "--k", "0"],
                             capture_output=True, text=True, timeout=120)
    assert no_hits.returncode == 2 and "argument --k" in no_hits.stderr.splitlines()[-1]


def test_export_refuses_metadata_that_is_not_a_dict(encoder, tmp_path):
    with pytest.raises(TfhashError, match="`metadata` must be a dict or None, got list"):
        export_onnx(encoder, tmp_path / "m.onnx", metadata=[("bits", 12)])
    assert not list(tmp_path.iterdir())
