"""Persistent Hamming-space search over binary codes, backed by FAISS (in process) or Milvus.

`HammingIndex` stores codes with int64 ids and optional labels and paths, and answers k-nearest
and radius queries by Hamming distance. Kinds of FAISS index:

* ``"flat"`` (default): exhaustive, **exact**. Results are the true top k with ties broken by
  ascending id (the tie group cut by rank k is completed by a range search).
* ``"ivf"``: `IndexBinaryIVF`, sublinear, **approximate** (``nlist`` cells, ``nprobe``
  searched); needs training data (the first `add` trains it).
* ``"multihash"``: `IndexBinaryMultiHash`, sublinear, **approximate**: finds codes that match a
  query exactly on at least one of ``nhash`` substrings (within ``nflip`` flips).

Saved indexes are a folder: ``meta.json`` (format version, bits, kind, encoder fingerprint,
sha256 of each data file) and data files named by their checksum. `save` writes new data
files first and swaps ``meta.json`` last, atomically, so a crash at any point leaves the
previous index loadable. Nothing is pickled.

Example:

>>> codes = np.sign(np.random.default_rng(0).standard_normal((1000, 48)))  # +-1 codes
>>> index = HammingIndex(bits=48)
>>> index.add(codes, ids=np.arange(1000))
>>> ids, distances = index.search(codes[:2], k=3)
>>> ids[:, 0], distances[:, 0]  # each code finds itself first, at distance 0
(array([0, 1]), array([0, 0], dtype=int32))
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     index.save(f"{folder}/my.index")
...     print(HammingIndex.load(f"{folder}/my.index").search(codes[:1], k=1)[0])
[[0]]
"""

import hashlib
import io
import json
import os
import secrets
from pathlib import Path

import faiss
import numpy as np

from tfhash.codes import as_packed, check_bits
from tfhash.errors import check, check_int
from tfhash.io import write_json

FORMAT = "tfhash-index"
FORMAT_VERSION = 1
KINDS = ("flat", "ivf", "multihash")
BACKENDS = ("faiss", "milvus")


