"""Liveness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(state: StateDep) -> dict[str, Any]:
    heads = state.heads
    return {
        "status": "ok",
        "products": len(state.catalog),
        "stt": state.settings.stt_model,
        "tts": state.settings.tts_model,
        # photo lookup: the aligned heads serving it ("raw": the tower alone) and the share of the catalog they know
        "vision": None if heads is None else {
            "heads": "raw" if heads.checkpoint is None else heads.checkpoint.name,
            "coverage": round(heads.coverage, 3)},
        # work that improves quality, running or queued after the server started (and how each last ended)
        "background": state.background.snapshot() if state.background is not None else [],
    }


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
