import numpy as np
import pytest

from ranking.index import FaissIndex, ivf_lists


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_set(n: int, dim: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"p{i}" for i in range(n)], unit(rng.standard_normal((n, dim)))


def tiny(kind: str) -> FaissIndex:
    # Unit vectors at 0, 60 and 90 degrees: against q = (1, 0) they score cos 0 = 1, cos 60 = 0.5, cos 90 = 0.
    index = FaissIndex(2, kind=kind)
    index.add(["a", "b", "c"], np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2], [0.0, 1.0]]))
    return index


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "auto"])
def test_tiny_scores_and_allowed(kind):
    index = tiny(kind)
    q = np.array([1.0, 0.0], dtype=np.float32)
    hits = index.search(q, 3)
    assert [i for i, _ in hits] == ["a", "b", "c"]
    assert [s for _, s in hits] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert [i for i, _ in index.search(q, 5, allowed={"c", "b", "zz"})] == ["b", "c"]
    assert index.search(q, 3, allowed=set()) == [] and index.search(q, 0) == []
    assert len(index) == 3 and index.ids == ["a", "b", "c"] and "a" in index


def test_auto_structure_by_size():
    ids, vecs = random_set(3_000)
    index = FaissIndex(16, exact_below=1_000)
    index.add(ids[:500], vecs[:500])
    assert index.structure == "flat"
    index.add(ids[500:], vecs[500:])  # crosses exact_below: converted to IVF, trained on all 3,000
    assert index.structure == "ivf" and len(index) == 3_000
    assert index.search(vecs[2_999], 1)[0][0] == "p2999"
    assert ivf_lists(1_000_000) == 4_000 and ivf_lists(100) == 2


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_remove_save_load_round_trip(kind, tmp_path):
    ids, vecs = random_set(2_000)
    index = FaissIndex(16, kind=kind, nprobe=64, metadata={"encoder": "x"})
    index.add(ids, vecs)
    assert index.remove(["p1", "p2", "nope"]) == 2
    assert len(index) == 1_998 and "p1" not in index
    assert index.search(vecs[1], 1)[0][0] != "p1"
    path = tmp_path / "sub" / "index.npz"
    index.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["index.npz"]  # no temporary file left behind
    loaded = FaissIndex.load(path)
    assert loaded.structure == kind and loaded.metadata == {"encoder": "x"} and loaded.ids == index.ids
    for row in (0, 500, 1_999):
        assert loaded.search(vecs[row], 5) == index.search(vecs[row], 5)
    assert np.allclose(loaded.vectors("p7"), vecs[7:8], atol=1e-6)
    loaded.add(["new"], vecs[1:2])  # labels continue after a reload
    assert loaded.search(vecs[1], 1)[0][0] == "new"
    (tmp_path / "junk.npz").write_bytes(b"not an index")
    with pytest.raises(ValueError):
        FaissIndex.load(tmp_path / "junk.npz")


def test_hnsw_tombstones_then_rebuild():
    ids, vecs = random_set(1_000)
    index = FaissIndex(16, kind="hnsw")
    index.add(ids, vecs)
    index.remove(ids[:150])  # 15% dead: kept as tombstones, filtered at search time
    assert len(index._dead) == 150
    assert all(h[0] not in set(ids[:150]) for h in index.search(vecs[:150], 50))
    index.remove(ids[150:250])  # 25% dead: rebuilt without them
    assert index._dead == set() and index.num_vectors == 750
    assert index.search(vecs[300], 1)[0][0] == "p300"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_allowed_returns_k_whenever_k_exist(kind):
    ids, vecs = random_set(6_000, seed=1)
    index = FaissIndex(
        16, kind=kind, nprobe=1
    )  # one IVF list: an unfiltered scan would miss most of `allowed`
    index.add(ids, vecs)
    rng = np.random.default_rng(2)
    for size in (3, 10, 40, 5_000):
        allowed = {f"p{i}" for i in rng.choice(6_000, size, replace=False)}
        hits = index.search(vecs[0], 10, allowed=allowed)
        assert len(hits) == min(10, size) and all(h in allowed for h, _ in hits)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
        # The filtered search is exact for small sets: the same as scoring the allowed ids by hand.
        if size <= 40:
            best = sorted(((i, float(vecs[int(i[1:])] @ vecs[0])) for i in allowed), key=lambda x: -x[1])[:10]
            assert [i for i, _ in hits] == [i for i, _ in best]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_multi_vector_ids_score_their_best_view(kind):
    # "bag" has two views at 0 and 90 degrees; "hat" one at 45 degrees. Against q = (1, 0): bag = max(1, 0) = 1,
    # hat = cos 45 = 0.707. Against q = (0, 1): bag = max(0, 1) = 1 again; each id is listed once.
    index = FaissIndex(2, kind=kind)
    index.add(["bag", "hat", "bag"], unit(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])))
    assert len(index) == 2 and index.num_vectors == 3 and index.vectors("bag").shape == (2, 2)
    for q in ([1.0, 0.0], [0.0, 1.0]):
        hits = index.search(np.array(q), 2)
        assert [i for i, _ in hits] == ["bag", "hat"]
        assert [s for _, s in hits] == pytest.approx([1.0, np.sqrt(0.5)], abs=1e-6)
    # A query of two rows (two photos) scores each id by its best pair as well.
    assert index.search(unit(np.array([[1.0, 1.0], [1.0, 0.1]])), 1)[0] == (
        "hat",
        pytest.approx(1.0, abs=1e-6),
    )
    index.remove(["bag"])
    assert index.search(np.array([1.0, 0.0]), 5) == [("hat", pytest.approx(np.sqrt(0.5), abs=1e-6))]


def test_many_vectors_per_id_still_fill_k():
    # Ten ids with 20 near-identical views each: the top 5 vectors all belong to one id, yet 5 ids come back.
    rng = np.random.default_rng(3)
    base = unit(rng.standard_normal((10, 16)))
    ids = [f"p{i}" for i in range(10) for _ in range(20)]
    vecs = unit(np.repeat(base, 20, axis=0) + rng.standard_normal((200, 16)) * 0.01)
    index = FaissIndex(16, kind="flat")
    index.add(ids, vecs)
    hits = index.search(base[0], 5)
    assert len(hits) == 5 and hits[0][0] == "p0"


def test_bad_input():
    index = tiny("flat")
    with pytest.raises(ValueError, match="shape"):
        index.add(["d"], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.zeros(3), 1)
    with pytest.raises(ValueError, match="kind"):
        FaissIndex(2, kind="annoy")