class HammingIndex:
    """Binary codes with ids, labels and paths, searchable by Hamming distance.

    Args:
        bits: code length, 1 to 1024 (FAISS works on whole bytes: shorter codes are padded
            with zero bits, which leaves distances unchanged).
        backend: ``"faiss"`` (in process) or ``"milvus"`` (a Milvus server, see
            `tfhash.milvus`).
        kind: ``"flat"`` (exact), ``"ivf"`` or ``"multihash"`` (approximate).
        nlist, nprobe: IVF cells and cells visited per query.
        nhash, nflip: multi-hash substrings and bit flips probed per substring.
        fingerprint: identifies the encoder whose codes the index holds; `load` and
            `check_encoder` refuse a different one.
        **backend_kwargs: for Milvus: ``uri``, ``collection``, ``token``.
    """

    def __init__(self, bits, backend="faiss", kind="flat", nlist=256, nprobe=16, nhash=4,
                 nflip=1, fingerprint=None, **backend_kwargs):
        self.bits = check_bits(bits)
        check(backend in BACKENDS, f"`backend` must be one of {BACKENDS}, got {backend!r}")
        check(kind in KINDS, f"`kind` must be one of {KINDS}, got {kind!r}")
        nlist, nprobe, nhash = (check_int(value, name, 1) for name, value in (
            ("nlist", nlist), ("nprobe", nprobe), ("nhash", nhash)))
        nflip = check_int(nflip, "nflip", 0)
        self.backend = backend
        self.kind = kind
        self.params = {"nlist": nlist, "nprobe": nprobe, "nhash": nhash, "nflip": nflip}
        self.fingerprint = fingerprint
        self._ids = np.zeros(0, np.int64)
        self._labels = None
        self._paths = None
        self.location = {k: v for k, v in backend_kwargs.items() if k != "token"}
        if backend == "milvus":
            from tfhash.milvus import MilvusStore

            self._store = MilvusStore(self.bits, kind, self.params, **backend_kwargs)
        else:
            check(not backend_kwargs, f"unexpected arguments {sorted(backend_kwargs)} for faiss")
            self._store = FaissStore(self.bits, kind, self.params)

    @property
    def exact(self):
        """Whether search results are exact (flat kinds)."""
        return self.kind == "flat"

    def __len__(self):
        return len(self._ids)

    @property
    def ids(self):
        return self._ids.copy()

    def add(self, codes, ids=None, labels=None, paths=None):
        """Adds codes (+-1 or packed uint8) with unique int64 ids (default: next integers)."""
        packed = self._packed(codes, "codes")
        n = len(packed)
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            ids = np.arange(start, start + n, dtype=np.int64)
        ids = np.asarray(ids)
        check(
            ids.shape == (n,) and np.issubdtype(ids.dtype, np.integer),
            f"`ids` must be {n} integers, one per code, got {ids.dtype} {ids.shape}",
        )
        ids = ids.astype(np.int64)
        check(len(np.unique(ids)) == n, "`ids` must be unique")
        check(not np.isin(ids, self._ids).any(), "`ids` already in the index; remove them first")
        labels = self._column(labels, n, "labels", self._labels, np.int64)
        paths = self._column(paths, n, "paths", self._paths, np.str_)
        if n == 0:
            return
        self._store.add(packed, ids)
        self._ids = np.concatenate([self._ids, ids])
        if labels is not None:
            self._labels = labels if self._labels is None else np.concatenate([self._labels,
                                                                                labels])
        if paths is not None:
            self._paths = paths if self._paths is None else np.concatenate([self._paths, paths])

    def search(self, codes, k):
        """The ``k`` nearest codes per query: ``(ids, distances)``, each ``(n, min(k, len))``.

        Rows are sorted by distance, then id (exact for ``kind="flat"``).
        """
        packed = self._packed(codes, "codes")
        k = min(check_int(k, "k", 1), len(self))
        if k == 0 or len(packed) == 0:
            return np.zeros((len(packed), k), np.int64), np.zeros((len(packed), k), np.int32)
        return self._store.search(packed, k)

    def range_search(self, codes, radius):
        """Codes within Hamming distance ``radius`` (inclusive) of each query.

        Returns a list with one ``(ids, distances)`` pair per query, sorted by distance, then id.
        """
        packed = self._packed(codes, "codes")
        radius = check_int(radius, "radius", 0)
        if len(self) == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.int32)) for _ in packed]
        return self._store.range_search(packed, radius)

    def remove(self, ids):
        """Removes the given ids; returns how many were present."""
        ids = np.asarray(ids)
        check(
            ids.ndim == 1 and (len(ids) == 0 or np.issubdtype(ids.dtype, np.integer)),
            f"`ids` must be a 1-D integer array, got {ids.dtype} {ids.shape}",
        )
        keep = ~np.isin(self._ids, ids.astype(np.int64))
        removed = self._ids[~keep]
        if len(removed):
            self._store.remove(removed)
        self._ids = self._ids[keep]
        if self._labels is not None:
            self._labels = self._labels[keep]
        if self._paths is not None:
            self._paths = self._paths[keep]
        return int(len(removed))

    def labels_of(self, ids):
        """Labels stored for ``ids`` (``None`` if the index holds no labels)."""
        return self._lookup(self._labels, ids)

    def paths_of(self, ids):
        """Paths stored for ``ids``, in the shape of ``ids`` (``search``'s ``(n, k)`` ids
        give ``(n, k)`` paths); ``None`` if the index holds no paths."""
        return self._lookup(self._paths, ids)

    def check_encoder(self, bits, fingerprint):
        """Raises unless codes from an encoder with ``bits`` and ``fingerprint`` fit here."""
        check(bits == self.bits, f"the encoder makes {bits}-bit codes, the index holds {self.bits}")
        check(
            self.fingerprint is None or fingerprint is None or fingerprint == self.fingerprint,
            f"the encoder (fingerprint {fingerprint}) is not the one that built the index "
            f"({self.fingerprint}); rebuild the index with this encoder",
        )

    def save(self, path):
        """Saves to folder ``path``; a crash midway leaves the previous save loadable.

        For Milvus the codes stay in the collection; the folder records where it is, with
        the ids, labels and paths.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"ids": self._ids}
        if self._labels is not None:
            arrays["labels"] = self._labels
        if self._paths is not None:
            arrays["paths"] = self._paths
        files = {}
        for name, writer in (("index", self._store.write), ("arrays", _npz_writer(arrays))):
            digest = _write_content_named(folder, name, writer)
            files[name] = digest
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "bits": self.bits,
            "backend": self.backend, "location": self.location, "kind": self.kind,
            "params": self.params,
            "fingerprint": self.fingerprint, "count": len(self), "files": files,
        }
        old = _read_meta(folder) if (folder / "meta.json").is_file() else None
        write_json(folder / "meta.json", meta)
        if old is not None:
            _remove_unreferenced(folder, old, meta)

    @classmethod
    def load(cls, path, bits=None, fingerprint=None):
        """Loads a saved index, verifying format version and checksums.

        With ``bits`` / ``fingerprint``, refuses an index built by a different encoder.
        """
        folder = Path(path)
        check(folder.is_dir(), f"index {folder} does not exist (expected a folder)")
        meta = _read_meta(folder)
        check(
            meta.get("format") == FORMAT and meta.get("version") == FORMAT_VERSION,
            f"index {folder} has format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this tfhash reads {FORMAT!r} version {FORMAT_VERSION}",
        )
        index = cls(meta["bits"], backend=meta.get("backend", "faiss"), kind=meta["kind"],
                    fingerprint=meta.get("fingerprint"), **meta["params"],
                    **meta.get("location", {}))
        if bits is not None or fingerprint is not None:
            index.check_encoder(index.bits if bits is None else bits, fingerprint)
        data = {name: _read_verified(folder, entry) for name, entry in meta["files"].items()}
        index._store.read(data["index"])
        with np.load(io.BytesIO(data["arrays"]), allow_pickle=False) as arrays:
            index._ids = arrays["ids"]
            index._labels = arrays["labels"] if "labels" in arrays.files else None
            index._paths = arrays["paths"] if "paths" in arrays.files else None
        check(
            len(index._ids) == meta["count"] == index._store.ntotal,
            f"index {folder} is inconsistent: {meta['count']} codes recorded, "
            f"{len(index._ids)} ids and {index._store.ntotal} vectors stored",
        )
        return index

    def _packed(self, codes, name):
        packed, bits = as_packed(codes, self.bits, name)
        check(bits == self.bits, f"`{name}` has {bits} bits, the index holds {self.bits}")
        return np.ascontiguousarray(packed)

    def _column(self, values, n, name, existing, dtype):
        if values is None:
            check(
                existing is None or len(self) == 0 or n == 0,
                f"the index stores `{name}` for every code; pass `{name}` to add",
            )
            return None
        values = np.asarray(values)
        check(values.shape == (n,), f"`{name}` must have one entry per code ({n}), got "
                                    f"shape {values.shape}")
        check(
            existing is not None or len(self) == 0,
            f"the index was built without `{name}`; cannot add them now",
        )
        if dtype is np.int64:
            check(np.issubdtype(values.dtype, np.integer), f"`{name}` must be integers")
        return values.astype(dtype)

    def _lookup(self, column, ids):
        if column is None:
            return None
        order = np.argsort(self._ids)
        ids = np.asarray(ids, np.int64)
        pos = np.searchsorted(self._ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        found = self._ids[order[pos]] == ids
        check(found.all(), f"ids {ids[~found][:5].tolist()} are not in the index")
        return column[order[pos]]


class FaissStore:
    """The FAISS side of a `HammingIndex`: a binary index wrapped in an id map."""

    def __init__(self, bits, kind, params):
        self.kind = kind
        self.params = params
        self.dim = 8 * ((bits + 7) // 8)
        self.index = self._new_index()

    def _new_index(self):
        if self.kind == "ivf":
            quantizer = faiss.IndexBinaryFlat(self.dim)
            inner = faiss.IndexBinaryIVF(quantizer, self.dim, self.params["nlist"])
            inner.nprobe = self.params["nprobe"]
            self._quantizer = quantizer  # the IVF index borrows it: keep it alive
        elif self.kind == "multihash":
            nhash = self.params["nhash"]
            check(self.dim // nhash >= 1, f"`nhash`={nhash} is more than the {self.dim} bits")
            inner = faiss.IndexBinaryMultiHash(self.dim, nhash, self.dim // nhash)
            inner.nflip = self.params["nflip"]
        else:
            inner = faiss.IndexBinaryFlat(self.dim)
        self._inner = inner
        return faiss.IndexBinaryIDMap2(inner)

    @property
    def ntotal(self):
        return int(self.index.ntotal)

    def add(self, packed, ids):
        if self.kind == "ivf" and not self.index.is_trained:
            check(
                len(packed) >= self.params["nlist"],
                f"an ivf index trains on its first add: pass at least nlist="
                f"{self.params['nlist']} codes (got {len(packed)})",
            )
            self._inner.train(packed)
        self.index.add_with_ids(packed, ids)

    def search(self, packed, k):
        distances, ids = self.index.search(packed, k)
        if self.kind != "flat":
            return _sort_rows(ids, distances)
        # Complete the tie group cut by rank k so ties are broken by id, exactly.
        kth = distances[:, -1]
        out_ids = np.empty_like(ids)
        out_d = np.empty_like(distances)
        for radius in np.unique(kth):
            rows = np.flatnonzero(kth == radius)
            lims, dist, found = self.index.range_search(packed[rows], int(radius) + 1)
            for j, row in enumerate(rows):
                d = dist[lims[j]:lims[j + 1]].astype(np.int32)
                i = found[lims[j]:lims[j + 1]]
                order = np.lexsort((i, d))[:k]
                out_ids[row], out_d[row] = i[order], d[order]
        return out_ids, out_d.astype(np.int32)

    def range_search(self, packed, radius):
        lims, dist, found = self.index.range_search(packed, radius + 1)
        out = []
        for j in range(len(packed)):
            d = dist[lims[j]:lims[j + 1]].astype(np.int32)
            i = found[lims[j]:lims[j + 1]].astype(np.int64)
            order = np.lexsort((i, d))
            out.append((i[order], d[order]))
        return out

    def remove(self, ids):
        check(self.kind != "multihash", "a multihash index cannot remove codes; rebuild it")
        self.index.remove_ids(np.asarray(ids, np.int64))

    def write(self, path):
        faiss.write_index_binary(self.index, str(path))

    def read(self, payload):
        # The deserialized wrapper owns the C++ index; keep it alive beside the downcasts.
        self._owner = faiss.deserialize_index_binary(np.frombuffer(payload, dtype=np.uint8))
        self.index = faiss.downcast_IndexBinary(self._owner)
        self._inner = faiss.downcast_IndexBinary(self.index.index)
        if self.kind == "ivf":
            self._inner.nprobe = self.params["nprobe"]
        if self.kind == "multihash":
            self._inner.nflip = self.params["nflip"]


def _sort_rows(ids, distances):
    """Sorts each result row by (distance, id); FAISS pads missing hits with id -1."""
    distances = distances.astype(np.int32)
    big = np.iinfo(np.int32).max
    key_d = np.where(ids < 0, big, distances)
    order = np.lexsort((ids, key_d), axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(distances, order, 1)


def _npz_writer(arrays):
    def write(path):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    return write


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_content_named(folder, name, writer):
    """Writes a data file under a temporary name, then names it by its checksum."""
    tmp = folder / f".tmp-{secrets.token_hex(4)}-{name}"
    try:
        writer(tmp)
        digest = _sha256(tmp)
        final = folder / f"{name}-{digest[:16]}.bin"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": final.name, "sha256": digest, "bytes": final.stat().st_size}


def _read_meta(folder):
    meta_path = folder / "meta.json"
    check(meta_path.is_file(), f"index {folder} has no meta.json: not a tfhash index")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"index {folder}: meta.json is corrupt ({error})") from None
    check(isinstance(meta, dict) and "files" in meta, f"index {folder}: meta.json is corrupt")
    return meta


def _read_verified(folder, entry):
    path = folder / entry["file"]
    check(path.is_file(), f"index {folder} lacks its data file {entry['file']}")
    payload = path.read_bytes()
    check(
        hashlib.sha256(payload).hexdigest() == entry["sha256"],
        f"index {folder}: {entry['file']} is corrupt or truncated (checksum mismatch)",
    )
    return payload


def _remove_unreferenced(folder, old, new):
    keep = {entry["file"] for entry in new["files"].values()}
    for entry in old["files"].values():
        if entry["file"] not in keep:
            (folder / entry["file"]).unlink(missing_ok=True)
