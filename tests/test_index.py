import json

import numpy as np
import pytest

from tfhash import codes
from tfhash.errors import TfhashError
from tfhash.index import HammingIndex

from reference import hamming_bruteforce


def brute_force_topk(q, db, ids, k):
    d = hamming_bruteforce(q, db)
    out_ids, out_d = [], []
    for row in d:
        order = sorted(range(len(ids)), key=lambda j: (row[j], ids[j]))[:k]
        out_ids.append(ids[order])
        out_d.append(row[order])
    return np.array(out_ids), np.array(out_d)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    bits = 12  # not a multiple of 8, few distinct distances: many ties
    db = rng.choice([-1, 1], (300, bits))
    q = rng.choice([-1, 1], (20, bits))
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    labels = rng.integers(0, 5, 300)
    return bits, q, db, ids, labels


@pytest.mark.parametrize("k", [1, 7, 50])
def test_flat_search_equals_bruteforce_with_ties_by_id(problem, k):
    bits, q, db, ids, labels = problem
    index = HammingIndex(bits)
    index.add(db, ids=ids, labels=labels)
    got_ids, got_d = index.search(q, k)
    want_ids, want_d = brute_force_topk(q, db, ids, k)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_ids, want_ids)
    assert got_ids.dtype == np.int64
    # packed queries give the same answer
    np.testing.assert_array_equal(index.search(codes.pack(q), k)[0], want_ids)


def assert_range_search_matches(index, q, db, ids, radius):
    d = hamming_bruteforce(q, db)
    for row, (got_ids, got_d) in enumerate(index.range_search(q, radius)):
        mask = d[row] <= radius
        order = np.lexsort((ids[mask], d[row][mask]))
        np.testing.assert_array_equal(got_ids, ids[mask][order])
        np.testing.assert_array_equal(got_d, d[row][mask][order])


def test_range_search(problem):
    bits, q, db, ids, _ = problem
    index = HammingIndex(bits)
    index.add(db, ids=ids)
    assert_range_search_matches(index, q, db, ids, 3)


def test_remove_and_k_larger_than_collection(problem):
    bits, q, db, ids, labels = problem
    index = HammingIndex(bits)
    index.add(db[:10], ids=ids[:10], labels=labels[:10])
    assert index.remove(ids[:4].tolist() + [123456789]) == 4
    got_ids, got_d = index.search(q, 100)
    assert got_ids.shape == (20, 6)
    want_ids, want_d = brute_force_topk(q, db[4:10], ids[4:10], 6)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(index.labels_of(got_ids[0]), labels[4:10][
        [list(ids[4:10]).index(i) for i in got_ids[0]]])


def test_empty_index():
    index = HammingIndex(16)
    ids, d = index.search(np.ones((3, 16)), 5)
    assert ids.shape == (3, 0) and d.shape == (3, 0)
    assert index.range_search(np.ones((2, 16)), 2)[0][0].size == 0


