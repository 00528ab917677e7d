"""One behavioural suite over `FaissIndex` and `QdrantIndex` (local on disk and in memory), plus the factory and a
HybridRetriever on Qdrant."""

import gc
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranking.index import FaissIndex, VectorIndex  # noqa: E402
from ranking.stores import create_vector_index, load_vector_index, parse_vector_url  # noqa: E402
from tests.fakes import count_encodes  # noqa: E402

HAVE_QDRANT = importlib.util.find_spec("qdrant_client") is not None
needs_qdrant = pytest.mark.skipif(
    not HAVE_QDRANT, reason="qdrant-client is not installed (pip install qdrant-client)"
)
BACKENDS = [
    "faiss",
    pytest.param("qdrant-local", marks=needs_qdrant),
    pytest.param("qdrant-memory", marks=needs_qdrant),
]


def unit(rows) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float32))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def url_of(backend: str, root: Path) -> str | None:
    return {
        "faiss": None,
        "qdrant-local": f"qdrant-local:{root / 'qdrant'}",
        "qdrant-memory": "qdrant::memory:",
    }[backend]


@pytest.fixture(params=BACKENDS)
def make(request, tmp_path):
    """Factory of empty indexes of one backend: make(dim, name=..., metric=..., metadata=...)."""
    url = url_of(request.param, tmp_path)
    made: list[VectorIndex] = []

    def build(dim: int, *, name: str = "test", metric: str = "ip", metadata=None) -> VectorIndex:
        index = create_vector_index(url, dim, name=name, kind="flat", metric=metric, metadata=metadata)
        made.append(index)
        return index

    build.url = url  # type: ignore[attr-defined]
    build.backend = request.param  # type: ignore[attr-defined]
    yield build
    for index in made:  # release local folders' locks
        if hasattr(index, "close"):
            index.close()


def brute_force(store: dict[str, list[np.ndarray]], query: np.ndarray, k: int, allowed=None):
    """Reference: an id scores by its best (vector, query row) inner product; ties by id."""
    q = np.atleast_2d(query)
    best = {
        id_: max(float(s) for v in vecs for s in q @ v)
        for id_, vecs in store.items()
        if allowed is None or id_ in allowed
    }
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]


def ids_of(hits):
    return [i for i, _ in hits]


# --- behaviour, on every backend -------------------------------------------------------------------------------------


def test_satisfies_protocol_and_basics(make):
    index = make(2)
    assert isinstance(index, VectorIndex)
    assert index.search(np.array([1.0, 0.0]), 3) == [] and len(index) == 0 and index.ids == []
    # Unit vectors at 0, 60 and 90 degrees: against q = (1, 0) they score 1, 0.5 and 0.
    index.add(["a", "b", "c"], np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2], [0.0, 1.0]]))
    q = np.array([1.0, 0.0], dtype=np.float32)
    hits = index.search(q, 3)
    assert ids_of(hits) == ["a", "b", "c"] and all(type(s) is float for _, s in hits)
    assert [s for _, s in hits] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert ids_of(index.search(q, 5, allowed={"c", "b", "zz"})) == ["b", "c"]
    assert index.search(q, 3, allowed=set()) == [] and index.search(q, 0) == []
    assert index.search(q, 3, allowed={"zz"}) == []
    assert len(index) == 3 and index.ids == ["a", "b", "c"] and "a" in index and "zz" not in index
    assert index.num_vectors == 3 and index.vectors("zz").shape == (0, 2)
    with pytest.raises(ValueError):
        index.search(np.zeros(3), 1)
    with pytest.raises(ValueError):
        index.add(["d"], np.zeros((1, 3)))
    with pytest.raises(ValueError):
        index.search_batch(np.zeros(2), 1)


