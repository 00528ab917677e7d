"""The server's gate: authentication (server/auth.py), per-client rate limits and audio pacing.

Rate limits use the `limits` package (moving windows) on in-memory storage by default, or Redis
(``SHOPTALK_RATE_LIMIT_STORAGE=redis://...``) so that several servers count together.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import OPEN, AuthError, Authority, Principal, load_secret, redact

if TYPE_CHECKING:
    from server.engines import App
    from server.settings import Settings

log = logging.getLogger(__name__)


class RateLimits:
    """Named moving-window limits keyed by client: ``allow("turns", key)``."""

    def __init__(self, storage_uri: str, rules: dict[str, str]) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.rules: dict[str, RateLimitItem] = {name: parse(rule) for name, rule in rules.items()}

    def allow(self, name: str, key: str, cost: int = 1) -> bool:
        return bool(self._limiter.hit(self.rules[name], name, key, cost=cost))

    def retry_after(self, name: str, key: str) -> float:
        stats = self._limiter.get_window_stats(self.rules[name], name, key)
        return max(0.0, float(stats.reset_time) - time.time())


class AudioPacer:
    """Token bucket over seconds of audio: at most ``speed`` x real time once a burst is used.

    The ``burst_s`` allowance covers a reconnecting client catching up or a short file sent fast.
    """

    def __init__(self, speed: float, burst_s: float) -> None:
        self.speed = speed
        self.burst_s = burst_s
        self._tokens = burst_s
        self._at = time.monotonic()

    def admit(self, seconds: float) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.speed)
        self._at = now
        if seconds > self._tokens:
            return False
        self._tokens -= seconds
        return True


@dataclass
class Gate:
    """What every request and connection passes through."""

    authority: Authority
    limits: RateLimits
    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        secret = load_secret(settings.data_dir, settings.auth_secret.get_secret_value() if settings.auth_secret else None)
        authority = Authority(secret, required=settings.auth_required, api_keys=settings.api_keys,
                              token_ttl_s=settings.token_ttl_s, allowed_origins=settings.allowed_origins)
        limits = RateLimits(settings.rate_limit_storage, {
            "http": settings.rate_limit_http, "uploads": settings.rate_limit_uploads,
            "turns": settings.rate_limit_turns, "events": settings.rate_limit_events,
            "connections": settings.rate_limit_connections, "tokens": "30/minute",
        })
        return cls(authority=authority, limits=limits, settings=settings)

    def pacer(self) -> AudioPacer:
        return AudioPacer(self.settings.max_audio_speed, self.settings.audio_burst_s)


def client_key(authorization: str | None, client_host: str | None) -> str:
    """Whom a request counts against: its credential when it has one, else its address."""
    if authorization:
        return "cred:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return "ip:" + (client_host or "unknown")


# --- HTTP ------------------------------------------------------------------------------------------------------
_UNLIMITED_PREFIXES = ("/healthz", "/metrics", "/static/", "/docs", "/openapi.json", "/redoc")


class GateMiddleware:
    """Origin allowlist for browsers' state-changing requests, and per-client HTTP rate limits, before any route."""

    def __init__(self, app: ASGIApp, gate_of: Any) -> None:
        self.app = app
        self.gate_of = gate_of  # () -> Gate | None; built at start-up, after the middleware

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate: Gate | None = self.gate_of()
        if scope["type"] != "http" or gate is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD", "OPTIONS") and not gate.authority.origin_allowed(
                headers.get("origin"), headers.get("host")):
            await _deny(scope, receive, send, 403, "origin_not_allowed",
                        f"requests from origin {headers.get('origin')!r} are not allowed")
            return
        if path.startswith("/v1/") and not path.startswith(_UNLIMITED_PREFIXES):
            client = scope.get("client")
            key = client_key(headers.get("authorization"), client[0] if client else None)
            rule = "uploads" if path == "/v1/images" and method == "POST" else "http"
            if not gate.limits.allow(rule, key):
                retry = gate.limits.retry_after(rule, key)
                await _deny(scope, receive, send, 429, "rate_limited",
                            f"too many requests; retry in {retry:.0f} s", {"Retry-After": str(max(1, round(retry)))})
                return
        await self.app(scope, receive, send)


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str,
                headers: dict[str, str] | None = None) -> None:
    response = JSONResponse({"detail": {"code": code, "message": message}}, status_code=status, headers=headers)
    await response(scope, receive, send)


def principal(request: Request) -> Principal:
    """The authenticated caller of an HTTP request (401 with a coded message otherwise)."""
    state: App | None = getattr(request.app.state, "shoptalk", None)
    if state is None:  # a router mounted alone (tests of one route): no gate configured
        return OPEN
    try:
        return state.gate.authority.authenticate(request.headers.get("authorization"))
    except AuthError as err:
        raise HTTPException(err.status, detail={"code": err.code, "message": err.message},
                            headers={"WWW-Authenticate": "Bearer"}) from err


def merchant(request: Request) -> Principal:
    """A caller with a merchant API key (or anyone when auth is off)."""
    caller = principal(request)
    if not caller.is_merchant:
        raise HTTPException(403, detail={"code": "forbidden", "message": "this needs a merchant API key"})
    return caller


PrincipalDep = Annotated[Principal, Depends(principal)]
MerchantDep = Annotated[Principal, Depends(merchant)]

__all__ = ["AudioPacer", "Gate", "GateMiddleware", "MerchantDep", "PrincipalDep", "RateLimits", "client_key",
           "merchant", "principal", "redact"]
