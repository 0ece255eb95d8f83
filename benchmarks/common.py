"""Shared pieces of the benchmark scripts: the results-file header and row writer."""

import datetime
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine():
    info = {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        info["gpus"] = len(gpus)
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


def query_accuracy(classifier, split):
    """Accuracy of a phase-1 classifier on the split's queries."""
    probs = classifier.predict(split.query.images, batch_size=256, verbose=0)
    return float((probs.argmax(axis=1) == split.query.labels).mean())


def write_results(name, rows, **extra):
    """Writes benchmarks/results/<name>.json in the shape DESIGN.md fixes."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tfhash.io import write_json

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
