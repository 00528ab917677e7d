"""Session tokens for shoppers.

The merchant's backend mints them (``POST /v1/tokens``, merchant API key); the page this server serves may get an
anonymous one for itself (``POST /v1/tokens/page``, same origin only).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from server.deps import StateDep
from server.security import MerchantDep, client_key

router = APIRouter(prefix="/v1/tokens", tags=["auth"])


class TokenRequest(BaseModel):
    user_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:-]+$")
    ttl_s: float | None = Field(None, gt=0, le=86400)


@router.post("", status_code=201)
async def mint_token(body: TokenRequest, state: StateDep, caller: MerchantDep) -> dict[str, Any]:
    """A short-lived session token for one shopper (signed in when ``user_id`` is given)."""
    subject = f"user:{body.user_id}" if body.user_id else "anon:" + secrets.token_hex(8)
    minted = state.gate.authority.mint(subject, user_id=body.user_id, ttl_s=body.ttl_s)
    return {"token": minted.token, "expires_at": round(minted.expires_at, 3), "required": state.gate.authority.required}


@router.post("/page")
async def page_token(request: Request, state: StateDep) -> dict[str, Any]:
    """An anonymous token for the browser page served here.

    Browsers send their Origin; it must be this server's (or an allowed one), so another site's page cannot get
    tokens through its visitors' browsers.
    """
    gate = state.gate
    origin = request.headers.get("origin")
    if not state.settings.page_tokens:
        raise HTTPException(404, detail={"code": "page_tokens_off",
                                         "message": "this server does not hand out page tokens; sign in on the shop"})
    if origin is None or not gate.authority.origin_allowed(origin, request.headers.get("host")):
        raise HTTPException(403, detail={"code": "origin_not_allowed", "message": "page tokens are for this site's page"})
    if not gate.authority.required:
        return {"token": None, "expires_at": None, "required": False}
    client = request.client.host if request.client else None
    if not gate.limits.allow("tokens", client_key(None, client)):
        raise HTTPException(429, detail={"code": "rate_limited", "message": "too many tokens; wait a minute"})
    minted = gate.authority.mint("anon:" + secrets.token_hex(8))
    return {"token": minted.token, "expires_at": round(minted.expires_at, 3), "required": True}
