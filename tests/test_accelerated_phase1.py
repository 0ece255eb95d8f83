"""benchmarks/accelerated_phase1.py: its Keras-layer augmentation, the packed data copy and the
caches it writes for reproduce.py (run here under the TensorFlow backend; the code is
backend-agnostic)."""

import ast
import json
import platform
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import accelerated_phase1 as acc  # noqa: E402
from report import trained_on_lines  # noqa: E402
from reproduce import check_same_labelling, trained_on  # noqa: E402
from test_benchmarks import args as labelling_args  # noqa: E402

from tfhash import data  # noqa: E402
from tfhash.backbones import get_backbone  # noqa: E402
from tfhash.networks import build_classifier  # noqa: E402

from common import cached_training  # noqa: E402


def test_cutout_greys_one_clipped_square_per_image_in_training_only():
    images = np.full((64, 32, 32, 3), 200.0, dtype="float32")
    layer = acc.Cutout(16, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    out = np.asarray(layer(images, training=True))
    corners = set()
    for image in out:
        grey = (image == 128).all(axis=-1)
        assert ((image == 128) | (image == 200)).all()
        assert (image[grey] == 128).all() and (image[~grey] == 200).all()
        rows, cols = np.flatnonzero(grey.any(axis=1)), np.flatnonzero(grey.any(axis=0))
        # one filled rectangle: side 17 (centre +- 8), clipped to at least 9 at a border
        assert grey.sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        assert 9 <= len(rows) <= 17 and 9 <= len(cols) <= 17
        corners.add((rows[0], cols[0]))
    assert len(corners) > 10  # each image draws its own square


def crop_offset(before, after, pad):
    """The offset (oy, ox) at which ``after`` is cut from ``before`` padded by ``pad`` with
    reflected borders (numpy's and tf.pad's "reflect"), or ``None`` if it is no such crop."""
    h, w = before.shape[:2]
    padded = np.pad(before, [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            if np.array_equal(padded[oy:oy + h, ox:ox + w], after):
                return oy, ox
    return None


def test_shift_augmenter_crops_each_image_from_its_reflected_padding():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28, 1)).astype("float32")
    out = np.asarray(acc.make_augmenter("shift", (28, 28, 1), seed=0)(images, training=True))
    offsets = [crop_offset(a, b, 2) for a, b in zip(images, out)]
    assert None not in offsets
    assert len(set(offsets)) > 5  # drawn per image, and not all the centre (2, 2)
    np.testing.assert_array_equal(
        acc.make_augmenter("shift", (28, 28, 1), seed=0)(images, training=False), images)


def test_crop_flip_augmenter_crops_within_four_and_mirrors_some_images():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (32, 32, 32, 3)).astype("float32")
    out = np.asarray(acc.make_augmenter("crop_flip", (32, 32, 3), seed=0)(images,
                                                                          training=True))
    plain = [crop_offset(a, b, 4) for a, b in zip(images, out)]
    mirrored = [crop_offset(a[:, ::-1], b, 4) for a, b in zip(images, out)]
    assert all(p is not None or m is not None for p, m in zip(plain, mirrored))
    assert 0 < sum(m is not None for m in mirrored) < len(images)


