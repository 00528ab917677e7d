"""Catalog management: ``POST/DELETE /v1/catalog/...`` over the `CatalogStore` in ``app.state.catalog_store``.

After a change the handlers call ``app.state.on_catalog_change()`` when the app defines it (re-indexing): an
async function is awaited, a plain one runs in a worker thread.
Uploaded files and JSON bodies may reference images by http(s) URL (fetched unless
``app.state.catalog_fetch_urls`` is False) or by the name of an image already in the store; local paths are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from assistant.catalog.ingest import (
    CSV_SUFFIXES,
    JSONL_SUFFIXES,
    IngestError,
    IngestReport,
    ingest_file,
    ingest_records,
    records_from_json,
)
from assistant.catalog.store import CatalogStore
from server.security import merchant

log = logging.getLogger(__name__)

# Catalog admin is the merchant's: a merchant API key (server/auth.py) when auth is on.
router = APIRouter(prefix="/v1/catalog", tags=["catalog"], dependencies=[Depends(merchant)])

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # 50 MiB
MAX_BODY_BYTES = 10 * 1024 * 1024  # JSON bodies: ~10k products
_CHUNK = 1 << 20


def get_store(request: Request) -> CatalogStore:
    """The app's catalog store (``app.state.catalog_store``); 503 when the app has none."""
    store = getattr(request.app.state, "catalog_store", None)
    if store is None:
        raise HTTPException(503, detail="catalog store is not configured")
    return store  # type: ignore[no-any-return]


StoreDep = Annotated[CatalogStore, Depends(get_store)]


def _fetch_urls(request: Request) -> bool:
    return bool(getattr(request.app.state, "catalog_fetch_urls", True))


async def _notify(request: Request) -> None:
    """Tell the app the catalog changed (``app.state.on_catalog_change``), if it wants to know.

    An async callback is awaited on the event loop; a plain function runs in a worker thread (re-indexing is slow).
    """
    callback = getattr(request.app.state, "on_catalog_change", None)
    if callback is None:
        return
    if inspect.iscoroutinefunction(callback):
        await callback()
    else:
        result = await asyncio.to_thread(callback)
        if inspect.isawaitable(result):
            await result


async def _finish(request: Request, report: IngestReport) -> dict[str, Any]:
    if report.changed:
        await _notify(request)
    body = report.to_dict()
    body.pop("source", None)
    return body


@router.get("")
async def catalog_info(store: StoreDep) -> dict[str, Any]:
    """Number of stored products and the store's change version."""
    count, version = await asyncio.to_thread(lambda: (store.count(), store.version()))
    return {"count": count, "version": version}


@router.post("/products", response_model=None)
async def upsert_products(request: Request, store: StoreDep) -> dict[str, Any] | JSONResponse:
    """Add or update products from a JSON body: one product object or a list of them.

    The response lists per-item problems (``row`` is the 1-based position in the list); 400 when the body holds no
    product, 422 when no item is valid.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, detail=f"body over {MAX_BODY_BYTES // 2**20} MiB; upload a file to /v1/catalog/ingest")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, detail=f"body over {MAX_BODY_BYTES // 2**20} MiB; upload a file to /v1/catalog/ingest")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(400, detail=f"invalid JSON: {err}") from err
    rows = records_from_json(body)
    if not rows:
        raise HTTPException(400, detail={"code": "no_products",
                                         "message": "no products in the body: send a product object or a list of them"})
    fetch = _fetch_urls(request)
    report = await asyncio.to_thread(ingest_records, rows, store, fetch_urls=fetch)
    result = await _finish(request, report)
    if report.ingested == 0:
        return JSONResponse(result, status_code=422)
    return result


@router.post("/ingest", response_model=None)
async def ingest_upload(
    request: Request, store: StoreDep, file: UploadFile, sync: bool = False
) -> dict[str, Any] | JSONResponse:
    """Ingest an uploaded JSONL/JSON/CSV file (multipart field ``file``, at most 50 MiB).

    ``?sync=true`` deletes stored products the file does not list. 422 when the file has no valid row.
    """
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES:
        raise HTTPException(415, detail=f"unknown catalog format {suffix!r}: upload .jsonl, .json or .csv")
    tmp_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="shoptalk-upload-"))
    try:
        path = tmp_dir / f"upload{suffix}"
        size = 0
        with path.open("wb") as fh:  # noqa: ASYNC230  # small chunked writes; the upload is already spooled
            while chunk := await file.read(_CHUNK):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise HTTPException(413, detail=f"file over {MAX_UPLOAD_BYTES // 2**20} MiB")
                fh.write(chunk)
        try:
            report = await asyncio.to_thread(ingest_file, path, store, fetch_urls=_fetch_urls(request),
                                             delete_missing=sync, local_images=False)
        except IngestError as err:
            raise HTTPException(400, detail=str(err)) from err
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp_dir, True)
    report.source = file.filename or "upload"
    result = await _finish(request, report)
    if report.ingested == 0:
        return JSONResponse(result, status_code=422)
    return result


@router.delete("/products/{product_id}")
async def delete_product(
    request: Request, product_id: str, store: StoreDep, cascade_variants: bool = True
) -> dict[str, Any]:
    """Delete a product (and, by default, its variants); 404 when it is not in the store."""

    def run() -> tuple[int, int]:
        if product_id not in store:
            return 0, store.version()
        deleted = store.delete([product_id], cascade_variants=cascade_variants)
        store.prune_images()
        return deleted, store.version()

    deleted, version = await asyncio.to_thread(run)
    if not deleted:
        raise HTTPException(404, detail=f"product {product_id!r} not found")
    await _notify(request)
    return {"deleted": deleted, "version": version}
