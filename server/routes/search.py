"""``POST /v1/search`` and product lookup."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from assistant.core.errors import AssistantError
from assistant.runtime.uploads import ImageNotFound
from server import metrics
from server.deps import StateDep
from server.security import PrincipalDep
from server.serialize import product_json

router = APIRouter(prefix="/v1", tags=["search"])


class SearchRequest(BaseModel):
    text: str | None = Field(None, max_length=2000)
    image_id: str | None = Field(None, max_length=128)
    k: int = Field(5, ge=1, le=100)
    session_id: str | None = Field(None, max_length=128)  # accepted for compatibility; memory needs resume_token
    resume_token: str | None = Field(None, max_length=256)  # a realtime session's: its signals rank, it remembers
    ranker: str | None = Field(None, max_length=64)


@router.post("/search")
async def search(body: SearchRequest, state: StateDep, caller: PrincipalDep) -> dict[str, Any]:
    text = (body.text or "").strip()
    if not text and body.image_id is None:
        raise HTTPException(400, detail={"code": "empty_query", "message": "give 'text', 'image_id', or both"})
    use_ranker = True
    if body.ranker is not None:
        valid = ["none", *([state.settings.ranker] if state.searcher.ranked else [])]
        if body.ranker not in valid:
            raise HTTPException(400, detail={"code": "unknown_ranker",
                                             "message": f"unknown ranker {body.ranker!r}; valid: {', '.join(valid)}"})
        use_ranker = body.ranker != "none"
    session = None
    if body.resume_token is not None:
        session = state.memory.resume(body.resume_token) if state.memory is not None else None
        if session is None:
            raise HTTPException(404, detail="unknown or expired resume_token")
    try:
        brain = state.engines.brain
        query, hits = await asyncio.to_thread(  # the search and the shopper's signals block: off the event loop
            lambda: brain.search(text, k=body.k, image_id=body.image_id, use_ranker=use_ranker,
                                 signals=session.signals() if session else None))
    except ImageNotFound as err:
        raise HTTPException(404, detail=err.message) from err
    except AssistantError as err:
        raise HTTPException(503 if err.code == "photo_search_unavailable" else 500, detail=err.message) from err
    metrics.SEARCHES.inc()
    if session is not None:
        if text:
            session.add_turn("user", text)
        session.set_shown([h.product.id for h in hits])
    return {"query": {"text": text, "image_id": body.image_id, "max_price": query.max_price, "min_price": query.min_price,
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
