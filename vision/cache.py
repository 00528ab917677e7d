"""A small sqlite key→array store for embeddings and cached tower features.

sqlite in WAL mode gives atomic batches and lets any number of readers (threads or processes) run beside one writer.
Arrays keep their dtype and shape, so the same store holds float32 embeddings and float16 feature maps.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

_CHUNK = 500  # keys per SELECT ... IN (...): stays under sqlite's host-parameter limit


class EmbeddingCache:
    """Persistent ``key -> np.ndarray`` store (sqlite, WAL).

    Args:
        path: the database file (created with its parent folder if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dtype TEXT, shape TEXT, data BLOB)"
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored arrays for those ``keys`` that are present (misses are simply absent)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, np.ndarray] = {}
        conn = self._conn()
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, dtype, shape, data in conn.execute(
                f"SELECT key, dtype, shape, data FROM vectors WHERE key IN ({marks})", chunk
            ):
                dims = tuple(int(d) for d in shape.split(",") if d)
                out[key] = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(dims).copy()
        return out

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        """Store (or replace) all ``items`` in one transaction."""
        rows = [
            (key, np.asarray(v).dtype.str, ",".join(str(d) for d in np.asarray(v).shape), np.ascontiguousarray(v).tobytes())
            for key, v in items.items()
        ]
        with self._conn() as conn:  # one transaction: all or nothing
            conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
