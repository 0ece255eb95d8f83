"""tfhash: deep hashing for image search in Keras 3.

Learns compact binary image signatures with the joint approach of Mu and Liu (AAAI 2017):
a `HashingHead` on any backbone, trained with the `ExponentiatedHashingLoss` after
classification pre-training. Submodules load on first use, so the command line starts
without importing TensorFlow until it needs it.

Example:

>>> import keras
>>> import tfhash
>>> backbone = tfhash.model.get_backbone("mnist_cnn", (28, 28, 1))  # or any Keras model
>>> hasher = keras.Model(backbone.input, tfhash.HashingHead(48)(backbone.output))
>>> hasher.compile(optimizer="adam", loss=tfhash.ExponentiatedHashingLoss(temperature=0.5))
>>> hasher.output_shape  # relaxed codes in (-1, 1); their signs are the 48-bit code
(None, 48)
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_EXPORTS = {
    "HashingHead": "tfhash.layers",
    "GradedClassCodes": "tfhash.layers",
    "FittedClassCodes": "tfhash.layers",
    "PredictedClassCodes": "tfhash.layers",
    "NearestCodeword": "tfhash.layers",
    "ExponentiatedHashingLoss": "tfhash.losses",
    "ExactHashingLoss": "tfhash.losses",
    "TfhashError": "tfhash.errors",
    "OnnxEncoder": "tfhash.onnx_encoder",
    "PatchWhitening": "tfhash.whitening",
}
_SUBMODULES = (
    "artifacts", "backbones", "callbacks", "codebooks", "codes", "data", "distribute",
    "evaluation", "export", "images", "index", "losses", "layers", "metrics", "model",
    "networks", "onnx_encoder", "pipeline", "plots", "self_training", "sharpness", "tuning",
    "whitening",
)
__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfhash.{name}")
    raise AttributeError(f"module 'tfhash' has no attribute {name!r}")
