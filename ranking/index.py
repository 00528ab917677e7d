"""Vector index over L2-normalised vectors (inner product = cosine), on FAISS.

Exact (``IndexFlatIP``) for small catalogs, IVF for large ones, chosen by size; string ids, several vectors per id
(the best one scores), incremental add/remove, an optional id whitelist for the caller's filters, atomic save/load.

`VectorIndex` is the interface `FaissIndex` and `ranking.qdrant_index.QdrantIndex` share;
`ranking.stores.create_vector_index` picks one from a URL and `load_vector_index` reopens what either saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

log = logging.getLogger(__name__)


INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
EXACT_BELOW = 50_000  # exact search over 50k 384-d vectors is ~2 ms on 2 cores; beyond it IVF pays off
IVF_NPROBE = 16  # lists scanned per query: recall@10 1.00 at 1M clustered vectors (bench/index_scale.py)
IVF_TRAIN_PER_LIST = 40  # k-means training points per list (faiss warns below 39)
IVF_REGROW = 4  # retrain an IVF index once it holds this many times the vectors it was trained on
HNSW_EF_CONSTRUCTION = 40  # faiss' default
REBUILD_TOMBSTONE_FRACTION = 0.2  # HNSW cannot delete: rebuild once a fifth of its vectors are dead
EXACT_ALLOWED_MAX = (
    4_096  # an `allowed` set this small is scored exactly (faster than a filtered approximate search)
)
_FORMAT = "shoptalk-faiss-index/1"


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run one query on one OpenMP thread.

    On 2 busy cores a 2-thread flat search of 10k vectors takes 16 ms against 0.4 ms on one thread: the threads
    spin at a barrier while the other core is taken.
    """
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def query_matrix(query: np.ndarray, dim: int) -> np.ndarray:
    """A search query as a contiguous float32 [n, dim] matrix (one row for a single vector).

    Raises:
        ValueError: The query dimension is wrong.
    """
    q = np.ascontiguousarray(np.asarray(query, dtype=np.float32))
    q = q.reshape(1, -1) if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"expected a query of dimension {dim}, got shape {np.shape(query)}")
    return q