def test_add_remove_readd(make):
    index = make(8)
    vecs = random_unit(4, 8, seed=1)
    index.add(["a", "b", "c", "d"], vecs)
    assert index.remove(["b", "zz", "d"]) == 2 and index.remove(["b"]) == 0
    assert index.ids == ["a", "c"] and "b" not in index and index.num_vectors == 2
    assert index.vectors("b").shape == (0, 8)
    for row in vecs:
        assert set(ids_of(index.search(row, 10))) == {"a", "c"}
    fresh = random_unit(1, 8, seed=2)
    index.add(["b"], fresh)  # re-added: a new vector, at the end of the insertion order
    assert index.ids == ["a", "c", "b"] and len(index) == 3
    np.testing.assert_allclose(index.vectors("b"), fresh, atol=1e-6)
    top, score = index.search(fresh[0], 1)[0]
    assert top == "b" and score == pytest.approx(1.0, abs=1e-5)
    assert index.search(vecs[1], 3, allowed={"b"}) == [
        ("b", pytest.approx(float(vecs[1] @ fresh[0]), abs=1e-5))
    ]
    index.remove(index.ids)
    assert len(index) == 0 and index.num_vectors == 0 and index.search(fresh[0], 3) == []


def test_several_vectors_per_id_score_by_best(make):
    dim = 16
    vecs = random_unit(7, dim, seed=3)
    index = make(dim)
    index.add(["x", "x", "y", "z"], vecs[:4])
    index.add(["x", "y"], vecs[4:6])  # more vectors for known ids in a later call
    assert len(index) == 3 and index.num_vectors == 6 and index.ids == ["x", "y", "z"]
    np.testing.assert_allclose(index.vectors("x"), vecs[[0, 1, 4]], atol=1e-6)  # in the order they were added
    np.testing.assert_allclose(index.vectors("y"), vecs[[2, 5]], atol=1e-6)
    store = {"x": list(vecs[[0, 1, 4]]), "y": list(vecs[[2, 5]]), "z": [vecs[3]]}
    for row in [*vecs, *random_unit(5, dim, seed=4)]:
        hits = index.search(row, 3)
        ref = brute_force(store, row, 3)
        assert ids_of(hits) == ids_of(ref)  # each id once, at its best vector
        assert [s for _, s in hits] == pytest.approx([s for _, s in ref], abs=1e-5)
    # k = 1 over an id whose many vectors fill the top: the next id is still found.
    crowd = make(dim, name="crowd")
    base = vecs[0]
    near = unit(base + 0.01 * random_unit(20, dim, seed=5))
    crowd.add(["many"] * 20 + ["other"], np.vstack([near, vecs[1:2]]))
    assert ids_of(crowd.search(base, 2)) == ["many", "other"]


def test_allowed_never_leaks_and_returns_k(make):
    dim, n = 12, 300
    rng = np.random.default_rng(6)
    ids, rows, store = [], [], {}
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):  # one to three vectors per id
            v = random_unit(1, dim, seed=1000 + len(rows))[0]
            ids.append(f"p{i:03d}")
            rows.append(v)
            store.setdefault(f"p{i:03d}", []).append(v)
    index = make(dim)
    index.add(ids, np.vstack(rows))
    all_ids = sorted(store)
    for size in (1, 3, 10, 40, 150, 299):
        allowed = set(rng.choice(all_ids, size, replace=False).tolist()) | {"unknown-id"}
        for seed in range(3):
            q = random_unit(1, dim, seed=seed + size)[0]
            for k in (1, 10, 25):
                hits = index.search(q, k, allowed=allowed)
                assert set(ids_of(hits)) <= allowed
                assert len(hits) == min(k, size)
                assert ids_of(hits) == ids_of(brute_force(store, q, k, allowed))


def test_multi_row_query(make):
    dim = 10
    vecs = random_unit(60, dim, seed=7)
    ids = [f"m{i % 25:02d}" for i in range(60)]  # 25 ids, most with several vectors
    store: dict[str, list[np.ndarray]] = {}
    for id_, v in zip(ids, vecs, strict=True):
        store.setdefault(id_, []).append(v)
    index = make(dim)
    index.add(ids, vecs)
    for seed in range(5):
        q = random_unit(3, dim, seed=100 + seed)  # three query rows (e.g. three photos of one item)
        for allowed in (None, {"m00", "m03", "m07", "m11", "m19", "m24"}):
            hits = index.search(q, 5, allowed=allowed)
            ref = brute_force(store, q, 5, allowed)
            assert ids_of(hits) == ids_of(ref)
            assert [s for _, s in hits] == pytest.approx([s for _, s in ref], abs=1e-5)
    # A query row equal to a stored vector finds its id first, whatever the other rows.
    assert index.search(np.vstack([random_unit(1, dim, seed=9), vecs[33]]), 1)[0][0] == ids[33]


