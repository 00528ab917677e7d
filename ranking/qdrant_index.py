"""Vector index on Qdrant with `FaissIndex`'s interface and semantics (a `ranking.index.VectorIndex`).

Modes (one collection per index, its name chosen by the caller):

- local on disk (``QdrantIndex(dim, collection=..., path=...)``): qdrant-client's embedded store, exact brute force
  in numpy, one process at a time (the folder is locked). For tests and small catalogs on one machine: qdrant-client
  itself advises against local mode beyond ~20k points.
- in memory (neither `path` nor `url`): the same engine, gone when the process ends.
- server (``url="http://host:6333"``): a Qdrant server, HNSW with a keyword payload index on the id field. This is
  the mode several machines share.

Each stored vector is one point: its id is ``uuid5(id, vector number)`` (deterministic, so the same product and
view always lands on the same point) and its payload holds the string id (``id``), the vector's number within that
id (``n``) and an insertion sequence number (``seq``, which orders `ids` as FAISS does). ``metric="ip"`` is Qdrant's
``Dot`` distance (cosine on normalised vectors; ``Cosine`` is avoided because Qdrant would normalise the stored
vectors), ``metric="l2"`` its ``Euclid`` distance reported as FAISS does, as a negated squared distance.

Data is persisted by Qdrant itself; `QdrantIndex.save` writes a small JSON manifest (where the data lives, the
collection, dim, metric, metadata) and `QdrantIndex.load` reopens it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from ranking.index import query_matrix, vector_rows

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "shoptalk-qdrant-index/1"
ID_FIELD = "id"  # payload field holding the string id (several points share one)
_POINT_NAMESPACE = uuid.UUID("5f1d7c9e-3b1a-4c52-9a0e-6a2f7d3c8b41")
_UPSERT_BATCH = 256
_SCROLL_PAGE = 1_000
_DELETE_BATCH = 1_000


_clients: dict[str, QdrantClient] = {}  # local folders and servers, kept open
# In-memory stores live as long as an index uses them (a manifest can reopen one in the same process until then).
_memory_clients: weakref.WeakValueDictionary[str, QdrantClient] = weakref.WeakValueDictionary()
_clients_lock = threading.Lock()


def point_id(id_: str, n: int) -> str:
    """The Qdrant point id of vector number `n` of string id `id_` (a uuid5, stable across runs and machines)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{id_}\x1f{n}"))


def _shared_client(key: str, make: Any) -> QdrantClient:
    """One client per local folder / server / in-memory store in this process.

    Local mode locks its folder, so the text and image indexes (and an index reloaded from its manifest) must share
    the client that holds the lock.
    """
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = make()
            _clients[key] = client
        return client


