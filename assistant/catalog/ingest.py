"""Catalog ingestion: validate JSONL/CSV product files row by row and write them into a `CatalogStore`.

Bad rows are skipped and reported as `RowError(row, id, field, reason)`; everything else ingests. Image problems
(missing file, not an image, failed download) and a variant whose parent is absent are *warnings*: the image is
dropped or the variant stands alone, and the row still ingests. Re-ingesting writes only the products whose
content hash changed; ``delete_missing=True`` (full sync) deletes stored products the file no longer lists.

File formats (chosen by extension):

* ``.jsonl`` / ``.ndjson``: one JSON object per line (the ``luma-dev/products.jsonl`` format; see
  `assistant.catalog.model`). ``.json``: a JSON array of such objects, or JSONL.
* ``.csv``: a header row with ``id, parent_id, type, title, description, category, categories, brand, price,
  currency, attributes, images``; ``categories`` and ``images`` are ``|``-separated; ``attributes`` is a JSON
  object, and ``attr_<name>`` columns add attributes (``|`` makes a list). Row numbers are file line numbers.

Images are local paths relative to the file (or its ``images/`` folder), absolute paths, or http(s) URLs.

Errors::

    ValueError
     └── CatalogError
          └── IngestError   the file as a whole cannot be read (missing, unknown format, not UTF-8, no header)
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from PIL import Image
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from assistant.catalog.model import CatalogError, Product, fill_missing_prices
from assistant.catalog.store import CatalogStore

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
LIST_SEPARATOR = "|"
ATTR_PREFIX = "attr_"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # 20 MiB: far above any product photo, small enough to hold in memory
URL_TIMEOUT_S = 5.0
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_PRODUCT_SUFFIX = re.compile(r"\s*\(product .*\)$")

Severity = Literal["error", "warning"]


class IngestError(CatalogError):
    """The file as a whole cannot be ingested (missing, unreadable, unknown format, CSV without header)."""


@dataclass(frozen=True)
class RowError:
    """One problem with one input row.

    Attributes:
        row: 1-based line number (JSONL, CSV) or position (JSON array, API list) of the row.
        id: The row's product id, when it has one.
        field: The offending field (``json`` for an unparsable line).
        reason: What is wrong, for a person.
        severity: ``error``: the row was skipped; ``warning``: the row ingested without the bad part.
    """

    row: int
    id: str | None
    field: str
    reason: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON object."""
        return asdict(self)


