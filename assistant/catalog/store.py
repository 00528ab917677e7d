"""A persistent product catalog in SQLite, with content-addressed product images.

The store is the catalog's source of truth once a merchant has ingested one (`assistant.catalog.ingest`); search and
indexing work on an in-memory snapshot of it (`CatalogStore.load_catalog`). Layout under the data dir::

    catalog/catalog.sqlite       products, images, product_images, meta (WAL mode)
    catalog/images/<sha256><ext> image files, named by content, so a merchant's files may move or be renamed

Every product row keeps the canonical JSON record (`Product.to_dict` with image names rewritten to the
content-addressed names) and its SHA-256, so re-ingesting the same data writes nothing. A parent whose price was
derived from its variants is stored without a price and priced again in every snapshot
(`assistant.catalog.model.fill_missing_prices`), so a variant's price change reaches its parent.

Each `upsert` or `delete` is one transaction: a batch that fails part-way leaves the store as it was. Image files
are copied before the commit; a failed batch can leave unreferenced files behind, which `prune_images` removes.

Errors::

    ValueError
     └── CatalogError   a batch repeats an id, or an image file cannot be read (the batch is rolled back)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assistant.catalog.model import Catalog, CatalogError, Product, fill_missing_prices

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STORE_DIRNAME = "catalog"
DB_NAME = "catalog.sqlite"
IMAGES_DIRNAME = "images"
_COPY_CHUNK = 1 << 20  # 1 MiB
_SQL_VARS = 500  # ids per IN (...) query, well under SQLite's 32766 host-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    parent_id TEXT,
    type TEXT NOT NULL,
    json TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS products_parent ON products(parent_id);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    ext TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS product_images (
    product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images(sha256),
    PRIMARY KEY (product_id, position)
);
CREATE INDEX IF NOT EXISTS product_images_sha ON product_images(sha256);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class UpsertStats:
    """What one `CatalogStore.upsert` changed.

    Attributes:
        added: Products that were not in the store.
        updated: Products whose content (record or images) changed.
        unchanged: Products identical to the stored ones (not written).
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        """Products written (added + updated)."""
        return self.added + self.updated

    def to_dict(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return asdict(self)


def store_dir(data_dir: Path) -> Path:
    """The folder holding the store of a data dir (``<data_dir>/catalog``)."""
    return Path(data_dir) / STORE_DIRNAME


def store_exists(data_dir: Path) -> bool:
    """Whether an ingested catalog store exists in this data dir."""
    return (store_dir(data_dir) / DB_NAME).is_file()


def default_store(data_dir: Path) -> CatalogStore:
    """Open (creating if needed) the data dir's store: ``catalog/catalog.sqlite`` with ``catalog/images/``."""
    root = store_dir(data_dir)
    return CatalogStore(root / DB_NAME, root / IMAGES_DIRNAME)


def canonical_json(record: dict[str, Any]) -> str:
    """The canonical text of a record: sorted keys, no whitespace, UTF-8 kept (what content hashes cover)."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_content_name(name: str) -> bool:
    """Whether a file name looks like ``<sha256 hex><ext>`` (leaves temporary and foreign files alone)."""
    stem = name.partition(".")[0]
    return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)


def _chunks(items: list[str], size: int = _SQL_VARS) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CatalogStore:
    """A product catalog persisted in SQLite; safe to share between threads (one connection behind a lock).

    Args:
        db_path: The SQLite file (created with its folder if missing).
        image_dir: Folder for the content-addressed image copies (created if missing).
    """

    def __init__(self, db_path: Path, image_dir: Path) -> None:
        self.db_path = Path(db_path)
        self.image_dir = Path(image_dir)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Autocommit mode (isolation_level=None): transactions are explicit BEGIN/COMMIT in `_transaction`.
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes except power loss
        with self._lock:
            self._conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); runs in its own transaction
        with self._transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            cur.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '0')")

    # --- plumbing -------------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction under the lock; rolled back on any exception (which propagates)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _bump_version(self, cur: sqlite3.Cursor) -> None:
        cur.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'version'")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- images ---------------------------------------------------------------------------------------------------

    def image_name(self, sha256: str, ext: str) -> str:
        """File name of a stored image, relative to `image_dir`."""
        return f"{sha256}{ext}"

    def _import_image(self, path: Path, cache: dict[Path, tuple[str, str, int]]) -> tuple[str, str, int]:
        """Copy one image into the store (if not there yet); returns (sha256, ext, size). Cached per batch."""
        key = Path(path).resolve()
        if key in cache:
            return cache[key]
        digest = hashlib.sha256()
        ext = key.suffix.lower()
        fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=self.image_dir)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, key.open("rb") as src:
                while chunk := src.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            sha = digest.hexdigest()
            final = self.image_dir / self.image_name(sha, ext)
            if final.exists():
                os.unlink(tmp_name)
            else:
                os.replace(tmp_name, final)  # atomic: readers never see a half-written image
        except OSError as err:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise CatalogError(f"images: cannot read {path}: {err}") from err
        cache[key] = (sha, ext, size)
        return cache[key]

    def prune_images(self) -> int:
        """Delete image rows and files that no product references; returns how many files were removed."""
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM images WHERE sha256 NOT IN (SELECT DISTINCT sha256 FROM product_images)"
            )
            keep = {self.image_name(sha, ext) for sha, ext in cur.execute("SELECT sha256, ext FROM images")}
            removed = 0
            for path in self.image_dir.iterdir():
                if _is_content_name(path.name) and path.name not in keep and path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("pruned %d unreferenced images from %s", removed, self.image_dir)
        return removed

    # --- writes ---------------------------------------------------------------------------------------------------

    def upsert(
        self,
        products: Iterable[Product],
        images: dict[str, list[Path]] | None = None,
        *,
        unpriced: Collection[str] = (),
    ) -> UpsertStats:
        """Add or update products in one transaction; rows whose content is unchanged are not written.

        Args:
            products: The products; consumed inside the transaction, so an exception raised while iterating
                rolls the whole batch back.
            images: Product id to local image files to copy in (in order); they replace the product's `images`.
                Products not in the mapping keep their `images` as stored names (e.g. from `export_jsonl`).
            unpriced: Ids whose price was derived from their variants/children: stored without a price and
                priced again from the current variants in every snapshot.

        Returns:
            How many products were added, updated and unchanged.

        Raises:
            CatalogError: An id repeats within the batch, or an image cannot be read (nothing is written).
        """
        images = images or {}
        unpriced = set(unpriced)
        added = updated = unchanged = 0
        copied: dict[Path, tuple[str, str, int]] = {}
        seen: set[str] = set()
        now = time.time()
        with self._transaction() as cur:
            for product in products:
                if product.id in seen:
                    raise CatalogError(f"id: duplicate product id {product.id!r} in one batch")
                seen.add(product.id)
                record = product.to_dict()
                links: list[tuple[str, str, int]] = []
                if product.id in images:
                    links = [self._import_image(p, copied) for p in images[product.id]]
                    record["images"] = [self.image_name(sha, ext) for sha, ext, _ in links]
                else:
                    links = self._known_images(cur, record["images"])
                if product.id in unpriced:
                    record["price"] = None
                text = canonical_json(record)
                digest = _content_hash(text)
                row = cur.execute("SELECT content_hash FROM products WHERE id = ?", (product.id,)).fetchone()
                if row is not None and row[0] == digest:
                    unchanged += 1
                    continue
                if row is None:
                    added += 1
                else:
                    updated += 1
                self._write_product(cur, product, text, digest, links, now)
            if added or updated:
                self._bump_version(cur)
        stats = UpsertStats(added=added, updated=updated, unchanged=unchanged)
        if stats.changed:
            log.info("catalog upsert: %d added, %d updated, %d unchanged", added, updated, unchanged)
        return stats

    def _known_images(self, cur: sqlite3.Cursor, names: list[str]) -> list[tuple[str, str, int]]:
        """Image links for names that are already content-addressed files of this store."""
        links = []
        for name in names:
            sha, dot, ext = name.partition(".")
            row = cur.execute("SELECT sha256, ext, bytes FROM images WHERE sha256 = ?", (sha,)).fetchone()
            if row is not None and row[1] == (dot + ext):
                links.append((row[0], row[1], row[2]))
        return links

    def _write_product(
        self,
        cur: sqlite3.Cursor,
        product: Product,
        text: str,
        digest: str,
        links: list[tuple[str, str, int]],
        now: float,
    ) -> None:
        cur.execute(
            "INSERT INTO products(id, parent_id, type, json, content_hash, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET parent_id = excluded.parent_id, type = excluded.type, "
            "json = excluded.json, content_hash = excluded.content_hash, updated_at = excluded.updated_at",
            (product.id, product.parent_id, product.type, text, digest, now),
        )
        cur.execute("DELETE FROM product_images WHERE product_id = ?", (product.id,))
        for position, (sha, ext, size) in enumerate(links):
            cur.execute("INSERT OR IGNORE INTO images(sha256, ext, bytes) VALUES (?, ?, ?)", (sha, ext, size))
            cur.execute(
                "INSERT INTO product_images(product_id, position, sha256) VALUES (?, ?, ?)",
                (product.id, position, sha),
            )

    def delete(self, ids: Iterable[str], *, cascade_variants: bool = True) -> int:
        """Delete products (in one transaction); image files are kept until `prune_images`.

        Args:
            ids: Product ids; unknown ids are ignored.
            cascade_variants: Also delete the variants of deleted parents (else they become standalone).

        Returns:
            How many products were deleted (variants included).
        """
        targets = list(dict.fromkeys(ids))
        if not targets:
            return 0
        deleted = 0
        with self._transaction() as cur:
            for chunk in _chunks(targets):
                marks = ",".join("?" * len(chunk))
                if cascade_variants:
                    cur.execute(f"DELETE FROM products WHERE parent_id IN ({marks})", chunk)
                    deleted += cur.rowcount
                cur.execute(f"DELETE FROM products WHERE id IN ({marks})", chunk)
                deleted += cur.rowcount
            if deleted:
                self._bump_version(cur)
        if deleted:
            log.info("catalog delete: %d products", deleted)
        return deleted

    # --- reads ----------------------------------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def count(self) -> int:
        """Number of stored products (variants included)."""
        return int(self._read("SELECT COUNT(*) FROM products")[0][0])

    def version(self) -> int:
        """Change counter: grows by one with every upsert or delete that changed something."""
        return int(self._read("SELECT value FROM meta WHERE key = 'version'")[0][0])

    def __contains__(self, id: object) -> bool:
        return bool(self._read("SELECT 1 FROM products WHERE id = ?", (id,)))

    def ids(self) -> set[str]:
        """Ids of all stored products."""
        return {row[0] for row in self._read("SELECT id FROM products")}

    def content_hashes(self) -> dict[str, str]:
        """Product id to the content hash of its stored record."""
        return dict(self._read("SELECT id, content_hash FROM products"))  # type: ignore[arg-type]

    def records(self) -> list[dict[str, Any]]:
        """The stored records in insertion order (derived prices are ``None``)."""
        return [json.loads(row[0]) for row in self._read("SELECT json FROM products ORDER BY rowid")]

    def get(self, id: str) -> Product | None:
        """The stored product, or None; a derived price is computed from the current variants."""
        rows = self._read("SELECT json FROM products WHERE id = ?", (id,))
        if not rows:
            return None
        record = json.loads(rows[0][0])
        if record.get("price") is None:
            return self._priced(self.records()).get(id)
        return Product.from_dict(record)

    @staticmethod
    def _priced(records: list[dict[str, Any]]) -> dict[str, Product]:
        fill_missing_prices(records)
        products: dict[str, Product] = {}
        for record in records:
            if record.get("price") is None:
                log.warning("catalog snapshot: %s has no price and none derivable; left out", record.get("id"))
                continue
            products[record["id"]] = Product.from_dict(record)
        return products

    def load_catalog(self) -> Catalog:
        """An in-memory snapshot for search and indexing; image names resolve under `image_dir`."""
        start = time.perf_counter()
        catalog = Catalog(self._priced(self.records()).values(), image_root=self.image_dir)
        log.info("loaded %d products from %s in %.2f s", len(catalog), self.db_path, time.perf_counter() - start)
        return catalog

    def export_jsonl(self, path: Path) -> int:
        """Write the stored records as JSONL (the format `ingest_file` and `Catalog.load_jsonl` read).

        Image names stay content-addressed: the export loads with its images when written beside the store's
        image folder (``<data_dir>/catalog/products.jsonl``). Derived prices are written as ``null``.

        Returns:
            The number of records written.
        """
        records = self.records()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return len(records)
