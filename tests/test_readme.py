"""The README's Python API example runs as written."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_python_api_example_trains_and_prints_a_map():
    example, _ = python_blocks(README.read_text())
    printed = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(example, str(README), "exec"), namespace)
    value = float(printed.getvalue().strip().splitlines()[-1])
    assert 0.3 < value <= 1.0  # 32-bit codes after five epochs (0.73 seen); random: about 0.1
    bits = namespace["q"].shape[1]
    assert namespace["packed"].shape == (len(namespace["db"]), bits // 8)


def test_the_serving_example_searches_with_the_onnx_export(tmp_path, monkeypatch):
    import keras

    from tfhash import data, model
    from tfhash.artifacts import fingerprint
    from tfhash.export import export_onnx
    from tfhash.index import HammingIndex

    _, example = python_blocks(README.read_text())
    # the files it names: an encoder's ONNX export, and an index of that encoder's codes
    keras.utils.set_random_seed(0)
    encoder = model.build_hasher(model.get_backbone("mnist_cnn", (28, 28, 1), width=4), 12)
    monkeypatch.chdir(tmp_path)
    export_onnx(encoder, "serving/cifar-1.onnx")
    images = data.load_dataset("mnist-5k").train.images[:30]
    index = HammingIndex(12, fingerprint=fingerprint(encoder))
    index.add(model.encode(encoder, images, verbose=0))
    index.save("photos.index")
    namespace = {"images": images[:4]}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["ids"].shape == (4, 10)
    assert (namespace["distances"][:, 0] == 0).all()  # each image finds its own code