@dataclass
class IngestReport:
    """What one ingestion did.

    Attributes:
        source: The file (or ``request``) that was ingested.
        rows: Data rows read.
        ingested: Rows that passed validation and were given to the store.
        added: New products.
        updated: Products whose content changed.
        unchanged: Products identical to the stored ones (not written).
        deleted: Products deleted because the file no longer lists them (``delete_missing``).
        errors: Row problems, errors and warnings, in row order.
        seconds: Wall time.
        version: The store's version after ingestion.
    """

    source: str
    rows: int = 0
    ingested: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    version: int = 0

    @property
    def skipped(self) -> int:
        """Rows skipped because of an error."""
        return len({(e.row, e.id) for e in self.errors if e.severity == "error"})

    @property
    def warnings(self) -> int:
        """Number of warnings (rows that ingested without a bad image or parent link)."""
        return sum(e.severity == "warning" for e in self.errors)

    @property
    def changed(self) -> bool:
        """Whether the store changed."""
        return bool(self.added or self.updated or self.deleted)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON object (counts, then ``errors`` as a list of objects)."""
        return {
            "source": self.source,
            "rows": self.rows,
            "ingested": self.ingested,
            "skipped": self.skipped,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "version": self.version,
            "errors": [e.to_dict() for e in self.errors],
        }

    def render(self, max_errors: int = 200) -> RenderableType:
        """A summary line and a table of row problems, for a rich console."""
        summary = Text(
            f"{self.source}: {self.rows} rows, {self.ingested} ingested ({self.added} added, {self.updated} "
            f"updated, {self.unchanged} unchanged), {self.deleted} deleted, {self.skipped} skipped, "
            f"{self.warnings} warnings in {self.seconds:.1f} s"
        )
        if not self.errors:
            return summary
        table = Table("row", "id", "field", "reason", "", title="Row problems", title_justify="left")
        for err in self.errors[:max_errors]:
            style = "red" if err.severity == "error" else "yellow"
            table.add_row(str(err.row), err.id or "", err.field, err.reason, Text(err.severity, style=style))
        parts: list[RenderableType] = [summary, table]
        if len(self.errors) > max_errors:
            parts.append(Text(f"... and {len(self.errors) - max_errors} more (see --json)"))
        return Group(*parts)


# --- reading ------------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise IngestError(f"no such file: {path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise IngestError(f"cannot read {path}: {err}") from err


def read_jsonl(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows of JSONL text (or of a JSON array) as (row number, record or the `RowError` for that line)."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise IngestError(f"invalid JSON array: {err}") from err
        lines: Iterable[tuple[int, Any]] = enumerate(items, start=1)
    else:
        lines = ((n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip())
    for number, item in lines:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as err:
                yield number, RowError(number, None, "json", f"invalid JSON: {err.msg} at column {err.colno}")
                continue
        if not isinstance(item, dict):
            yield number, RowError(number, None, "json", f"expected a JSON object, got {type(item).__name__}")
            continue
        yield number, item


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(LIST_SEPARATOR) if part.strip()]


def read_csv(text: str) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Rows of CSV text as (line number, record or the `RowError` for that row); see the module docstring."""
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = [h.strip() for h in reader.fieldnames or []]
    if "id" not in header:
        raise IngestError(f"CSV header must have an 'id' column, got {header!r}")
    reader.fieldnames = header
    line = reader.line_num  # the header's last line
    for raw in reader:
        number, line = line + 1, reader.line_num
        if not any((v or "").strip() for k, v in raw.items() if k is not None):
            continue  # blank line
        pid = (raw.get("id") or "").strip() or None
        if raw.get(None):  # type: ignore[call-overload]  # DictReader's restkey for surplus fields
            yield number, RowError(number, pid, "row", f"{len(raw[None])} more fields than the header")  # type: ignore[index]
            continue
        record: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        bad: RowError | None = None
        for key, value in raw.items():
            value = (value or "").strip()
            if not value:
                continue
            if key in ("categories", "images"):
                record[key] = _split(value)
            elif key == "attributes":
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError as err:
                    bad = RowError(number, pid, "attributes", f"not valid JSON: {err.msg}")
                    break
                record["attributes"] = parsed
            elif key.startswith(ATTR_PREFIX):
                parts = _split(value)
                attributes[key[len(ATTR_PREFIX) :]] = parts if len(parts) > 1 else value
            else:
                record[key] = value
        if bad is not None:
            yield number, bad
            continue
        if attributes:
            merged = record.get("attributes")
            record["attributes"] = {**merged, **attributes} if isinstance(merged, dict) else merged or attributes
        yield number, record


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """The rows of a catalog file, chosen by extension (``.jsonl``, ``.ndjson``, ``.json``, ``.csv``).

    Raises:
        IngestError: The file is missing or unreadable, or its extension is not a known format.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES:
        raise IngestError(f"unknown catalog format {suffix!r}: expected one of {JSONL_SUFFIXES + CSV_SUFFIXES}")
    text = _read_text(path)
    return read_csv(text) if suffix in CSV_SUFFIXES else read_jsonl(text)


# --- images -------------------------------------------------------------------------------------------------------


class ImageChecker:
    """Resolve image references to verified local files (downloading URLs); results are cached per reference.

    Args:
        base_dir: Folder that relative paths are resolved in (then its ``images/``); None refuses local paths
            except names of images already in `store_dir`.
        store_dir: The store's image folder (content-addressed names from an export resolve there).
        fetch_urls: Download http(s) references; else they are refused.
        timeout: Seconds per download (connect and read).
        max_bytes: Largest accepted image file (default `MAX_IMAGE_BYTES`).
    """

    def __init__(
        self,
        *,
        base_dir: Path | None,
        store_dir: Path | None = None,
        fetch_urls: bool = True,
        timeout: float = URL_TIMEOUT_S,
        max_bytes: int | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.store_dir = store_dir
        self.fetch_urls = fetch_urls
        self.timeout = timeout
        self.max_bytes = max_bytes if max_bytes is not None else MAX_IMAGE_BYTES
        self._cache: dict[str, Path | str] = {}
        self._client: httpx.Client | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> ImageChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def check(self, ref: str) -> Path | str:
        """A verified image file for `ref`, or the reason it cannot be used."""
        if ref not in self._cache:
            is_url = ref.lower().startswith(("http://", "https://"))
            self._cache[ref] = self._fetch(ref) if is_url else self._local(ref)
        return self._cache[ref]

    def _local(self, ref: str) -> Path | str:
        path = Path(ref)
        candidates: list[Path] = []
        if self.base_dir is None:
            if path.name != ref:
                return f"local image paths are not accepted here, use an http(s) URL: {ref}"
        elif path.is_absolute():
            candidates.append(path)
        else:
            candidates += [self.base_dir / path, self.base_dir / "images" / path]
        if self.store_dir is not None and path.name == ref:
            candidates.append(self.store_dir / ref)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return f"file not found: {ref}"
        return self._verify(found, ref)

    def _verify(self, path: Path, ref: str) -> Path | str:
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                return f"too large: {size / 2**20:.1f} MiB > {self.max_bytes / 2**20:.0f} MiB: {ref}"
            with Image.open(path) as image:
                image.verify()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            return f"not a readable image ({err}): {ref}"
        return path

    def _fetch(self, url: str) -> Path | str:
        if not self.fetch_urls:
            return f"URL not fetched (URL fetching is off): {url}"
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=True)
            self._tmp = Path(tempfile.mkdtemp(prefix="shoptalk-images-"))
        assert self._tmp is not None
        target = self._tmp / f"{len(self._cache)}.download"
        try:
            with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    return f"fetch failed: HTTP {response.status_code}: {url}"
                size = 0
                with target.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            return f"too large: over {self.max_bytes / 2**20:.0f} MiB: {url}"
                        fh.write(chunk)
        except httpx.HTTPError as err:
            return f"fetch failed ({type(err).__name__}: {err}): {url}"
        verified = self._verify(target, url)
        if isinstance(verified, str):
            return verified
        with Image.open(target) as image:
            ext = _FORMAT_EXT.get(image.format or "", Path(httpx.URL(url).path).suffix.lower())
        return target.rename(target.with_suffix(ext))


# --- validation ---------------------------------------------------------------------------------------------------


def _field_error(row: int, pid: str | None, err: CatalogError) -> RowError:
    """A RowError from a `Product.from_dict` message (``"field: reason (product 'x')"``)."""
    name, _, reason = str(err).partition(":")
    return RowError(row, pid, name.strip(), _PRODUCT_SUFFIX.sub("", reason.strip()))


@dataclass
class _Row:
    number: int
    record: dict[str, Any]
    product: Product | None = None
    images: list[Path] = field(default_factory=list)
    unpriced: bool = False


def _check_ids(
    rows: Iterable[tuple[int, dict[str, Any] | RowError]], report: IngestReport
) -> tuple[list[_Row], set[str]]:
    """Rows with a usable, unique id; also every id the input mentions (for full sync)."""
    good: list[_Row] = []
    first_row: dict[str, int] = {}
    for number, item in rows:
        report.rows += 1
        if isinstance(item, RowError):
            report.errors.append(item)
            continue
        pid = item.get("id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = item["id"] = str(pid)
        if not isinstance(pid, str) or not pid.strip():
            report.errors.append(RowError(number, None, "id", "missing or empty"))
            continue
        pid = item["id"] = pid.strip()
        if pid in first_row:
            report.errors.append(RowError(number, pid, "id", f"duplicate id (first at row {first_row[pid]})"))
            continue
        first_row[pid] = number
        good.append(_Row(number, item))
    return good, set(first_row)


def _derive_prices(rows: list[_Row], store: CatalogStore) -> None:
    """Fill missing parent prices from variants in the input and in the store (`fill_missing_prices`)."""
    missing = [r for r in rows if r.record.get("price") in (None, "")]
    if not missing:
        return
    for r in missing:
        r.record["price"] = None
    ids = {r.record["id"] for r in rows}
    context = [rec for rec in store.records() if rec.get("id") not in ids]
    fill_missing_prices([r.record for r in rows] + context)
    for r in missing:
        r.unpriced = r.record["price"] is not None


def _validate(rows: list[_Row], report: IngestReport) -> list[_Row]:
    valid = []
    for r in rows:
        pid = r.record["id"]
        if r.record.get("price") is None:
            report.errors.append(RowError(r.number, pid, "price", "missing (and no variants to derive it from)"))
            continue
        images = r.record.pop("images", None)
        try:
            r.product = Product.from_dict(r.record)
        except CatalogError as err:
            report.errors.append(_field_error(r.number, pid, err))
            continue
        r.record["images"] = images
        valid.append(r)
    return valid


def _image_refs(r: _Row, report: IngestReport) -> list[str]:
    images = r.record.get("images")
    if images is None or images == "":
        return []
    if isinstance(images, str):
        return _split(images) if LIST_SEPARATOR in images else [images.strip()]
    if isinstance(images, list) and all(isinstance(i, str) for i in images):
        return [i.strip() for i in images if i.strip()]
    report.errors.append(RowError(r.number, r.record["id"], "images", "must be a list of paths or URLs", "warning"))
    return []


def _check_parents(rows: list[_Row], known: set[str], report: IngestReport) -> None:
    for r in rows:
        assert r.product is not None
        parent = r.product.parent_id
        if parent is not None and parent not in known:
            report.errors.append(RowError(r.number, r.product.id, "parent_id",
                                          f"parent {parent!r} not found; kept as a standalone product", "warning"))


def ingest_records(
    rows: Iterable[tuple[int, dict[str, Any] | RowError]],
    store: CatalogStore,
    *,
    source: str = "request",
    base_dir: Path | None = None,
    fetch_urls: bool = True,
    delete_missing: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Validate rows and write the valid ones into the store (one transaction); see the module docstring.

    Args:
        rows: (row number, record) pairs, or a `RowError` already found while reading that row.
        store: The store to write into.
        source: Name of the input, for the report.
        base_dir: Folder that local image paths are relative to; None refuses local paths (web uploads), except
            names of images already in the store.
        fetch_urls: Download http(s) images (else they are reported and dropped).
        delete_missing: Full sync: delete stored products the input does not mention (skipped when no row is
            valid, so a wrong file cannot empty the catalog).
        progress: Called as ``(step, done, total)`` while images are checked and rows written (the CLI draws it).

    Returns:
        The report.
    """
    start = time.perf_counter()
    report = IngestReport(source=source)
    step = progress or (lambda name, done, total: None)
    with ExitStack() as stack:
        checked, mentioned = _check_ids(rows, report)
        _derive_prices(checked, store)
        valid = _validate(checked, report)
        known = {r.record["id"] for r in valid} | store.ids()
        _check_parents(valid, known, report)
        checker = stack.enter_context(ImageChecker(base_dir=base_dir, store_dir=store.image_dir,
                                                   fetch_urls=fetch_urls))
        step("checking images", 0, len(valid))
        images: dict[str, list[Path]] = {}
        for r in valid:
            assert r.product is not None
            paths: list[Path] = []
            for ref in _image_refs(r, report):
                result = checker.check(ref)
                if isinstance(result, Path):
                    paths.append(result)
                else:
                    report.errors.append(RowError(r.number, r.product.id, "images", result, "warning"))
            images[r.product.id] = paths
            step("checking images", len(images), len(valid))
        step("writing", 0, 1)
        stats = store.upsert((r.product for r in valid if r.product is not None), images,
                             unpriced={r.record["id"] for r in valid if r.unpriced})
        step("writing", 1, 1)
    report.ingested = len(valid)
    report.added, report.updated, report.unchanged = stats.added, stats.updated, stats.unchanged
    if delete_missing:
        if valid:
            report.deleted = store.delete(store.ids() - mentioned, cascade_variants=False)
        else:
            log.warning("full sync of %s skipped: no valid rows", source)
    if report.deleted or report.updated:
        store.prune_images()
    report.errors.sort(key=lambda e: e.row)
    report.version = store.version()
    report.seconds = time.perf_counter() - start
    log.info("ingested %s: %d/%d rows (%d added, %d updated, %d unchanged, %d deleted) in %.2f s", source,
             report.ingested, report.rows, report.added, report.updated, report.unchanged, report.deleted,
             report.seconds)
    return report