def synthetic_mnist(folder, seed=0):
    """A small mnist.npz with 650 images per class (cnnh needs 600) and a test part."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), 650)
    test_labels = np.repeat(np.arange(10), 5)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz",
             x_train=rng.integers(1, 256, (len(labels), 28, 28, 1), dtype=np.uint8),
             y_train=labels,
             x_test=rng.integers(1, 256, (len(test_labels), 28, 28, 1), dtype=np.uint8),
             y_test=test_labels)
    return folder


@pytest.fixture
def packed(tmp_path, monkeypatch):
    """A synthetic mnist and its copy packed for seeds 0 and 1."""
    source = synthetic_mnist(tmp_path / "source")
    monkeypatch.setenv("TFHASH_DATA_DIR", str(source))
    acc.main(["pack", "--dataset", "mnist", "--seeds", "0", "1", "--out", str(tmp_path / "out")])
    return source, tmp_path / "out"


def test_pack_keeps_the_seeds_training_images_blanks_the_rest_and_splits_alike(packed,
                                                                               monkeypatch):
    source, out = packed
    full = data.load_dataset("mnist", data_dir=source)
    copy = data.load_dataset("mnist", data_dir=out)
    kept = set()
    for seed in (0, 1):
        a = data.make_split(full, "cnnh", seed=seed, val_fraction=0.0)
        b = data.make_split(copy, "cnnh", seed=seed, val_fraction=0.0)
        np.testing.assert_array_equal(a.train.images, b.train.images)
        np.testing.assert_array_equal(a.train.labels, b.train.labels)
        np.testing.assert_array_equal(a.query.labels, b.query.labels)
        kept |= {image.tobytes() for image in a.train.images}
    pool = np.concatenate([copy.train.images, copy.test.images])
    original = np.concatenate([full.train.images, full.test.images])
    blank = ~pool.reshape(len(pool), -1).any(axis=1)
    in_training = np.array([image.tobytes() in kept for image in original])
    np.testing.assert_array_equal(blank, ~in_training)  # synthetic images are never black
    assert acc.packed_seeds("mnist") is None  # TFHASH_DATA_DIR: the full source
    monkeypatch.setenv("TFHASH_DATA_DIR", str(out))
    assert acc.packed_seeds("mnist") == {0, 1}


@pytest.mark.parametrize("extra, message", [
    (["--seed", "2"], "packed for seeds [0, 1], not 2"),
    (["--seed", "0", "--self-train", "5"], "--self-train needs the database"),
])
def test_train_refuses_what_a_packed_copy_cannot_serve(packed, monkeypatch, extra, message):
    _, out = packed
    monkeypatch.setenv("TFHASH_DATA_DIR", str(out))
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        acc.main(["train", "--dataset", "mnist", *extra])


def test_train_writes_the_caches_reproduce_loads_and_a_rerun_reuses_them(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("TFHASH_DATA_DIR", str(synthetic_mnist(tmp_path / "data")))
    command = ["train", "--dataset", "mnist", "--seed", "0", "--tag=-t", "--work-dir",
               str(tmp_path / "runs"), "--pretrain-epochs", "1", "--self-train", "5",
               "--self-train-epochs", "1", "--self-train-rounds", "2",
               "--self-train-keep", "0.5", "--backbone-width", "4", "--verbose", "0"]
    acc.main(command)
    seed_dir = tmp_path / "runs" / "mnist-cnnh-t" / "seed0"
    written = {path.name: path.read_bytes() for path in seed_dir.glob("*.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun should load the cached classifiers")

    monkeypatch.setattr(acc, "fit_classifier", no_training)
    acc.main(command)
    assert {path.name: path.read_bytes() for path in seed_dir.glob("*.json")} == written
    assert len(written) == 3
    for stem, round_no in (("pretrained", 0), ("self_trained", 1), ("self_trained_round2", 2)):
        def untrainable(stem=stem):
            raise AssertionError(f"{stem} should load, not train")

        _, record = cached_training(
            seed_dir / f"{stem}.weights.h5", seed_dir / f"{stem}.json", train=untrainable,
            build=lambda: build_classifier(get_backbone(None, (28, 28, 1), width=4), 10))
        assert record == json.loads((seed_dir / f"{stem}.json").read_text())
        assert record["wall_s"] > 0
        assert trained_on(record) == f"{platform.machine()}, Keras {keras.__version__} on " \
                                     f"{keras.backend.backend()}"
        if round_no:
            assert 1 <= record["n_pseudo"] <= 50  # at most 5 per predicted class
            assert 0 <= record["pseudo_label_accuracy"] <= 1
            check_same_labelling(record, labelling_args(keep=0.5), seed_dir / stem)
            with pytest.raises(SystemExit, match="self_train_keep = 0.5"):
                check_same_labelling(record, labelling_args(keep=1.0), seed_dir / stem)


def test_a_whitening_stem_is_adapted_to_the_seeds_training_images(tmp_path, monkeypatch):
    from tfhash.whitening import PatchWhitening

    monkeypatch.setenv("TFHASH_DATA_DIR", str(synthetic_mnist(tmp_path / "data")))
    acc.main(["train", "--dataset", "mnist", "--seed", "0", "--work-dir", str(tmp_path / "runs"),
              "--pretrain-epochs", "1", "--backbone-width", "4", "--backbone-stem", "whitening",
              "--verbose", "0"])
    backbone = get_backbone(None, (28, 28, 1), width=4, stem="whitening")
    cached_training(tmp_path / "runs" / "mnist-cnnh" / "seed0" / "pretrained.weights.h5",
                    tmp_path / "runs" / "mnist-cnnh" / "seed0" / "pretrained.json",
                    build=lambda: build_classifier(backbone, 10), train=None)
    split = data.make_split(data.load_dataset("mnist"), "cnnh", seed=0, val_fraction=0.0)
    reference = PatchWhitening(3)
    reference.adapt(split.train.images)  # the seed's training images, as reproduce.py's
    stem = backbone.get_layer("whitening")
    assert stem.is_adapted
    for loaded, fitted in zip(stem.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(loaded, fitted, rtol=1e-6, atol=1e-6)


def test_a_classifier_trained_here_names_no_machine_and_the_report_lists_those_that_do():
    assert trained_on({"wall_s": 12.0}) is None  # what reproduce.py's own phase 1 records
    rows = [{"seed": 0, "phase1_trained_on": "NVIDIA H200, Keras 3 on jax"},
            {"seed": 0, "phase1_trained_on": "NVIDIA H200, Keras 3 on jax"},
            {"seed": 1}, {"seed": 2, "phase1_trained_on": "cpu, Keras 3 on torch"}]
    (line,) = trained_on_lines(rows)
    assert "seed 0: NVIDIA H200, Keras 3 on jax, seed 2: cpu, Keras 3 on torch;" in line
    assert "seed 1" not in line
    assert trained_on_lines([{"seed": 0}, {"seed": 1}]) == []


def module_level_imports(path):
    """The modules a Python file imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_what_the_accelerator_script_imports_needs_no_tensorflow():
    root = Path(__file__).parents[1]
    pending, seen = [root / "benchmarks" / "accelerated_phase1.py"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        imports = module_level_imports(path)
        assert not any(name.split(".")[0] == "tensorflow" for name in imports), path
        for name in imports:  # the package's modules and the benchmarks' own helpers
            for module in (root / (name.replace(".", "/") + ".py"),
                           root / "benchmarks" / f"{name}.py"):
                if module.exists():
                    pending.append(module)
    reached = {path.stem for path in seen}
    assert {"common", "networks", "self_training", "backbones", "layers", "data"} <= reached
