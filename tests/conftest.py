import os
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def keras_warnings():
    """Records every warning raised during the test; returns a function listing the
    messages of the UserWarnings that Keras's own code raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: [str(w.message) for w in caught
                       if issubclass(w.category, UserWarning) and "keras" in w.filename]


@pytest.fixture(scope="session")
def shared_data_dir():
    """The folder with mnist.npz / cifar10.npz, or a skip saying where it was looked for."""
    path = Path(os.environ.get("TFHASH_DATA_DIR", Path(__file__).parents[2] / "shared/datasets"))
    if not (path / "mnist.npz").is_file():
        pytest.skip(f"no mnist.npz in {path}: set TFHASH_DATA_DIR to the shared datasets folder")
    return path


@pytest.fixture
def averaging_momenta(monkeypatch):
    """Patches ``module.WeightAveraging`` (call with the module) so that each fit it joins
    records its momentum; returns the list the momenta go to."""
    from tfhash.callbacks import WeightAveraging

    seen = []

    class Recording(WeightAveraging):
        def on_train_begin(self, logs=None):
            seen.append(self.momentum)
            super().on_train_begin(logs)

    def patch(module):
        monkeypatch.setattr(module, "WeightAveraging", Recording)
        return seen

    return patch


@pytest.fixture(scope="module")
def heads():
    """Two hashing heads, 12 and 24 bits, on one small digit backbone sharing one input."""
    import keras

    from tfhash import model
    from tfhash.layers import HashingHead

    keras.utils.set_random_seed(5)
    backbone = model.get_backbone("mnist_cnn", (28, 28, 1))
    inputs = keras.Input((28, 28, 1), name="images")
    features = backbone(inputs)
    return {bits: keras.Model(inputs, HashingHead(bits, name=f"codes_{bits}")(features))
            for bits in (12, 24)}