def test_ties_break_by_id(make):
    dim = 4
    same = unit([1.0, 1.0, 0.0, 0.0])
    index = make(dim)
    tied = ["t5", "t2", "t9", "t1", "t7"]
    index.add(tied, np.repeat(same, 5, axis=0))
    index.add(["far"], unit([0.0, 0.0, 1.0, 0.0]))
    index.add(["t0", "t0"], np.vstack([unit([0.0, 0.0, 0.0, 1.0]), same]))  # tied through its second vector
    hits = index.search(same[0], 3)
    assert ids_of(hits) == ["t0", "t1", "t2"] and len({s for _, s in hits}) == 1
    assert ids_of(index.search(same[0], 6)) == ["t0", "t1", "t2", "t5", "t7", "t9"]
    assert ids_of(index.search(same[0], 2, allowed={"t9", "t7", "far"})) == ["t7", "t9"]
    batch = index.search_batch(np.vstack([same, same]), 2)
    assert all(len(hits) == 2 and set(ids_of(hits)) <= {"t0", *tied} for hits in batch)
    if make.backend != "faiss":
        # FaissIndex.search_batch breaks ties by id only among the vectors it fetched (k x the most vectors per id);
        # Qdrant keeps fetching until no unseen vector can tie, so its cut-off is by id too.
        assert [ids_of(hits) for hits in batch] == [["t0", "t1"], ["t0", "t1"]]


def test_search_batch_matches_single_searches(make):
    dim = 16
    vecs = random_unit(200, dim, seed=11)
    index = make(dim)
    index.add([f"b{i % 150}" for i in range(200)], vecs)
    queries = random_unit(6, dim, seed=12)
    batch = index.search_batch(queries, 7)
    assert len(batch) == 6
    for row, hits in zip(queries, batch, strict=True):
        single = index.search(row, 7)
        assert ids_of(hits) == ids_of(single)
        assert [s for _, s in hits] == pytest.approx([s for _, s in single], abs=1e-6)
    assert index.search_batch(queries, 0) == [[] for _ in range(6)]


def test_l2_metric_scores_like_faiss(make):
    dim = 6
    vecs = np.random.default_rng(13).standard_normal((40, dim)).astype(np.float32)  # not normalised
    ids = [f"l{i}" for i in range(40)]
    index = make(dim, metric="l2")
    index.add(ids, vecs)
    q = np.random.default_rng(14).standard_normal(dim).astype(np.float32)
    hits = index.search(q, 5)
    ref = sorted(
        ((i, -float(((q - v) ** 2).sum())) for i, v in zip(ids, vecs, strict=True)), key=lambda t: -t[1]
    )
    assert ids_of(hits) == ids_of(ref[:5])
    assert [s for _, s in hits] == pytest.approx([s for _, s in ref[:5]], rel=1e-4)
    np.testing.assert_allclose(index.vectors("l3"), vecs[3:4], atol=1e-6)  # stored as given, not normalised


