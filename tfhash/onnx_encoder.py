"""Codes from an exported encoder in ONNX Runtime: serving and search without TensorFlow.

`tfhash.export.export_onnx` (and `tfhash export`) writes the encoder as ONNX with its
metadata (bits, image shape, the fingerprint of the weights) in the file. `OnnxEncoder` runs
that file in ONNX Runtime and needs only numpy and onnxruntime, so a search service can
encode queries and search a `tfhash.index.HammingIndex` (FAISS) with neither TensorFlow nor
Keras installed, and the fingerprint lets the index refuse codes of another encoder.

Example:

>>> from tfhash.index import HammingIndex
>>> encoder = OnnxEncoder("serving/cifar-1.onnx")
>>> index = HammingIndex.load("photos.index", bits=encoder.bits,
...                           fingerprint=encoder.database_fingerprint)
>>> ids, distances = index.search(encoder.encode(images), k=10)
"""

import json
from pathlib import Path

import numpy as np

from tfhash.errors import TfhashError, check, check_int

METADATA_KEY = "tfhash"  # the metadata_props entry `tfhash.export.export_onnx` writes
OUTPUTS = ("codes", "packed", "relaxed")


class OnnxEncoder:
    """A tfhash encoder exported to ONNX, run by ONNX Runtime.

    Args:
        path: an ``.onnx`` file written by `tfhash.export.export_onnx` or `tfhash export`.
        providers: ONNX Runtime execution providers, in order of preference (default:
            the CPU).

    Attributes:
        bits: the code length.
        image_shape: ``(height, width, channels)`` of the images it takes.
        fingerprint: the weights' fingerprint (`tfhash.artifacts.fingerprint`), the one an
            index built by the same encoder records; ``None`` for an ONNX file written
            without tfhash's metadata (an index then cannot check it).
        database_fingerprint: the fingerprint an index searched with these codes must
            record: ``fingerprint``, or for the query encoder of asymmetric codes
            (``query-<bits>.keras`` of `tfhash train --asymmetric`) its database encoder's.
        metadata: the encoder's metadata as exported (``{}`` without it): the dataset, its
            class names and the training config when the export came from a saved encoder.

    Example:

    >>> encoder = OnnxEncoder("serving/digits-1.onnx")
    >>> codes = encoder.encode(images)   # int8 +-1, (n, encoder.bits), as model.encode gives
    """

    def __init__(self, path, providers=("CPUExecutionProvider",)):
        import onnxruntime

        path = Path(path)
        check(path.suffix == ".onnx", f"`path` must be an .onnx file, got {path}")
        check(path.is_file(), f"ONNX file {path} does not exist")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        except Exception as error:  # noqa: BLE001 - any failure means an unusable file
            raise TfhashError(f"cannot load ONNX model {path}: {error}") from None
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        check(len(inputs) == 1 and inputs[0].name == "images" and set(OUTPUTS) <= set(outputs),
              f"{path} is not a tfhash encoder: it takes {[i.name for i in inputs]} and "
              f"gives {sorted(outputs)}, expected ['images'] and {sorted(OUTPUTS)}")
        self.path = path
        self.metadata = self._read_metadata()
        self.bits = int(self.metadata.get("bits", outputs["codes"].shape[-1]))
        self.image_shape = tuple(int(n) for n in
                                 self.metadata.get("image_shape", inputs[0].shape[1:]))
        self.fingerprint = self.metadata.get("fingerprint")
        self.database_fingerprint = self.metadata.get("database_fingerprint", self.fingerprint)

    def _read_metadata(self):
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            return {}
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as error:
            raise TfhashError(f"{self.path}: its tfhash metadata is not valid JSON: "
                              f"{error}") from None
        check(isinstance(meta, dict), f"{self.path}: its tfhash metadata must be a JSON "
                                      f"object, got {type(meta).__name__}")
        return meta

    def encode(self, images, batch_size=256):
        """Binary +-1 codes (int8, ``(n, bits)``) of ``images``: raw pixels, 0-255, shape
        ``(n, *image_shape)``, in batches of ``batch_size``."""
        images = np.asarray(images)
        check(images.ndim == 4 and images.shape[1:] == self.image_shape,
              f"`images` must have shape (n, {', '.join(map(str, self.image_shape))}), "
              f"got {images.shape}")
        check(np.issubdtype(images.dtype, np.number) and images.dtype != np.bool_,
              f"`images` must hold numbers (pixels 0-255), got dtype {images.dtype}")
        batch_size = check_int(batch_size, "batch_size", 1)
        batches = [self.session.run(["codes"], {"images": images[i:i + batch_size]
                                                .astype(np.float32)})[0]
                   for i in range(0, len(images), batch_size)]
        if not batches:
            return np.zeros((0, self.bits), np.int8)
        return np.concatenate(batches).astype(np.int8)

    def __repr__(self):
        return (f"OnnxEncoder({str(self.path)!r}, bits={self.bits}, "
                f"image_shape={self.image_shape}, fingerprint={self.fingerprint!r})")
