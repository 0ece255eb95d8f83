"""Export trained encoders for serving: SavedModel in the TF Serving layout, and ONNX.

SavedModel signatures (what TF Serving serves unchanged):

* ``serving_default``: ``images`` float32 ``(batch, h, w, c)`` in the model's own input range
  (raw pixels, 0-255) -> ``codes`` int8 +-1 ``(batch, bits)``, ``packed`` uint8
  ``(batch, ceil(bits / 8))`` (numpy ``packbits`` order) and ``relaxed`` float32 tanh outputs.
* ``encode_images``: ``image_bytes`` string ``(batch,)`` of JPEG or PNG files (the REST
  ``{"b64": ...}`` case); decoding, resizing and channel conversion happen in the graph, and
  bytes that are not a JPEG or PNG fail the request with a message naming the bad input.

ONNX (tf2onnx) has the same outputs as ``serving_default``, and carries the encoder's
metadata (bits, image shape, fingerprint) for `tfhash.onnx_encoder.OnnxEncoder`, which runs
it in ONNX Runtime without TensorFlow.

Example:

>>> path = export_savedmodel(hasher, "serving", name="mnist_hash")   # serving/mnist_hash/1
>>> onnx_path = export_onnx(hasher, "serving/mnist_hash.onnx")
"""

import re
from pathlib import Path

import tensorflow as tf

from tfhash.artifacts import encoder_metadata
from tfhash.errors import check, check_int
from tfhash.io import atomic_path, to_json
from tfhash.onnx_encoder import METADATA_KEY

ONNX_OPSET = 17
_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8\xff"


def pack_bits_tf(codes):
    """+-1 codes ``(batch, bits)`` -> uint8 ``(batch, ceil(bits / 8))``, packbits order."""
    bits = codes.shape[-1]
    n_bytes = (bits + 7) // 8
    ones = tf.cast(codes > 0, tf.int32)
    ones = tf.pad(ones, [[0, 0], [0, n_bytes * 8 - bits]])
    ones = tf.reshape(ones, [-1, n_bytes, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(ones * weights, axis=-1), tf.uint8)


def code_outputs(model, images):
    """The three outputs of every export, from float images."""
    relaxed = tf.cast(model(images, training=False), tf.float32)
    codes = tf.where(relaxed >= 0, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
    return {"codes": codes, "packed": pack_bits_tf(codes), "relaxed": relaxed}


class EncoderModule(tf.Module):
    """A `tf.Module` holding the encoder and its serving signatures."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        h, w, c = model.input_shape[1:]
        self.image_shape = (int(h), int(w), int(c))
        self.serving_default = tf.function(
            self._encode, input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, "images")]
        )
        self.encode_images = tf.function(
            self._encode_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, "image_bytes")],
        )

    def _encode(self, images):
        return code_outputs(self.model, images)

    def _decode_one(self, data):
        h, w, c = self.image_shape
        head = tf.strings.substr(data, 0, 4)
        is_png = tf.equal(head, _PNG_MAGIC)
        is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG_MAGIC)
        checked = tf.debugging.Assert(
            tf.logical_or(is_png, is_jpeg),
            ["encode_images: image_bytes holds an item that is not a JPEG or PNG file"],
        )
        with tf.control_dependencies([checked]):
            image = tf.io.decode_image(data, channels=c, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), [h, w])
        return tf.ensure_shape(image, [h, w, c])

    def _encode_bytes(self, image_bytes):
        images = tf.map_fn(self._decode_one, image_bytes,
                           fn_output_signature=tf.TensorSpec(self.image_shape, tf.float32))
        return self._encode(images)


def next_version(base):
    """The next free integer version under a TF Serving model folder (1 when empty)."""
    base = Path(base)
    if not base.is_dir():
        return 1
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_savedmodel(model, out_dir, name="tfhash", version=None):
    """Writes ``out_dir/name/version/`` (saved_model.pb + variables/) atomically.

    Args:
        model: a hashing encoder (images -> relaxed codes), e.g. from `load_encoder`.
        out_dir: the TF Serving model base folder's parent.
        name: the model name TF Serving serves it under.
        version: integer >= 1, or ``None`` for the next free version.

    Returns:
        The version folder's path.
    """
    check(re.fullmatch(r"[A-Za-z0-9_.-]+", name or "") is not None,
          f"`name` must be a plain model name (letters, digits, _ . -), got {name!r}")
    base = Path(out_dir) / name
    if version is None:
        version = next_version(base)
    target = base / str(check_int(version, "version", 1))
    check(not target.exists(), f"version {version} already exists at {target}; pick another")
    module = EncoderModule(model)
    signatures = {
        "serving_default": module.serving_default,
        "encode_images": module.encode_images,
    }
    with atomic_path(target) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
    return target


def export_onnx(model, path, opset=ONNX_OPSET, metadata=None):
    """Converts the encoder with tf2onnx; outputs ``codes``, ``packed``, ``relaxed``.

    The file's ``metadata_props`` hold, under the key ``"tfhash"``, the JSON metadata that
    `tfhash.artifacts.save_encoder` writes beside a `.keras` file (``metadata`` plus the
    encoder's bits, image shape and fingerprint), so `tfhash.onnx_encoder.OnnxEncoder` can
    check, without TensorFlow, that an index holds this encoder's codes.
    """
    import tf2onnx

    check(metadata is None or isinstance(metadata, dict),
          f"`metadata` must be a dict or None, got {type(metadata).__name__}")
    h, w, c = model.input_shape[1:]
    spec = (tf.TensorSpec([None, h, w, c], tf.float32, name="images"),)

    @tf.function(input_signature=spec)
    def encode(images):
        out = code_outputs(model, images)
        return {k: tf.identity(v, name=k) for k, v in out.items()}

    path = Path(path)
    check(path.suffix == ".onnx", f"`path` must end in .onnx, got {path}")
    proto, _ = tf2onnx.convert.from_function(encode, input_signature=spec, opset=opset)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, to_json(encoder_metadata(model, metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return path


def export(model, out_dir, name="tfhash", version=None, formats=("savedmodel", "onnx"),
           metadata=None):
    """Exports in each of ``formats``; returns ``{format: path}``. ``metadata`` (e.g. the
    sidecar `tfhash.artifacts.load_encoder` returns) goes into the ONNX file."""
    check(formats and set(formats) <= {"savedmodel", "onnx"},
          f"`formats` must be a subset of ('savedmodel', 'onnx'), got {formats!r}")
    paths = {}
    if "savedmodel" in formats:
        paths["savedmodel"] = export_savedmodel(model, out_dir, name, version)
    if "onnx" in formats:
        version_tag = paths["savedmodel"].name if "savedmodel" in paths else "model"
        paths["onnx"] = export_onnx(model, Path(out_dir) / f"{name}-{version_tag}.onnx",
                                    metadata=metadata)
    return paths