def test_save_load_round_trip(make, tmp_path):
    dim = 16
    vecs = random_unit(50, dim, seed=15)
    ids = [f"s{i % 40:02d}" for i in range(50)]
    meta = {"encoder": "minilm", "note": "round trip"}
    index = make(dim, name="roundtrip", metadata=meta)
    index.add(ids, vecs)
    index.remove(["s05"])
    path = tmp_path / "saved" / "text-index-abc.npz"
    index.save(path)
    index.save(path)  # replacing works
    assert sorted(p.name for p in path.parent.iterdir()) == ["text-index-abc.npz"]
    loaded = load_vector_index(path, make.url, data_dir=tmp_path)
    assert type(loaded) is type(index) and loaded.metadata == meta
    assert loaded.ids == index.ids and loaded.num_vectors == index.num_vectors and "s05" not in loaded
    np.testing.assert_allclose(loaded.vectors("s03"), index.vectors("s03"), atol=1e-6)
    queries = random_unit(5, dim, seed=16)
    for q in queries:
        assert loaded.search(q, 8) == index.search(q, 8)
        assert loaded.search(q, 3, allowed={"s01", "s02", "s33"}) == index.search(
            q, 3, allowed={"s01", "s02", "s33"}
        )
    # The loaded index keeps working incrementally, in insertion order.
    loaded.add(["new"], queries[:1])
    assert loaded.ids[-1] == "new" and loaded.search(queries[0], 1)[0][0] == "new"
    assert loaded.remove(["s01"]) == 1 and "s01" not in loaded
    # A file of another store is refused, as is garbage.
    other = None if make.url is not None else "qdrant::memory:"
    with pytest.raises(ValueError):
        load_vector_index(path, other, data_dir=tmp_path)
    junk = tmp_path / "junk.npz"
    junk.write_text("not an index")
    with pytest.raises(ValueError):
        load_vector_index(junk, make.url, data_dir=tmp_path)


@needs_qdrant
def test_local_store_outlives_its_client(tmp_path):
    """On disk, the data survives closing the client (a restart); the manifest reopens it."""
    from ranking.qdrant_index import QdrantIndex

    url = f"qdrant-local:{tmp_path / 'store'}"
    index = create_vector_index(url, 8, name="persist", metadata={"v": "1"})
    vecs = random_unit(30, 8, seed=17)
    index.add([f"d{i}" for i in range(30)], vecs)
    before = index.search(vecs[4], 5)
    index.save(tmp_path / "manifest.npz")
    assert isinstance(index, QdrantIndex)
    index.close()  # releases the folder lock, as a process exit would
    reopened = load_vector_index(tmp_path / "manifest.npz", url)
    assert reopened.search(vecs[4], 5) == before and reopened.metadata == {"v": "1"} and len(reopened) == 30
    assert isinstance(reopened, QdrantIndex)
    reopened.close()


@needs_qdrant
def test_memory_store_lives_with_its_indexes(tmp_path):
    index = create_vector_index("qdrant::memory:", 4, name="m")
    index.add(["a"], unit([1.0, 0.0, 0.0, 0.0]))
    index.save(tmp_path / "m.npz")
    assert load_vector_index(tmp_path / "m.npz", "qdrant::memory:").ids == ["a"]
    del index
    gc.collect()
    with pytest.raises(ValueError, match="gone"):
        load_vector_index(tmp_path / "m.npz", "qdrant::memory:")


@needs_qdrant
@pytest.mark.parametrize("url_kind", ["qdrant-local", "qdrant-memory"])
def test_qdrant_equals_faiss_flat_on_random_vectors(url_kind, tmp_path):
    """Local Qdrant is exact brute force: the same top 10 as FAISS flat on random normalised vectors."""
    # On disk, qdrant-client commits one SQLite transaction per point (~4 ms each here): fewer vectors there.
    dim, n = 64, 2_000 if url_kind == "qdrant-memory" else 500
    vecs = random_unit(n, dim, seed=18)
    ids = [f"r{i:04d}" for i in range(n)]
    faiss_index = FaissIndex(dim, kind="flat")
    faiss_index.add(ids, vecs)
    qdrant = create_vector_index(url_of(url_kind, tmp_path), dim, name="agree")
    qdrant.add(ids, vecs)
    queries = random_unit(25, dim, seed=19)
    allowed = set(ids[::7])
    for q in queries:
        for subset in (None, allowed):
            f_hits, q_hits = faiss_index.search(q, 10, allowed=subset), qdrant.search(q, 10, allowed=subset)
            assert ids_of(q_hits) == ids_of(f_hits)
            assert [s for _, s in q_hits] == pytest.approx([s for _, s in f_hits], abs=1e-5)
    batch_f, batch_q = faiss_index.search_batch(queries, 10), qdrant.search_batch(queries, 10)
    assert [ids_of(h) for h in batch_q] == [ids_of(h) for h in batch_f]
    qdrant.close()  # type: ignore[attr-defined]


# --- the factory -----------------------------------------------------------------------------------------------------