def test_save_load_round_trip(problem, tmp_path):
    bits, q, db, ids, labels = problem
    index = HammingIndex(bits, fingerprint="abc")
    paths = np.array([f"img/{i}.png" for i in ids])
    index.add(db, ids=ids, labels=labels, paths=paths)
    index.save(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix")
    assert len(loaded) == 300 and loaded.bits == bits and loaded.fingerprint == "abc"
    for a, b in zip(index.search(q, 9), loaded.search(q, 9)):
        np.testing.assert_array_equal(a, b)
    assert loaded.paths_of(ids[:2]).tolist() == paths[:2].tolist()
    hits, _ = loaded.search(q[:3], 4)  # search's (n, k) ids give (n, k) paths, by id
    lookup = dict(zip(ids.tolist(), paths.tolist()))
    assert loaded.paths_of(hits).tolist() == [[lookup[i] for i in row] for row in hits.tolist()]
    # saving again replaces the data files and keeps only those meta.json references
    loaded.remove(ids[:5])
    loaded.save(tmp_path / "ix")
    assert len(list((tmp_path / "ix").glob("*.bin"))) == 2
    assert len(HammingIndex.load(tmp_path / "ix")) == 295


def test_corrupt_or_truncated_files_are_refused(problem, tmp_path):
    bits, _, db, ids, _ = problem
    index = HammingIndex(bits)
    index.add(db, ids=ids)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix/meta.json").read_text())
    data = tmp_path / "ix" / meta["files"]["index"]["file"]
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(TfhashError, match="corrupt or truncated"):
        HammingIndex.load(tmp_path / "ix")
    (tmp_path / "ix/meta.json").write_text('{"format": "tfhash-index", "vers')
    with pytest.raises(ValueError, match="meta.json is corrupt"):
        HammingIndex.load(tmp_path / "ix")


def test_format_version_and_encoder_mismatch(problem, tmp_path):
    bits, _, db, ids, _ = problem
    index = HammingIndex(bits, fingerprint="enc-1")
    index.add(db, ids=ids)
    index.save(tmp_path / "ix")
    with pytest.raises(TfhashError, match="not the one that built the index"):
        HammingIndex.load(tmp_path / "ix", fingerprint="enc-2")
    with pytest.raises(TfhashError, match="16-bit codes, the index holds 12"):
        HammingIndex.load(tmp_path / "ix", bits=16)
    meta = json.loads((tmp_path / "ix/meta.json").read_text())
    meta["version"] = 99
    (tmp_path / "ix/meta.json").write_text(json.dumps(meta))
    with pytest.raises(TfhashError, match="version 99"):
        HammingIndex.load(tmp_path / "ix")


def test_crash_in_save_leaves_previous_index_loadable(problem, tmp_path, monkeypatch):
    bits, q, db, ids, _ = problem
    index = HammingIndex(bits)
    index.add(db, ids=ids)
    index.save(tmp_path / "ix")
    before = index.search(q, 5)
    index.remove(ids[:100])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    import tfhash.index as module

    monkeypatch.setattr(module, "write_json", crash)  # dies after data files, before meta
    with pytest.raises(OSError):
        index.save(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix")
    assert len(loaded) == 300
    np.testing.assert_array_equal(loaded.search(q, 5)[0], before[0])


def test_approximate_kinds_find_exact_matches(problem):
    rng = np.random.default_rng(1)
    db = rng.choice([-1, 1], (2000, 64))
    q = db[:50].copy()
    for kind, kwargs in (("ivf", {"nlist": 16, "nprobe": 4}), ("multihash", {"nhash": 4})):
        index = HammingIndex(64, kind=kind, **kwargs)
        assert not index.exact
        index.add(db)
        ids, d = index.search(q, 1)
        np.testing.assert_array_equal(d[:, 0], 0)
        np.testing.assert_array_equal(ids[:, 0], np.arange(50))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda ix: ix.add(np.ones((2, 8))), "`bits`=12 does not match `codes` with 8 columns"),
        (lambda ix: ix.add(np.ones((2, 12)), ids=[1, 1]), "unique"),
        (lambda ix: ix.add(np.ones((2, 12)), ids=[1]), "`ids` must be 2 integers"),
        (lambda ix: ix.search(np.ones((2, 12)), 0), "`k` must be an integer >= 1"),
        (lambda ix: ix.search(np.ones((2, 12)), True), "`k` must be an integer >= 1, got True"),
        (lambda ix: ix.range_search(np.ones((2, 12)), 2.0), "`radius` must be an integer >= 0"),
        (lambda ix: ix.range_search(np.ones((2, 12)), -1), "radius"),
        (lambda ix: ix.add(np.zeros((2, 12))), "only -1 and \\+1"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(TfhashError, match=match):
        call(HammingIndex(12))


def test_bad_constructor_arguments():
    with pytest.raises(TfhashError, match="kind"):
        HammingIndex(12, kind="hnsw")
    with pytest.raises(TfhashError, match="bits"):
        HammingIndex(0)


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """An embedded Milvus server on loopback (PyPI package `milvus`), stopped afterwards."""
    server_module = pytest.importorskip(
        "milvus", reason="the milvus extra is not installed: pip install -e '.[milvus]'")
    pytest.importorskip("pymilvus", reason="pymilvus is not installed")
    server = server_module.default_server
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    server.start()
    yield f"http://127.0.0.1:{server.listen_port}"
    server.stop()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_milvus_backend_against_real_server(milvus_uri, problem, kind, tmp_path):
    bits, q, db, ids, labels = problem
    index = HammingIndex(bits, backend="milvus", kind=kind, nlist=4, nprobe=4, uri=milvus_uri,
                         collection=f"test_{kind}")
    index.add(db, ids=ids, labels=labels)
    got_ids, got_d = index.search(q, 10)
    want_ids, want_d = brute_force_topk(q, db, ids, 10)
    if kind == "flat":
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_d, want_d)
        assert_range_search_matches(index, q, db, ids, 2)
    else:  # approximate, but every returned distance is the true one
        d = hamming_bruteforce(q, db)
        pos = {int(i): j for j, i in enumerate(ids)}
        for row in range(len(q)):
            assert all(d[row, pos[int(i)]] == dd for i, dd in zip(got_ids[row], got_d[row]))
    assert index.remove(ids[:50]) == 50
    assert not np.isin(index.search(q, 10)[0], ids[:50]).any()
    index.save(tmp_path / "mv")
    loaded = HammingIndex.load(tmp_path / "mv")
    assert loaded.backend == "milvus" and len(loaded) == 250
    np.testing.assert_array_equal(loaded.labels_of(ids[50:53]), labels[50:53])


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "ivf", "nlist": 0}, "`nlist` must be an integer >= 1, got 0"),
    ({"kind": "ivf", "nprobe": True}, "`nprobe` must be an integer >= 1, got True"),
    ({"kind": "multihash", "nhash": 2.0}, "`nhash` must be an integer >= 1, got 2.0"),
    ({"kind": "multihash", "nflip": -1}, "`nflip` must be an integer >= 0, got -1"),
])
def test_bad_index_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(TfhashError, match=match):
        HammingIndex(64, **kwargs)
