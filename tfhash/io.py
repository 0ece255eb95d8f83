"""Crash-safe files: write to a temporary name in the same folder, then rename.

Example: a crash while writing leaves the earlier file as it was, and no temporary behind.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> with atomic_path(folder / "notes.txt") as tmp:
...     _ = tmp.write_text("first")
>>> try:
...     with atomic_path(folder / "notes.txt") as tmp:
...         _ = tmp.write_text("half-wri")
...         raise RuntimeError("crash")
... except RuntimeError:
...     pass
>>> (folder / "notes.txt").read_text(), [p.name for p in folder.iterdir()]
('first', ['notes.txt'])
>>> shutil.rmtree(folder)

Saving a model is the same: ``with atomic_path("model.keras") as tmp: model.save(tmp)``.
"""

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path`` (same suffix); renames it on success.

    Works for files and folders. On error the temporary is removed and ``path`` keeps its
    previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".old-{secrets.token_hex(4)}-{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def to_json(obj, indent=None):
    """``obj`` as JSON text; numpy scalars and arrays become lists and numbers, paths
    strings."""
    return json.dumps(obj, indent=indent, default=_to_builtin)


def write_json(path, obj):
    """Writes ``obj`` as indented JSON (`to_json`), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(obj, indent=2) + "\n")


def write_arrays(path, arrays):
    """Writes a list of numpy arrays to an ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, *arrays)


def read_arrays(path):
    """The list of arrays `write_arrays` wrote, in order (never unpickles)."""
    with np.load(path, allow_pickle=False) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _to_builtin(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
