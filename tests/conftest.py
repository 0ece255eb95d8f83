import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


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
