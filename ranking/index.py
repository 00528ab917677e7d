"""Exact cosine-similarity vector index over L2-normalised vectors (inner product), in numpy.

Scores are ``vectors @ query`` (shape [n]); an optional id whitelist restricts the search to the rows that pass the
caller's filters. Exact search over a few thousand 384-d vectors takes well under a millisecond.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class VectorIndex:
    """Exact inner-product index mapping string ids to vectors.

    Args:
        dim: Vector dimension; None takes it from the first `add`.
        metadata: Free-form string metadata saved with the index (e.g. the encoder name).
    """

    def __init__(self, dim: int | None = None, metadata: dict[str, str] | None = None) -> None:
        self.dim = dim
        self.metadata: dict[str, str] = dict(metadata or {})
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._vectors = np.zeros((0, dim or 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Ids in insertion order."""
        return list(self._ids)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors under new ids.

        Args:
            ids: One unique id per row.
            vectors: float array [n, dim] (normalise it first for cosine similarity).

        Raises:
            ValueError: Shapes disagree or an id is already present.
        """
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(ids):
            raise ValueError(f"expected vectors of shape [{len(ids)}, dim], got {vecs.shape}")
        if self.dim is None:
            self.dim = int(vecs.shape[1])
        if self._vectors.shape[1] != self.dim:  # still empty: created before the dimension was known
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        if vecs.shape[1] != self.dim:
            raise ValueError(f"expected dimension {self.dim}, got {vecs.shape[1]}")
        for i, id_ in enumerate(ids):
            if id_ in self._pos:
                raise ValueError(f"duplicate id {id_!r}")
            self._pos[id_] = len(self._ids) + i
        self._ids.extend(ids)
        self._vectors = np.ascontiguousarray(np.concatenate([self._vectors, vecs]), dtype=np.float32)

    def vector(self, id_: str) -> np.ndarray | None:
        """The stored vector of an id, or None."""
        pos = self._pos.get(id_)
        return None if pos is None else self._vectors[pos]

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` ids with the highest inner product with `query`, best first.

        Args:
            query: float vector [dim].
            k: How many results at most.
            allowed: If given, only these ids are candidates (ids not in the index are ignored).

        Returns:
            ``(id, score)`` pairs sorted by descending score.
        """
        if k <= 0 or not self._ids:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"expected a query of dimension {self.dim}, got {q.shape[0]}")
        if allowed is None:
            rows = None
            scores = self._vectors @ q  # [n]
        else:
            rows = np.fromiter((self._pos[i] for i in allowed if i in self._pos), dtype=np.int64)
            if rows.size == 0:
                return []
            rows.sort()  # deterministic tie order regardless of set iteration order
            scores = self._vectors[rows] @ q  # [m]
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
        top = top[np.lexsort((top, -scores[top]))]  # by score, then by position for ties
        picked = top if rows is None else rows[top]
        return [(self._ids[int(p)], float(s)) for p, s in zip(picked, scores[top], strict=True)]

    def save(self, path: Path) -> None:
        """Write the index to an ``.npz`` file atomically (temporary file, then `os.replace`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        meta_keys = np.array(list(self.metadata.keys()), dtype=str)
        meta_values = np.array(list(self.metadata.values()), dtype=str)
        try:
            with tmp.open("wb") as fh:
                np.savez(
                    fh,
                    ids=np.array(self._ids, dtype=str),
                    vectors=self._vectors,
                    meta_keys=meta_keys,
                    meta_values=meta_values,
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("saved index of %d vectors to %s", len(self), path)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """Read an index written by `save`.

        Raises:
            ValueError: The file is not a valid index.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays: dict[str, Any] = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"not a vector index file: {path}: {err}") from err
        if "ids" not in arrays or "vectors" not in arrays:
            raise ValueError(f"not a vector index file: {path}")
        vectors = arrays["vectors"].astype(np.float32)
        metadata = {
            str(k): str(v)
            for k, v in zip(arrays.get("meta_keys", []), arrays.get("meta_values", []), strict=False)
        }
        index = cls(dim=int(vectors.shape[1]), metadata=metadata)
        index.add([str(i) for i in arrays["ids"]], vectors)
        return index