def vector_rows(ids: Sequence[str], vectors: np.ndarray, dim: int) -> np.ndarray:
    """Vectors to add as a contiguous float32 [len(ids), dim] matrix.

    Raises:
        ValueError: Shapes disagree.
    """
    vecs = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vecs.ndim != 2 or vecs.shape[0] != len(ids) or vecs.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [{len(ids)}, {dim}], got {vecs.shape}")
    return vecs


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` vectors: ~4 sqrt(n) (4,000 at 1M), at most n / 40 so k-means has data."""
    return max(1, min(int(4 * np.sqrt(n)), n // IVF_TRAIN_PER_LIST))


class FaissIndex:
    """FAISS index from string ids to one or more vectors each, with incremental updates.

    Each stored vector gets an int64 label; several vectors may share one string id (e.g. several photos of a
    product), and a search scores an id by its best vector. Structures:

    - ``flat``: exact ``IndexFlat`` (under ``IndexIDMap2``); removal is immediate.
    - ``ivf``: ``IndexIVFFlat`` with ~4 sqrt(n) lists, `nprobe` scanned per query, labels stored in the lists;
      removal is immediate. Trained on the vectors present when it is created, retrained when it has grown
      `IVF_REGROW`-fold. At 1M clustered 384-d vectors it meets p50 <= 10 ms and recall@10 >= 0.95 on 2 cores.
    - ``hnsw``: ``IndexHNSWFlat`` (under ``IndexIDMap2``). HNSW cannot delete, so `remove` marks labels dead
      (filtered at search time) and rebuilds once more than `REBUILD_TOMBSTONE_FRACTION` is dead. On tightly
      clustered data its recall is poor (0.80 at efSearch 128 on the 1M bench set) and 1M vectors take ~10 min to
      build on 2 cores, which is why ``auto`` uses IVF.

    ``kind="auto"`` is ``flat`` below `exact_below` vectors and ``ivf`` from there on (converted as it grows).

    Args:
        dim: Vector dimension.
        kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        metric: ``ip`` (inner product; normalise vectors for cosine) or ``l2`` (scores are negated squared
            distances, so higher is always better).
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW search breadth (recall against latency).
        nprobe: IVF lists scanned per query (recall against latency).
        exact_below: For ``auto``: the size below which search is exact.
        metadata: Free-form string metadata saved with the index (e.g. the encoder name).

    Raises:
        ValueError: An unknown kind or metric.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "auto",
        metric: str = "ip",
        hnsw_m: int = 32,
        ef_search: int = 64,
        nprobe: int = IVF_NPROBE,
        exact_below: int = EXACT_BELOW,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
        if metric not in ("ip", "l2"):
            raise ValueError(f"unknown metric {metric!r}; expected 'ip' or 'l2'")
        self.dim = int(dim)
        self.kind = kind
        self.metric = metric
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.exact_below = exact_below
        self.metadata: dict[str, str] = dict(metadata or {})
        self._labels: dict[str, list[int]] = {}  # string id -> its vectors' labels, in insertion order
        self._id_of: dict[int, str] = {}  # live label -> string id
        self._dead: set[int] = set()  # labels removed from an HNSW graph but still stored in it
        self._next_label = 0
        self._trained_on = 0  # vectors an IVF index was trained with
        self._most_per_id = 1  # most vectors one id has had (an upper bound: removals do not lower it)
        self._index: Any = self._new_index("flat" if kind in ("auto", "ivf") else kind, None)

    # -- structure --

    @property
    def structure(self) -> str:
        """What backs the index now: ``flat``, ``ivf`` or ``hnsw``."""
        if isinstance(self._index, faiss.IndexIVF):
            return "ivf"
        return "hnsw" if isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSW) else "flat"

    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def _new_index(self, structure: str, train: np.ndarray | None) -> Any:
        """An empty faiss index of this structure (IVF is trained on `train`)."""
        if structure == "ivf":
            assert train is not None and len(train), "an IVF index needs training vectors"
            nlist = ivf_lists(len(train))
            quantizer = faiss.IndexFlat(self.dim, self._faiss_metric)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, self._faiss_metric)
            rng = np.random.default_rng(0)
            sample = train
            if len(train) > nlist * IVF_TRAIN_PER_LIST:
                sample = train[np.sort(rng.choice(len(train), nlist * IVF_TRAIN_PER_LIST, replace=False))]
            start = time.perf_counter()
            ivf.train(np.ascontiguousarray(sample))
            log.info(
                "trained %d IVF lists on %d vectors in %.1f s",
                nlist,
                len(sample),
                time.perf_counter() - start,
            )
            # A hashtable from label to list position: reconstruct and remove by label.
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            ivf.nprobe = self.nprobe
            self._trained_on = len(train)
            return ivf
        if structure == "hnsw":
            inner: Any = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss_metric)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = self.ef_search
        else:
            inner = faiss.IndexFlat(self.dim, self._faiss_metric)
        return faiss.IndexIDMap2(inner)  # the faiss wrapper keeps `inner` alive

    def _wanted_structure(self, n: int) -> str:
        if self.kind == "auto":
            return "ivf" if n >= self.exact_below else "flat"
        return self.kind

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels [n] and vectors [n, dim] of every live vector."""
        labels = np.fromiter(self._id_of, dtype=np.int64, count=len(self._id_of))
        if self.structure == "ivf":
            vectors = self._index.reconstruct_batch(labels) if len(labels) else None
        else:
            stored = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            keep = np.fromiter(
                (lab not in self._dead for lab in stored.tolist()), dtype=bool, count=len(stored)
            )
            labels = stored[keep]
            vectors = self._index.index.reconstruct_n(0, self._index.ntotal)[keep] if len(stored) else None
        if vectors is None:
            return labels, np.zeros((0, self.dim), dtype=np.float32)
        return labels, np.ascontiguousarray(vectors, dtype=np.float32)

    def _rebuild(
        self, structure: str, labels: np.ndarray | None = None, vectors: np.ndarray | None = None
    ) -> None:
        """Re-create the faiss index from its live vectors plus `vectors` under `labels` (drops tombstones)."""
        start = time.perf_counter()
        old_labels, old_vectors = self._live()
        if labels is not None and vectors is not None:
            old_labels = np.concatenate([old_labels, labels])
            old_vectors = np.concatenate([old_vectors, vectors])
        self._index = self._new_index(structure, old_vectors)
        if len(old_labels):
            self._index.add_with_ids(old_vectors, old_labels)
        self._dead.clear()
        log.info(
            "rebuilt %s index of %d vectors in %.2f s",
            structure,
            self._index.ntotal,
            time.perf_counter() - start,
        )

    # -- contents --

    def __len__(self) -> int:
        """Number of distinct ids."""
        return len(self._labels)

    @property
    def ids(self) -> list[str]:
        """Distinct ids in insertion order."""
        return list(self._labels)

    @property
    def num_vectors(self) -> int:
        """Number of live vectors (an id may own several)."""
        return len(self._id_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._labels

    def vectors(self, id_: str) -> np.ndarray:
        """The stored vectors of an id, float32 [m, dim] (m = 0 for an unknown id)."""
        labels = self._labels.get(id_, [])
        out = np.zeros((len(labels), self.dim), dtype=np.float32)
        for row, label in enumerate(labels):
            out[row] = self._index.reconstruct(label)
        return out

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors; an id repeated (in `ids` or across calls) owns several vectors.

        Args:
            ids: One id per row of `vectors`.
            vectors: float array [n, dim] (normalise it first for cosine similarity).

        Raises:
            ValueError: Shapes disagree.
        """
        vecs = vector_rows(ids, vectors, self.dim)
        if not len(ids):
            return
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        total = self.num_vectors + len(ids)
        wanted = self._wanted_structure(total)
        regrow = wanted == "ivf" and total > IVF_REGROW * self._trained_on
        if wanted != self.structure or regrow:
            self._rebuild(wanted, labels, vecs)  # e.g. flat -> IVF as the catalog outgrows exact search
        else:
            self._index.add_with_ids(vecs, labels)
        self._next_label += len(ids)
        for label, id_ in zip(labels.tolist(), ids, strict=True):
            owned = self._labels.setdefault(str(id_), [])
            owned.append(label)
            self._id_of[label] = str(id_)
            self._most_per_id = max(self._most_per_id, len(owned))

    def remove(self, ids: Iterable[str]) -> int:
        """Remove every vector of these ids (unknown ids are ignored).

        Returns:
            The number of ids removed.
        """
        labels: list[int] = []
        removed = 0
        for id_ in ids:
            owned = self._labels.pop(id_, None)
            if owned is None:
                continue
            removed += 1
            labels.extend(owned)
            for label in owned:
                del self._id_of[label]
        if not labels:
            return removed
        if self.structure != "hnsw":
            self._index.remove_ids(np.array(labels, dtype=np.int64))
        else:
            self._dead.update(labels)
            if len(self._dead) > REBUILD_TOMBSTONE_FRACTION * self._index.ntotal:
                self._rebuild(self._wanted_structure(self.num_vectors))
        return removed

    # -- search --

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` ids scoring highest against `query`, best first.

        An id's score is the best inner product over its vectors (and, for a query of several rows, over the query
        rows too: several photos of one item search together).

        Args:
            query: float [dim], or [n, dim] for a multi-vector query.
            k: How many ids at most.
            allowed: If given, only these ids are candidates; `k` of them are returned whenever `k` exist.

        Returns:
            ``(id, score)`` pairs sorted by descending score (ties by id).

        Raises:
            ValueError: The query dimension is wrong.
        """
        q = query_matrix(query, self.dim)
        if k <= 0 or not self._id_of:
            return []
        with _single_thread():
            return self._search(q, k, allowed)

    def _search(self, q: np.ndarray, k: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        if allowed is None:
            return self._search_graph(q, k, None, len(self._labels))
        allowed_labels = [lab for id_ in allowed for lab in self._labels.get(id_, ())]
        n_allowed = sum(1 for id_ in allowed if id_ in self._labels)
        if not allowed_labels:
            return []
        label_array = np.array(allowed_labels, dtype=np.int64)
        if self.structure != "flat" and len(allowed_labels) <= EXACT_ALLOWED_MAX:
            return self._search_exact(q, k, label_array)
        hits = self._search_graph(q, k, label_array, n_allowed)  # flat: exact under a selector
        if len(hits) < min(k, n_allowed):  # a filtered approximate search can come up short; exact never does
            return self._search_exact(q, k, label_array)
        return hits

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Independent searches for each row of `queries` [n, dim] (one faiss call; no filters)."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape [n, {self.dim}], got {q.shape}")
        if k <= 0 or not self._id_of:
            return [[] for _ in range(q.shape[0])]
        fetch = self._fetch_size(k)
        scores, labels = self._index.search(q, fetch, params=self._params(None, fetch))
        return [self._collect(scores[i : i + 1], labels[i : i + 1], k) for i in range(q.shape[0])]

    def _fetch_size(self, k: int) -> int:
        return max(1, min(k * self._most_per_id, self._index.ntotal))

    def _params(self, allowed_labels: np.ndarray | None, fetch: int) -> Any:
        """Search parameters: a selector for allowed and live labels, and a wide enough HNSW beam."""
        sel: Any = None
        if allowed_labels is not None:
            sel = faiss.IDSelectorBatch(allowed_labels)
        if self._dead:
            dead = faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
            live = faiss.IDSelectorNot(dead)  # the faiss wrappers keep the selectors they wrap alive
            sel = live if sel is None else faiss.IDSelectorAnd(sel, live)
        kwargs: dict[str, Any] = {} if sel is None else {"sel": sel}
        if self.structure == "ivf":
            return faiss.SearchParametersIVF(nprobe=self.nprobe, **kwargs)  # type: ignore[call-arg]
        if self.structure == "hnsw":
            return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # missing from faiss' stubs
                efSearch=max(self.ef_search, fetch), **kwargs
            )
        return faiss.SearchParameters(**kwargs)

    def _search_graph(
        self, q: np.ndarray, k: int, allowed_labels: np.ndarray | None, n_ids: int
    ) -> list[tuple[str, float]]:
        fetch = self._fetch_size(k)
        while True:
            scores, labels = self._index.search(q, fetch, params=self._params(allowed_labels, fetch))
            hits = self._collect(scores, labels, k)
            if len(hits) >= min(k, n_ids) or fetch >= self._index.ntotal:
                return hits
            fetch = min(fetch * 2, self._index.ntotal)  # several vectors per id crowded the top: fetch more

    def _search_exact(self, q: np.ndarray, k: int, labels: np.ndarray) -> list[tuple[str, float]]:
        """Score a few labels exactly (their vectors are reconstructed from the index's storage)."""
        vectors = np.stack([self._index.reconstruct(int(lab)) for lab in labels])  # [m, dim]
        if self.metric == "ip":
            scores = q @ vectors.T  # [n, m]
        else:
            # Squared distances, as faiss reports them.
            scores = ((q[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
        return self._collect(scores, np.broadcast_to(labels, scores.shape), k)

    def _collect(self, scores: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Best score per id over all (query row, label) pairs; top `k` by score, ties by id."""
        best: dict[str, float] = {}
        sign = 1.0 if self.metric == "ip" else -1.0  # faiss returns L2 distances: flip so higher is better
        for score, label in zip(scores.ravel().tolist(), labels.ravel().tolist(), strict=True):
            id_ = self._id_of.get(label) if label >= 0 else None
            if id_ is None:
                continue
            s = score * sign
            if s > best.get(id_, -np.inf):
                best[id_] = s
        return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]

    # -- persistence --

    def save(self, path: Path) -> None:
        """Write the index to one ``.npz`` file atomically (temporary file, then `os.replace`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        config = {
            "format": _FORMAT,
            "dim": self.dim,
            "kind": self.kind,
            "metric": self.metric,
            "hnsw_m": self.hnsw_m,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "trained_on": self._trained_on,
            "exact_below": self.exact_below,
            "next_label": self._next_label,
            "metadata": self.metadata,
        }
        ids = [id_ for id_, labels in self._labels.items() for _ in labels]
        labels = [lab for owned in self._labels.values() for lab in owned]
        try:
            with tmp.open("wb") as fh:
                np.savez(
                    fh,
                    config=np.array(json.dumps(config)),
                    faiss=faiss.serialize_index(self._index),
                    ids=np.array(ids, dtype=str),
                    labels=np.array(labels, dtype=np.int64),
                    dead=np.array(sorted(self._dead), dtype=np.int64),
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("saved %s index of %d ids to %s", self.structure, len(self), path)

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        """Read an index written by `save`.

        Raises:
            ValueError: The file is not a valid index.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                config = json.loads(str(data["config"]))
                if config.get("format") != _FORMAT:
                    raise ValueError(f"unknown format {config.get('format')!r}")
                raw = data["faiss"]
                ids = [str(i) for i in data["ids"]]
                labels = data["labels"].tolist()
                dead = set(data["dead"].tolist())
            index_data = faiss.deserialize_index(raw)
        except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a faiss index file: {path}: {err}") from err
        index = cls(
            int(config["dim"]),
            kind=config["kind"],
            metric=config["metric"],
            hnsw_m=int(config["hnsw_m"]),
            ef_search=int(config["ef_search"]),
            nprobe=int(config["nprobe"]),
            exact_below=int(config["exact_below"]),
            metadata=config.get("metadata") or {},
        )
        index._index = index_data
        index._trained_on = int(config["trained_on"])
        index._next_label = int(config["next_label"])
        for id_, label in zip(ids, labels, strict=True):
            owned = index._labels.setdefault(id_, [])
            owned.append(int(label))
            index._id_of[int(label)] = id_
        index._most_per_id = max((len(v) for v in index._labels.values()), default=1)
        index._dead = dead
        return index


# --- the shared interface and the factory --------------------------------------------------------------------------


@runtime_checkable
class VectorIndex(Protocol):
    """String ids -> one or more vectors each; search scores an id by its best vector (see `FaissIndex`)."""

    dim: int
    metric: str
    metadata: dict[str, str]

    def __len__(self) -> int: ...

    def __contains__(self, id_: object) -> bool: ...

    @property
    def ids(self) -> list[str]: ...

    @property
    def num_vectors(self) -> int: ...

    def vectors(self, id_: str) -> np.ndarray: ...

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def remove(self, ids: Iterable[str]) -> int: ...

    def search(
        self, query: np.ndarray, k: int, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]: ...

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]: ...

    def save(self, path: Path) -> None: ...
