"""``POST /v1/search`` and product lookup."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from assistant.search import SearchQuery, parse_query
from server import metrics
from server.deps import StateDep
from server.serialize import product_json

router = APIRouter(prefix="/v1", tags=["search"])


class SearchRequest(BaseModel):
    text: str | None = Field(None, max_length=2000)
    image_id: str | None = Field(None, max_length=128)
    k: int = Field(5, ge=1, le=100)
    session_id: str | None = Field(None, max_length=128)
    ranker: str | None = Field(None, max_length=64)


@router.post("/search")
async def search(body: SearchRequest, state: StateDep) -> dict[str, Any]:
    if body.image_id is not None:
        raise HTTPException(404, detail=f"image {body.image_id!r} not found (photo search is not available yet)")
    if not body.text or not body.text.strip():
        raise HTTPException(422, detail="'text' is required and must not be empty")
    query = parse_query(body.text)
    query = SearchQuery(**{**query.__dict__, "k": body.k})
    hits = await asyncio.to_thread(state.searcher.search, query)
    metrics.SEARCHES.inc()
    return {"query": {"text": body.text, "max_price": query.max_price, "min_price": query.min_price,
                      "color": query.color, "size": query.size},
            "products": [product_json(h) for h in hits]}


@router.get("/products/{product_id}")
async def get_product(product_id: str, state: StateDep) -> dict[str, Any]:
    product = state.catalog.get(product_id)
    if product is None:
        raise HTTPException(404, detail=f"product {product_id!r} not found")
    return {**product.to_dict(), "image_url": f"/v1/products/{product.id}/image"}


@router.get("/products/{product_id}/image")
async def product_image(product_id: str, state: StateDep) -> FileResponse:
    product = state.catalog.get(product_id)
    if product is None:
        raise HTTPException(404, detail=f"product {product_id!r} not found")
    path = state.catalog.image_path(product)
    if path is None or not path.exists():
        raise HTTPException(404, detail=f"product {product_id!r} has no image")
    return FileResponse(path)
