"""Merchant tools: product copy written from a product's attributes, and review screening.

``POST /v1/copy`` drafts a description or an ad line with SmolLM2 and checks it against the product
(``assistant.replies.copy.check_claims``); a draft claiming anything the product lacks is replaced by the template.
``POST /v1/reviews/screen`` labels a customer review (profanity, insults, threats, personal data, injection) and
says whether it can be published, with a masked version.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from assistant.replies.copy import CopyWriter, attribute_vocabulary
from assistant.safety.moderation import screen_review
from server.deps import StateDep
from server.security import merchant

router = APIRouter(prefix="/v1", tags=["merchant"], dependencies=[Depends(merchant)])
_lock = threading.Lock()


class CopyRequest(BaseModel):
    product_id: str = Field(min_length=1, max_length=128)
    kind: Literal["description", "ad"] = "description"


class ReviewRequest(BaseModel):
    text: str = Field(min_length=1, max_length=5000)


def copy_writer(state: Any) -> CopyWriter:
    """The app's copy writer, built on first use (loading SmolLM2 takes a few seconds)."""
    with _lock:
        writer = getattr(state, "copy_writer", None)
        if writer is None or writer.catalog_version != id(state.catalog):
            generator = writer.generator if writer is not None else None
            if generator is None and state.settings.copy_llm:
                from assistant.replies.llm import load_generator
                from ranking.llm import prepare_smollm2
                from ranking.registry import SMOLLM2_FOLDER

                folder = prepare_smollm2(state.settings.cache_dir / SMOLLM2_FOLDER)
                generator = load_generator(folder, state.settings.device, state.settings.llm_runtime)
            writer = CopyWriter(generator, attribute_vocabulary(state.catalog))
            writer.catalog_version = id(state.catalog)
            state.copy_writer = writer
        return writer


@router.post("/copy")
async def write_copy(body: CopyRequest, state: StateDep) -> dict[str, Any]:
    product = state.catalog.get(body.product_id)
    if product is None:
        raise HTTPException(404, detail=f"product {body.product_id!r} not found")
    writer = await asyncio.to_thread(copy_writer, state)
    result = await asyncio.to_thread(writer.write, product, body.kind)
    return {"product_id": product.id, "kind": body.kind, **result.to_dict()}


@router.post("/reviews/screen")
async def screen(body: ReviewRequest) -> dict[str, Any]:
    return screen_review(body.text).to_dict()