@atexit.register
def close_clients() -> None:
    """Close every local-folder and server client this process opened (releases local-mode folder locks).

    Runs at exit too: a local client left to its finaliser fails noisily while the interpreter shuts down.
    """
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class QdrantIndex:
    """Qdrant index from string ids to one or more vectors each, with incremental updates.

    Same public interface and results as `ranking.index.FaissIndex` (flat): a search scores an id by its best vector
    (and a query of several rows by its best row), returns ``(id, score)`` best first with ties broken by id, and an
    `allowed` set never lets another id through while returning `k` hits whenever `k` allowed ids exist.

    Limits:

    - Local mode (`path`, or in memory) is for tests and small data on one machine: exact numpy brute force, one
      process per folder (the folder is locked), `allowed` applied to unfiltered results (qdrant-client's local
      payload filters run in Python, point by point). Several machines share a Qdrant *server* (`url`).
    - ``ids``, ``len``, ``in`` and ``num_vectors`` come from an in-process mirror of what this object added and
      removed (and what the collection held when it was opened, see `refresh`); searches, `vectors` and server-mode
      removals always go to Qdrant. When other machines write the same server collection, call `refresh` to see
      their ids.
    - Server mode searches HNSW (approximate) unless ``exact=True``; a filtered search that comes back short is
      repeated exactly, as `FaissIndex` does.

    Args:
        dim: Vector dimension.
        collection: Collection name.
        metric: ``ip`` (inner product: Qdrant ``Dot``) or ``l2`` (scores are negated squared distances).
        path: Folder of a local on-disk store (local mode).
        url: URL of a Qdrant server, e.g. ``http://localhost:6333`` (server mode).
        api_key: Server API key (default: the ``QDRANT_API_KEY`` environment variable, if set).
        exact: Server mode: search exhaustively instead of HNSW.
        metadata: Free-form string metadata saved in the manifest (e.g. the encoder name).
        recreate: Start from an empty collection (drop an existing one), as a new `FaissIndex` starts empty;
            False opens the collection as it is (its dim and metric must match).

    Raises:
        ValueError: An unknown metric, both `path` and `url`, or an existing collection that does not match.
    """

    def __init__(
        self,
        dim: int,
        *,
        collection: str,
        metric: str = "ip",
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        exact: bool = False,
        metadata: dict[str, str] | None = None,
        recreate: bool = True,
        _memory_token: str | None = None,
        _must_exist: bool = False,
    ) -> None:
        if metric not in ("ip", "l2"):
            raise ValueError(f"unknown metric {metric!r}; expected 'ip' or 'l2'")
        if path is not None and url is not None:
            raise ValueError("give a local path or a server url, not both")
        if not collection:
            raise ValueError("a Qdrant index needs a collection name")
        self.dim = int(dim)
        self.metric = metric
        self.collection = collection
        self.exact = exact
        self.metadata: dict[str, str] = dict(metadata or {})
        self.path = Path(path).resolve() if path is not None and str(path) != ":memory:" else None
        self.server_url = url.rstrip("/") if url is not None else None
        self._memory_token: str | None = None
        if self.server_url is not None:
            key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY")
            server = self.server_url
            self.client = _shared_client(f"url:{server}", lambda: QdrantClient(url=server, api_key=key))
        elif self.path is not None:
            folder = self.path
            folder.mkdir(parents=True, exist_ok=True)
            self.client = _shared_client(f"path:{folder}", lambda: QdrantClient(path=str(folder)))
        else:
            token = self._memory_token = _memory_token or uuid.uuid4().hex
            with _clients_lock:
                client = _memory_clients.get(token)
                if client is None:
                    client = _memory_clients[token] = QdrantClient(location=":memory:")
            self.client = client
        self._count: dict[str, int] = {}  # string id -> its number of vectors, in insertion order
        self._most_per_id = 1  # most vectors one id has had (an upper bound: removals do not lower it)
        self._next_seq = 0
        self._open(recreate, _must_exist)

    # -- setup --

    @property
    def mode(self) -> str:
        """``server``, ``local`` or ``memory``."""
        return "server" if self.server_url is not None else "local" if self.path is not None else "memory"

    @property
    def url(self) -> str:
        """Where the data lives, as `ranking.stores.create_vector_index` spells it."""
        if self.server_url is not None:
            return self.server_url
        return f"qdrant-local:{self.path}" if self.path is not None else "qdrant::memory:"

    @property
    def _distance(self) -> models.Distance:
        return models.Distance.DOT if self.metric == "ip" else models.Distance.EUCLID

    def _open(self, recreate: bool, must_exist: bool) -> None:
        exists = self.client.collection_exists(self.collection)
        if must_exist and not exists:
            raise ValueError(f"collection {self.collection!r} does not exist at {self.url}")
        if exists and recreate:
            self.client.delete_collection(self.collection)
            exists = False
        if not exists:
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=self.dim, distance=self._distance),
            )
            if self.mode == "server":  # local mode has no payload indexes (it warns that they do nothing)
                self.client.create_payload_index(
                    self.collection, ID_FIELD, field_schema=models.PayloadSchemaType.KEYWORD
                )
            return
        params = self.client.get_collection(self.collection).config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise ValueError(
                f"collection {self.collection!r} uses named vectors; expected one unnamed vector"
            )
        if params.size != self.dim or params.distance != self._distance:
            raise ValueError(
                f"collection {self.collection!r} holds {params.size}-d {params.distance} vectors; "
                f"expected {self.dim}-d {self._distance}"
            )
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the id mirror (`ids`, `len`, `in`) from the collection, e.g. after other machines wrote to it."""
        points: list[tuple[int, str, int]] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=[ID_FIELD, "n", "seq"],
                with_vectors=False,
            )
            for rec in records:
                payload = rec.payload or {}
                points.append((int(payload.get("seq", 0)), str(payload[ID_FIELD]), int(payload.get("n", 0))))
            if offset is None:
                break
        points.sort()
        count: dict[str, int] = {}
        for _, id_, n in points:
            count[id_] = max(count.get(id_, 0), n + 1)
        self._count = count
        self._most_per_id = max(count.values(), default=1)
        self._next_seq = points[-1][0] + 1 if points else 0

    def close(self) -> None:
        """Close this index's client (releases a local folder's lock; an in-memory store is dropped).

        The client is shared with every index of the same folder or server in this process: they are unusable
        afterwards.
        """
        with _clients_lock:
            for key, client in list(_clients.items()):
                if client is self.client:
                    del _clients[key]
            if self._memory_token is not None:
                _memory_clients.pop(self._memory_token, None)
        self.client.close()

    def __repr__(self) -> str:
        return (
            f"QdrantIndex(dim={self.dim}, collection={self.collection!r}, metric={self.metric!r}, url={self.url!r}, "
            f"ids={len(self)})"
        )

    # -- contents --

    def __len__(self) -> int:
        """Number of distinct ids."""
        return len(self._count)

    @property
    def ids(self) -> list[str]:
        """Distinct ids in insertion order."""
        return list(self._count)

    @property
    def num_vectors(self) -> int:
        """Number of live vectors (an id may own several)."""
        return sum(self._count.values())

    def __contains__(self, id_: object) -> bool:
        return id_ in self._count

    def _id_filter(self, ids: Iterable[str]) -> models.Filter:
        return models.Filter(must=[models.FieldCondition(key=ID_FIELD, match=models.MatchAny(any=list(ids)))])

    def vectors(self, id_: str) -> np.ndarray:
        """The stored vectors of an id, float32 [m, dim] (m = 0 for an unknown id), in the order they were added."""
        rows: list[tuple[int, Any]] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=self._id_filter([id_]),
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=["n"],
                with_vectors=True,
            )
            rows.extend((int((rec.payload or {}).get("n", 0)), rec.vector) for rec in records)
            if offset is None:
                break
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        for row, (_, vector) in enumerate(sorted(rows, key=lambda item: item[0])):
            out[row] = np.asarray(vector, dtype=np.float32)
        return out

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors; an id repeated (in `ids` or across calls) owns several vectors (as `FaissIndex.add`)."""
        vecs = vector_rows(ids, vectors, self.dim)
        if not len(ids):
            return
        point_ids: list[str] = []
        payloads: list[dict[str, Any]] = []
        count = dict(self._count)
        for id_ in map(str, ids):
            n = count.get(id_, 0)
            count[id_] = n + 1
            point_ids.append(point_id(id_, n))
            payloads.append({ID_FIELD: id_, "n": n, "seq": self._next_seq + len(payloads)})
        for start in range(0, len(point_ids), _UPSERT_BATCH):
            stop = start + _UPSERT_BATCH
            self.client.upsert(
                self.collection,
                points=models.Batch(
                    ids=list(point_ids[start:stop]),
                    vectors=vecs[start:stop].tolist(),
                    payloads=payloads[start:stop],
                ),
                wait=True,
            )
        self._count = count
        self._next_seq += len(point_ids)
        self._most_per_id = max(self._most_per_id, max(count.values()))

    def remove(self, ids: Iterable[str]) -> int:
        """Remove every vector of these ids (unknown ids are ignored).

        Returns:
            The number of ids removed (ids this index knew).
        """
        wanted = list(dict.fromkeys(str(i) for i in ids))
        known = [i for i in wanted if i in self._count]
        if self.mode == "server":  # by payload: also catches vectors other machines added
            for start in range(0, len(wanted), _DELETE_BATCH):
                self.client.delete(
                    self.collection,
                    points_selector=models.FilterSelector(
                        filter=self._id_filter(wanted[start : start + _DELETE_BATCH])
                    ),
                    wait=True,
                )
        else:  # one process owns a local store: the mirror is complete, and deleting by point id avoids a scan
            points: list[models.ExtendedPointId] = [
                point_id(i, n) for i in known for n in range(self._count[i])
            ]
            for start in range(0, len(points), _DELETE_BATCH):
                self.client.delete(
                    self.collection,
                    points_selector=models.PointIdsList(points=points[start : start + _DELETE_BATCH]),
                    wait=True,
                )
        for i in known:
            del self._count[i]
        return len(known)

    # -- search --

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` ids scoring highest against `query`, best first: the contract of `FaissIndex.search`."""
        q = query_matrix(query, self.dim)
        if k <= 0 or (allowed is not None and not allowed):
            return []
        query_filter: models.Filter | None = None
        post: set[str] | None = None
        ratio = 1.0
        if allowed is not None:
            if self.mode == "server":  # a keyword payload index serves the filter
                query_filter = self._id_filter(sorted(allowed))
            else:
                # Local mode evaluates a payload filter in Python point by point (~200 ms for 1,000 allowed ids over
                # 2,000 points, against < 1 ms here): filter unfiltered results instead, fetching more until k are
                # found. One process owns a local store, so the mirror knows every id.
                post = {i for i in allowed if i in self._count}
                if not post:
                    return []
                ratio = len(self._count) / len(post)  # expected over-fetch for the unfiltered candidates
        best: dict[str, float] = {}
        for row in q:
            for id_, score in self._search_row(row, k, query_filter, post, ratio, self.exact):
                if score > best.get(id_, -np.inf):
                    best[id_] = score
        hits = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
        if len(hits) < k and self.mode == "server" and not self.exact and allowed is not None:
            # A filtered HNSW search can come up short; an exhaustive one never does.
            best = {}
            for row in q:
                for id_, score in self._search_row(row, k, query_filter, None, 1.0, True):
                    if score > best.get(id_, -np.inf):
                        best[id_] = score
            hits = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
        return hits

    def search_batch(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Independent searches for each row of `queries` [n, dim] (no filters)."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape [n, {self.dim}], got {q.shape}")
        return [self.search(row, k) for row in q]

    def _score(self, raw: float) -> float:
        """Qdrant's score as FAISS reports it: the inner product, or the negated squared L2 distance."""
        return float(raw) if self.metric == "ip" else -(float(raw) ** 2)

    def _search_row(
        self,
        row: np.ndarray,
        k: int,
        query_filter: models.Filter | None,
        post: set[str] | None,
        ratio: float,
        exact: bool,
    ) -> list[tuple[str, float]]:
        """Top `k` ids for one query vector, exact on ties.

        Points are fetched until every point that could still equal the k-th id's score has been seen (several
        vectors per id, and a post-filter, need more than k points).
        """
        limit = int(min(max(k * self._most_per_id * ratio, 1), 1 << 30)) + 1
        params = models.SearchParams(exact=True) if exact else None
        vector = row.tolist()
        while True:
            points = self.client.query_points(
                self.collection,
                query=vector,
                query_filter=query_filter,
                limit=limit,
                with_payload=[ID_FIELD],
                with_vectors=False,
                search_params=params,
            ).points
            best: dict[str, float] = {}
            for point in points:
                id_ = str((point.payload or {}).get(ID_FIELD))
                if post is not None and id_ not in post:
                    continue
                score = self._score(point.score)
                if score > best.get(id_, -np.inf):
                    best[id_] = score
            ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
            if len(points) < limit:  # every matching point was returned
                return ranked[:k]
            if len(ranked) >= k and self._score(points[-1].score) < ranked[k - 1][1]:
                return ranked[:k]  # nothing unseen can reach the k-th score, not even as a tie
            limit *= 2

    # -- persistence --

    def manifest(self) -> dict[str, Any]:
        """What `save` writes: where the data lives and how to read it (no credentials)."""
        return {
            "format": MANIFEST_FORMAT,
            "mode": self.mode,
            "url": self.url,
            "path": str(self.path) if self.path is not None else None,
            "server_url": self.server_url,
            "memory_token": self._memory_token,
            "collection": self.collection,
            "dim": self.dim,
            "metric": self.metric,
            "exact": self.exact,
            "metadata": self.metadata,
        }

    def save(self, path: Path) -> None:
        """Write the manifest to `path` atomically (JSON, whatever the file's suffix); Qdrant holds the vectors."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.manifest(), indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("saved manifest of Qdrant collection %s (%d ids) to %s", self.collection, len(self), path)

    @classmethod
    def load(cls, path: Path) -> QdrantIndex:
        """Reopen the index a manifest written by `save` describes.

        Raises:
            ValueError: The file is not a manifest, or its collection is gone (an in-memory store does not outlive
                its process).
        """
        config = read_manifest(Path(path))
        try:
            mode = config["mode"]
            kwargs: dict[str, Any] = {}
            if mode == "server":
                kwargs["url"] = str(config["server_url"])
            elif mode == "local":
                kwargs["path"] = str(config["path"])
            elif mode == "memory":
                token = str(config["memory_token"])
                if token not in _memory_clients:
                    raise ValueError(
                        "its in-memory Qdrant store is gone (it lives only as long as its process)"
                    )
                kwargs["_memory_token"] = token
            else:
                raise ValueError(f"unknown mode {mode!r}")
            index = cls(
                int(config["dim"]),
                collection=str(config["collection"]),
                metric=str(config["metric"]),
                exact=bool(config.get("exact", False)),
                metadata=config.get("metadata") or {},
                recreate=False,
                _must_exist=True,
                **kwargs,
            )
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"cannot reopen the Qdrant index of {path}: {err}") from err
        return index


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest `QdrantIndex.save` wrote at `path`.

    Raises:
        ValueError: Not a manifest.
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not a Qdrant index manifest: {path}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a Qdrant index manifest: {path}")
    return config
