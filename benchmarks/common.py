"""Shared pieces of the benchmark scripts: the results-file writer and cached training runs."""

import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from tfhash import hardware  # noqa: E402  (imports TensorFlow only when asked)
from tfhash.io import atomic_path, write_json  # noqa: E402  (numpy only: no TensorFlow)

RESULTS = Path(__file__).parent / "results"


def machine():
    """The machine a benchmark ran on: cores, platform, CPU model and GPUs, and whether it
    computes bfloat16 natively (`tfhash.hardware`), which decides what mixed precision costs."""
    info = {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}
    try:
        models = {line.partition(":")[2].strip() for line in
                  hardware.CPUINFO.read_text().splitlines() if line.startswith("model name")}
        info["cpu_model"] = ", ".join(sorted(models))
    except OSError:
        pass
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        info["gpus"] = len(gpus)
        info["native_bfloat16"] = hardware.native_bfloat16()
    except ImportError:
        pass
    return info


def versions():
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "tensorflow", "keras", "faiss", "onnxruntime", "tf2onnx"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def run_name(dataset, protocol, tag=""):
    """A reproduce.py run's name: its results file's stem and its folder under the work
    directory. ``tag`` is appended as given (by convention it starts with ``-``).

    >>> run_name("cifar10", "cnnh", "-w16-bf16")
    'cifar10-cnnh-w16-bf16'
    """
    return f"{dataset}-{protocol}{tag}"


def adopted_members(source_size, size):
    """How many ensemble members a run of ``size`` members takes with ``--phase1-from``
    from a run of ``source_size``: members 0, 1, ... as far as both have them; the run
    trains the rest itself.

    >>> adopted_members(2, 3)
    2
    """
    return min(source_size, size)


def row_method(row):
    """The method of a results row of `phase2_spread` (the loss it reran) or of
    `classifier_bound` (the method whose codes it stands beside); rows written before the
    ``method`` field existed are the exponentiated loss's.

    >>> row_method({"run": "r", "seed": 0})
    'exponentiated'
    """
    return row.get("method", "exponentiated")


def row_encoding(row):
    """How a results row's codes were made; rows written before the ``encoding`` field
    existed are of plain codes.

    >>> row_encoding({"run": "r", "seed": 0})
    'plain'
    """
    return row.get("encoding", "plain")


def round_stem(round_no):
    """File stem of a seed's cached classifier after self-training round ``round_no``
    (0: phase 1 alone)."""
    if round_no == 0:
        return "pretrained"
    return "self_trained" if round_no == 1 else f"self_trained_round{round_no}"


def cache_files(folder, stem):
    """The weights file and the JSON record `cached_training` keeps the classifier named
    ``stem`` (`round_stem`'s names) in, under ``folder``.

    >>> [path.as_posix() for path in cache_files("seed0", round_stem(1))]
    ['seed0/self_trained.weights.h5', 'seed0/self_trained.json']
    """
    return Path(folder) / f"{stem}.weights.h5", Path(folder) / f"{stem}.json"


def correct_queries(classifier, split):
    """Which of the split's queries a phase-1 classifier labels right (a bool array)."""
    probs = classifier.predict(split.query.images, batch_size=256, verbose=0)
    return probs.argmax(axis=1) == split.query.labels


def query_accuracy(classifier, split):
    """Accuracy of a phase-1 classifier on the split's queries."""
    return float(correct_queries(classifier, split).mean())


def write_results(name, rows, **extra):
    """Writes benchmarks/results/<name>.json in the shape DESIGN.md fixes."""
    doc = {
        "benchmark": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        **extra,
        "rows": rows,
    }
    path = RESULTS / f"{name}.json"
    write_json(path, doc)
    print(f"wrote {path}")
    return path


def load_results(name, flag):
    """The results file ``name``, read; a missing one stops the script with one line
    naming the option ``flag`` that named it."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{flag}: no {path}")
    return json.loads(path.read_text())


def stored_config(results):
    """The recipe a `reproduce.py` results file holds, fields added since it was written
    at their defaults (they had them)."""
    from tfhash.model import TrainConfig  # TensorFlow only for the scripts that train

    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    return {**defaults, **results["config"]}


def cached_training(weights, record, build, train):
    """Trains a model once and reuses its weights when a run is repeated or resumed.

    If both ``weights`` and its ``record`` (a JSON file) exist, ``build()`` makes the model and
    the saved weights are loaded into it. Otherwise ``train()`` returns ``(model, facts)``; the
    weights and ``{"wall_s": <seconds train took>, **facts}`` are then written, each atomically,
    the weights first, so an interrupted run never leaves a record without its weights.

    Args:
        weights: path of the ``.weights.h5`` file.
        record: path of the JSON record beside it.
        build: callable returning the untrained model, for loading.
        train: callable returning ``(model, facts)``, ``facts`` a JSON-serializable dict.

    Returns:
        ``(model, record)``, the record as a dict that holds at least ``wall_s``.

    Example:

    >>> classifier, record = cached_training(
    ...     *cache_files(run, round_stem(0)),
    ...     build=lambda: model.build_classifier(backbone, 10),
    ...     train=lambda: (model.pretrain(backbone, split, 10, config)[0], {}))
    >>> record["wall_s"]
    """
    weights, record = Path(weights), Path(record)
    if weights.exists() and record.exists():
        trained = build()
        trained.load_weights(weights)
        return trained, json.loads(record.read_text())
    start = time.perf_counter()
    trained, facts = train()
    facts = {"wall_s": time.perf_counter() - start, **facts}
    with atomic_path(weights) as tmp:
        trained.save_weights(tmp)
    write_json(record, facts)
    return trained, facts