def ingest_file(
    path: Path,
    store: CatalogStore,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    fetch_urls: bool = True,
    delete_missing: bool = False,
    local_images: bool = True,
) -> IngestReport:
    """Ingest a JSONL or CSV catalog file into the store.

    Args:
        path: The file (``.jsonl``, ``.ndjson``, ``.json`` or ``.csv``).
        store: The store to write into.
        progress: Called as ``(step, done, total)`` (see `ingest_records`).
        fetch_urls: Download http(s) images (else they are reported and dropped).
        delete_missing: Full sync: delete stored products the file does not mention.
        local_images: Resolve local image paths relative to the file (False for uploaded files).

    Returns:
        The report; bad rows are in ``errors`` and did not stop the rest.

    Raises:
        IngestError: The file is missing, unreadable or of an unknown format.
    """
    path = Path(path)
    return ingest_records(read_rows(path), store, source=str(path), base_dir=path.parent if local_images else None,
                          fetch_urls=fetch_urls, delete_missing=delete_missing, progress=progress)


def records_from_json(body: Any) -> list[tuple[int, dict[str, Any] | RowError]]:
    """Rows from a decoded JSON body: one product object or a list of them (1-based positions)."""
    items = body if isinstance(body, list) else [body]
    out: list[tuple[int, dict[str, Any] | RowError]] = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, Mapping):
            out.append((number, dict(item)))
        else:
            out.append((number, RowError(number, None, "json", f"expected an object, got {type(item).__name__}")))
    return out
