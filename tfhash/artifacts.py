"""Saving and loading trained encoders: a `.keras` file plus a JSON sidecar of metadata.

The sidecar (``model-12.keras`` -> ``model-12.json``) records what the encoder was trained
on (dataset, protocol, seed, image shape, class names, training config) so that `evaluate`,
`index` and `export` can use the same data without being told again. Loading uses
``safe_mode=True``: no Python code or pickle is ever executed.

Example:

>>> save_encoder(hasher, "runs/mnist/model-12.keras", {"dataset": "mnist-5k"})
>>> hasher, meta = load_encoder("runs/mnist/model-12.keras")
"""

import hashlib
import json
import zipfile
from pathlib import Path

from tfhash.errors import check
from tfhash.io import atomic_path, write_json

FORMAT = "tfhash-encoder/1"


def sidecar_path(path):
    return Path(path).with_suffix(".json")


def fingerprint(model):
    """A sha256 over the encoder's weights: identifies the encoder that made a set of codes."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(str(weight.shape).encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def code_bits(model):
    """The code length of a hashing model (its last output dimension)."""
    return int(model.output_shape[-1])


def encoder_metadata(model, metadata=None):
    """``metadata`` with the fields every saved or exported encoder carries: ``format``,
    ``bits``, ``image_shape`` and ``fingerprint`` (read off ``model``, over any given)."""
    meta = dict(metadata or {})
    meta.update(
        {
            "format": FORMAT,
            "bits": code_bits(model),
            "image_shape": [int(n) for n in model.input_shape[1:]],
            "fingerprint": fingerprint(model),
        }
    )
    return meta


def save_encoder(model, path, metadata=None):
    """Saves ``model`` to ``path`` (`.keras`) and its metadata sidecar, each atomically."""
    path = Path(path)
    check(path.suffix == ".keras", f"`path` must end in .keras, got {path}")
    meta = encoder_metadata(model, metadata)
    with atomic_path(path) as tmp:
        model.save(tmp)
    write_json(sidecar_path(path), meta)
    return meta


def load_encoder(path):
    """Loads an encoder saved by `save_encoder`; returns ``(model, metadata)``.

    A `.keras` file without a sidecar loads with metadata inferred from the model.
    """
    path = Path(path)
    check(path.is_file(), f"model file {path} does not exist")
    check(path.suffix == ".keras", f"model file must be a .keras file, got {path}")
    check(zipfile.is_zipfile(path),
          f"model file {path} is not a .keras archive (a .keras file is a zip file)")
    import keras

    import tfhash.layers  # noqa: F401 - registers tfhash's layers, which encoders are made of
    import tfhash.losses  # noqa: F401 - and its losses, for a model saved compiled

    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any failure means an unreadable model file
        raise ValueError(f"cannot load model {path}: {error}") from None
    meta = {"bits": code_bits(model), "image_shape": list(model.input_shape[1:])}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta.update(json.loads(side.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"model metadata {side} is not valid JSON: {error}") from None
    meta["fingerprint"] = fingerprint(model)
    return model, meta
