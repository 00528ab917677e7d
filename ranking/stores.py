"""The vector store a URL names: FAISS files (default), Qdrant local or a Qdrant server (`ranking.qdrant_index`)."""

from __future__ import annotations

from pathlib import Path

from ranking.index import INDEX_KINDS, FaissIndex, VectorIndex

VECTOR_URL_FORMS = (
    "faiss (or none)",
    "qdrant-local:[PATH] (default <data_dir>/qdrant; a relative PATH is under the data dir)",
    "qdrant::memory:",
    "http(s)://HOST:PORT (a Qdrant server)",
)


def parse_vector_url(url: str | None, data_dir: Path | None = None) -> tuple[str, str | None]:
    """Which vector store a URL names: ``(backend, where)``.

    ``backend`` is ``faiss`` (where None), ``qdrant-local`` (where: an absolute folder), ``qdrant-memory`` (None)
    or ``qdrant-server`` (where: the URL without a trailing slash).

    Raises:
        ValueError: An unknown scheme (the message lists the valid forms), or ``qdrant-local:`` with neither a
            path nor a data dir.
    """
    text = (url or "").strip()
    if text in ("", "faiss", "faiss:"):
        return "faiss", None
    if text == "qdrant::memory:":
        return "qdrant-memory", None
    if text.startswith("qdrant-local:"):
        raw = text[len("qdrant-local:") :]
        if raw == ":memory:":
            return "qdrant-memory", None
        folder = Path(raw).expanduser() if raw else None
        if folder is None or not folder.is_absolute():
            if data_dir is None:
                raise ValueError(f"{text!r} needs an absolute path, or a data dir to put the store under")
            folder = Path(data_dir) / (folder if folder is not None else "qdrant")
        return "qdrant-local", str(folder.resolve())
    if text.startswith(("http://", "https://")) and len(text.split("://", 1)[1].strip("/")) > 0:
        return "qdrant-server", text.rstrip("/")
    raise ValueError(f"unknown vector store URL {url!r}; expected one of: {'; '.join(VECTOR_URL_FORMS)}")


def create_vector_index(
    url: str | None,
    dim: int,
    *,
    name: str,
    kind: str = "auto",
    metric: str = "ip",
    metadata: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> VectorIndex:
    """A new, empty vector index in the store `url` names (see `parse_vector_url`).

    Args:
        url: None or ``faiss``: a `FaissIndex`; ``qdrant-local:[PATH]``, ``qdrant::memory:`` or
            ``http(s)://host:6333``: a `ranking.qdrant_index.QdrantIndex` (an existing collection `name` is
            emptied, as a new FAISS index starts empty).
        dim: Vector dimension.
        name: Collection name (Qdrant; FAISS ignores it).
        kind: `FaissIndex` kind; for a Qdrant server ``flat`` asks for exact search, the others mean HNSW (local
            Qdrant is always exact).
        metric: ``ip`` or ``l2``.
        metadata: Free-form string metadata saved with the index.
        data_dir: Where ``qdrant-local:`` keeps its store by default.

    Raises:
        ValueError: An unknown URL scheme, kind or metric.
        ImportError: A Qdrant URL without qdrant-client installed.
    """
    backend, where = parse_vector_url(url, data_dir)
    if backend == "faiss":
        return FaissIndex(dim, kind=kind, metric=metric, metadata=metadata)
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    from ranking.qdrant_index import QdrantIndex  # qdrant-client is optional

    return QdrantIndex(
        dim,
        collection=name,
        metric=metric,
        path=where if backend == "qdrant-local" else None,
        url=where if backend == "qdrant-server" else None,
        exact=backend == "qdrant-server" and kind == "flat",
        metadata=metadata,
    )


def load_vector_index(path: Path, url: str | None = None, *, data_dir: Path | None = None) -> VectorIndex:
    """Reopen an index saved at `path`, checking it lives in the store `url` names.

    A FAISS index is its ``.npz`` file; a Qdrant index is a JSON manifest pointing at its collection.

    Raises:
        ValueError: The file is unreadable, or holds an index of another store than `url`.
    """
    backend, where = parse_vector_url(url, data_dir)
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
    except OSError as err:
        raise ValueError(f"cannot read vector index {path}: {err}") from err
    if head == b"PK":  # a zip: numpy's .npz
        if backend != "faiss":
            raise ValueError(f"{path} holds a FAISS index, not one in {url}")
        return FaissIndex.load(path)
    if backend == "faiss":
        raise ValueError(f"{path} is not a FAISS index (a Qdrant manifest?)")
    from ranking.qdrant_index import QdrantIndex, read_manifest

    manifest = read_manifest(path)
    saved = manifest.get("url")
    expected = (
        "qdrant::memory:"
        if backend == "qdrant-memory"
        else (f"qdrant-local:{where}" if backend == "qdrant-local" else where)
    )
    if saved != expected:
        raise ValueError(f"{path} describes an index in {saved}, not {expected}")
    return QdrantIndex.load(path)