def test_parse_vector_url(tmp_path):
    assert parse_vector_url(None) == ("faiss", None) == parse_vector_url("faiss")
    assert parse_vector_url("qdrant::memory:") == ("qdrant-memory", None)
    assert parse_vector_url("qdrant-local:", tmp_path) == (
        "qdrant-local",
        str((tmp_path / "qdrant").resolve()),
    )
    assert parse_vector_url("qdrant-local:vec", tmp_path) == (
        "qdrant-local",
        str((tmp_path / "vec").resolve()),
    )
    assert parse_vector_url(f"qdrant-local:{tmp_path}/abs", None) == ("qdrant-local", str(tmp_path / "abs"))
    assert parse_vector_url("http://qdrant.internal:6333/") == (
        "qdrant-server",
        "http://qdrant.internal:6333",
    )
    assert parse_vector_url("https://q.example.com:6333")[0] == "qdrant-server"
    with pytest.raises(ValueError, match="data dir"):
        parse_vector_url("qdrant-local:")
    for bad in ("redis://x", "qdrant:", "milvus", "http://"):
        with pytest.raises(ValueError, match="qdrant-local:") as err:
            parse_vector_url(bad)
        assert (
            "qdrant::memory:" in str(err.value)
            and "http(s)://" in str(err.value)
            and "faiss" in str(err.value)
        )


def test_factory_builds_faiss_exactly_as_before():
    index = create_vector_index(None, 8, name="ignored", kind="flat", metadata={"a": "b"})
    assert isinstance(index, FaissIndex) and index.kind == "flat" and index.metadata == {"a": "b"}
    assert isinstance(create_vector_index("faiss", 8, name="x"), FaissIndex)
    with pytest.raises(ValueError):
        create_vector_index("ftp://nowhere", 8, name="x")


@needs_qdrant
def test_factory_local_default_path_and_fresh_collections(tmp_path):
    from ranking.qdrant_index import QdrantIndex

    first = create_vector_index("qdrant-local:", 4, name="shoptalk-text", data_dir=tmp_path)
    assert isinstance(first, QdrantIndex) and first.path == (tmp_path / "qdrant").resolve()
    first.add(["a"], unit([1.0, 0.0, 0.0, 0.0]))
    # A second index of the same folder shares the client (local mode locks the folder); a new index of the same
    # collection starts empty, as a new FaissIndex does.
    image = create_vector_index("qdrant-local:", 3, name="shoptalk-image", data_dir=tmp_path)
    assert image.search(unit([1.0, 0.0, 0.0])[0], 1) == [] and first.ids == ["a"]
    again = create_vector_index("qdrant-local:", 4, name="shoptalk-text", data_dir=tmp_path)
    assert len(again) == 0 and again.search(unit([1.0, 0.0, 0.0, 0.0])[0], 1) == []
    first.close()


