"""The Milvus side of a `HammingIndex`: BINARY_VECTOR codes with HAMMING distance.

For collections beyond one machine: the same `HammingIndex` API, with codes stored in a
Milvus collection (``kind="flat"``: BIN_FLAT, exact; ``kind="ivf"``: BIN_IVF_FLAT).
Point ``uri`` at any Milvus deployment (standalone, cluster, Zilliz Cloud with ``token``);
the tests use the embedded server of the PyPI package ``milvus`` on loopback.

Example:

>>> index = HammingIndex(48, backend="milvus", uri="http://milvus:19530",
...                      collection="product_images")
>>> index.add(codes, ids=ids)
>>> ids, distances = index.search(query_codes, k=10)
"""

import json

import numpy as np

from tfhash.errors import check

INDEX_TYPES = {"flat": "BIN_FLAT", "ivf": "BIN_IVF_FLAT"}
MAX_TOPK = 16384  # Milvus' limit on results per query


class MilvusStore:
    """Codes and ids in a Milvus collection; created on first use, reused if it exists."""

    def __init__(self, bits, kind, params, uri="http://127.0.0.1:19530", collection="tfhash",
                 token=None):
        check(kind in INDEX_TYPES,
              f"`kind` {kind!r} is not available on milvus; use one of {tuple(INDEX_TYPES)}")
        from pymilvus import DataType, MilvusClient

        self.kind, self.params = kind, params
        self.uri, self.collection = uri, collection
        self.dim = 8 * ((bits + 7) // 8)
        try:
            self.client = MilvusClient(uri=uri, token=token or "")
        except Exception as error:  # noqa: BLE001 - connection problems of any kind
            raise ConnectionError(f"cannot reach Milvus at {uri}: {error}") from None
        if not self.client.has_collection(collection):
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=self.dim)
            index_params = self.client.prepare_index_params()
            extra = {"nlist": params["nlist"]} if kind == "ivf" else {}
            index_params.add_index(field_name="code", index_type=INDEX_TYPES[kind],
                                   metric_type="HAMMING", params=extra)
            self.client.create_collection(collection, schema=schema, index_params=index_params,
                                          consistency_level="Strong")
        self.client.load_collection(collection)

    @property
    def ntotal(self):
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, packed, ids):
        rows = [{"id": int(i), "code": code.tobytes()} for i, code in zip(ids, packed)]
        for start in range(0, len(rows), 10_000):
            self.client.insert(self.collection, rows[start:start + 10_000])

    def _search(self, packed, limit, params):
        search_params = {"metric_type": "HAMMING", "params": params}
        hits = self.client.search(self.collection, data=[row.tobytes() for row in packed],
                                  limit=limit, anns_field="code", search_params=search_params)
        out = []
        for row in hits:
            ids = np.array([h["id"] for h in row], np.int64)
            dist = np.array([h["distance"] for h in row], np.int32)
            order = np.lexsort((ids, dist))
            out.append((ids[order], dist[order]))
        return out

    def search(self, packed, k):
        check(k <= MAX_TOPK, f"`k` must be <= {MAX_TOPK} on milvus, got {k}")
        probe = {"nprobe": self.params["nprobe"]} if self.kind == "ivf" else {}
        first = self._search(packed, k, probe)
        if self.kind == "flat":  # complete the tie group cut by rank k: ties by id, exactly
            kth = np.array([int(d[-1]) for _, d in first])
            for radius in np.unique(kth):  # one range search per distinct k-th distance
                rows = np.flatnonzero(kth == radius)
                found = self._search(packed[rows], MAX_TOPK,
                                     {"radius": int(radius) + 1, "range_filter": -1})
                for row, (ids, dist) in zip(rows, found):
                    first[row] = (ids[:k], dist[:k])
        return (np.stack([ids for ids, _ in first]), np.stack([d for _, d in first]))

    def range_search(self, packed, radius):
        return self._search(packed, MAX_TOPK, {"radius": radius + 1, "range_filter": -1})

    def remove(self, ids):
        self.client.delete(self.collection, ids=[int(i) for i in ids])

    def write(self, path):
        with open(path, "w") as handle:
            json.dump({"uri": self.uri, "collection": self.collection}, handle)

    def read(self, payload):
        location = json.loads(payload)
        check(location == {"uri": self.uri, "collection": self.collection},
              f"saved Milvus location {location} differs from this index's")