# --- HybridRetriever on Qdrant ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from ranking.text_encoder import TextEncoder

    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory):
    from assistant.catalog.demo import generate_demo_catalog
    from assistant.catalog.model import Catalog

    return Catalog.load_jsonl(generate_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog"))


@needs_qdrant
@pytest.mark.real_model
def test_retriever_on_qdrant_matches_faiss(demo_catalog, encoder, tmp_path):
    from assistant.search.query import SearchQuery, parse_query
    from assistant.search.retrieval import HybridRetriever
    from ranking.qdrant_index import QdrantIndex
    from tests.test_retrieval import FakeImageEncoder

    cache = tmp_path / "cache"  # shared: the Qdrant retriever reuses the product vectors FAISS's encoded
    faiss_r = HybridRetriever(demo_catalog, encoder, image_encoder=FakeImageEncoder(), cache_dir=cache)
    qdrant_r = HybridRetriever(
        demo_catalog, encoder, image_encoder=FakeImageEncoder(), cache_dir=cache, vector_url="qdrant::memory:"
    )
    assert isinstance(qdrant_r.text_index, QdrantIndex) and isinstance(qdrant_r.image_index, QdrantIndex)
    assert (
        qdrant_r.text_index.collection == "shoptalk-text"
        and qdrant_r.image_index.collection == "shoptalk-image"
    )
    assert isinstance(faiss_r.text_index, FaissIndex) and isinstance(faiss_r.image_index, FaissIndex)
    texts = [
        "black hoodie under fifty dollars",
        "white sneakers size 9",
        "mens boots",
        "a warm jacket",
        "backpack",
    ]
    for text in texts:
        q = replace(parse_query(text, faiss_r.vocab), k=5)
        f_hits, q_hits = faiss_r.search(q), qdrant_r.search(q)
        assert f_hits, text
        assert [h.product.id for h in q_hits] == [h.product.id for h in f_hits], text
        assert [h.score for h in q_hits] == pytest.approx([h.score for h in f_hits], abs=1e-5)
    photo = FakeImageEncoder().encode_image_files([demo_catalog.image_path(demo_catalog.get("HD05-BROWN"))])[
        0
    ]
    for query in (None, replace(parse_query("like this but in blue", faiss_r.vocab), k=5)):
        f_hits, q_hits = faiss_r.search_image(photo, query), qdrant_r.search_image(photo, query)
        assert f_hits and [h.product.id for h in q_hits] == [h.product.id for h in f_hits]
    text_q = SearchQuery("red running shoes", k=5)
    assert [h.product.id for h in qdrant_r.search(text_q)] == [h.product.id for h in faiss_r.search(text_q)]


@needs_qdrant
@pytest.mark.real_model
def test_retriever_qdrant_local_save_load_and_update(demo_catalog, encoder, tmp_path, monkeypatch):
    """The retriever's cache flow on local Qdrant: build, reopen from the manifest without encoding, update."""
    from assistant.catalog.model import Catalog, Product
    from assistant.search.query import SearchQuery
    from assistant.search.retrieval import HybridRetriever
    from ranking.qdrant_index import QdrantIndex

    cache = tmp_path / "index"
    first = HybridRetriever(demo_catalog, encoder, cache_dir=cache, vector_url="qdrant-local:")
    assert isinstance(first.text_index, QdrantIndex) and first.text_index.path == (cache / "qdrant").resolve()
    manifest = cache / f"text-index-{demo_catalog.content_hash()}.npz"
    assert manifest.is_file()
    before = [h.product.id for h in first.search(SearchQuery("black hoodie", k=8))]

    encoded = count_encodes(encoder, monkeypatch)
    again = HybridRetriever(demo_catalog, encoder, cache_dir=cache, vector_url="qdrant-local:")
    assert encoded == [] and isinstance(again.text_index, QdrantIndex)  # reopened from the manifest
    assert [h.product.id for h in again.search(SearchQuery("black hoodie", k=8))] == before

    records = {p.id: p.to_dict() for p in demo_catalog}
    del records["HD02-BLACK"]
    records["HD99-BLACK"] = dict(records["HD03-BLACK"], id="HD99-BLACK", title="Brand New Hoodie — Black")
    new_catalog = Catalog(
        [Product.from_dict(r) for r in records.values()], image_root=demo_catalog.image_root
    )
    assert again.update(new_catalog) == {"added": 1, "changed": 0, "removed": 1}
    assert len(encoded) == 1
    ids = {h.product.id for h in again.search(SearchQuery("black hoodie", k=20))}
    assert "HD99-BLACK" in ids and "HD02-BLACK" not in ids
    assert [p.name for p in cache.glob("text-index-*.npz")] == [
        f"text-index-{new_catalog.content_hash()}.npz"
    ]
    # A FAISS retriever over the same cache dir does not mistake the manifest for its index: it rebuilds.
    faiss_r = HybridRetriever(new_catalog, encoder, cache_dir=cache)
    assert isinstance(faiss_r.text_index, FaissIndex) and set(faiss_r.index.ids) == set(again.index.ids)
    again.text_index.close()  # type: ignore[attr-defined]


def test_retriever_rejects_unknown_vector_url(demo_catalog):
    from assistant.search.retrieval import HybridRetriever

    class NoEncoder:
        dim = 4

    with pytest.raises(ValueError, match="qdrant::memory:"):
        HybridRetriever(demo_catalog, NoEncoder(), vector_url="pinecone://x")  # type: ignore[arg-type]
