"""Who may do what: short-lived signed session tokens, merchant API keys and the Origin allowlist.

- **Merchant API keys** (``SHOPTALK_API_KEYS``) authorise the merchant's backend and operators: catalog admin, merchant
  tools, any user's data, and minting session tokens (``POST /v1/tokens``).
- **Session tokens** are JWTs (HS256) that live minutes (``SHOPTALK_TOKEN_TTL_S``), minted for one shopper (``sub``;
  ``uid`` when they are signed in). Devices and the CLI send them as ``Authorization: Bearer``; browsers, which cannot
  set headers on a websocket, send ``{"type": "session.authenticate", "token"}`` as their first message.
- **Origin**: a browser's websocket or state-changing request must come from this server's own origin or one listed
  in ``SHOPTALK_ALLOWED_ORIGINS`` (cross-site websocket hijacking); clients that send no Origin are not browsers.

Tokens never appear in URLs, so access logs cannot hold them; ``redact`` scrubs them from anything else logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import jwt

AUDIENCE = "shoptalk"
ALGORITHM = "HS256"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")


class AuthError(Exception):
    """Authentication or authorisation failed; ``code`` is the protocol error code, ``status`` the HTTP status."""

    client_error = True  # the credential the client sent (or did not)

    def __init__(self, message: str, *, code: str = "auth_failed", status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Principal:
    """The caller: ``open`` when auth is off, a ``shopper`` holding a session token, or a ``merchant`` API key."""

    kind: Literal["open", "shopper", "merchant"]
    subject: str
    user_id: str | None = None

    @property
    def is_merchant(self) -> bool:
        return self.kind in ("open", "merchant")

    def may_act_for(self, user_id: str) -> bool:
        """Whether this caller may read or change ``user_id``'s data (consent, friends, events)."""
        return self.is_merchant or (self.user_id is not None and hmac.compare_digest(self.user_id, user_id))


OPEN = Principal(kind="open", subject="open")


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: float


def redact(text: str) -> str:
    """``text`` with bearer credentials and JWTs replaced by ``[redacted]``."""
    return _JWT.sub("[redacted]", _BEARER.sub(r"\1[redacted]", text))


def load_secret(data_dir: Path, configured: str | None) -> bytes:
    """The signing secret: ``SHOPTALK_AUTH_SECRET`` (share it between servers), else one kept in the data dir."""
    if configured:
        if len(configured) < 32:
            raise ValueError("SHOPTALK_AUTH_SECRET must be at least 32 characters")
        return configured.encode()
    path = data_dir / "auth.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authority:
    """Verifies callers and mints session tokens.

    Args:
        secret: HMAC key for session tokens.
        required: Whether callers must authenticate (off: everyone is ``OPEN``, e.g. a laptop demo on loopback).
        api_keys: Merchant API keys (kept only as SHA-256 digests).
        token_ttl_s: Lifetime of minted session tokens.
        allowed_origins: Browser origins allowed besides the server's own (``https://shop.example``).
    """

    def __init__(self, secret: bytes, *, required: bool, api_keys: Sequence[str] = (), token_ttl_s: float = 600,
                 allowed_origins: Sequence[str] = ()) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret
        self.required = required
        self._keys = [_key_digest(k) for k in api_keys if k]
        self.token_ttl_s = token_ttl_s
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins if o}

    # --- tokens --------------------------------------------------------------------------------------------------
    def mint(self, subject: str, *, user_id: str | None = None, ttl_s: float | None = None) -> MintedToken:
        now = time.time()
        ttl = min(ttl_s or self.token_ttl_s, self.token_ttl_s)
        claims: dict[str, object] = {"sub": subject, "aud": AUDIENCE, "iat": int(now), "exp": int(now + ttl),
                                     "jti": secrets.token_hex(8)}
        if user_id:
            claims["uid"] = user_id
        return MintedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), now + ttl)

    def verify_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                                options={"require": ["exp", "iat", "sub", "aud"]})
        except jwt.ExpiredSignatureError as err:
            raise AuthError("the session token has expired; get a new one", code="token_expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError("invalid session token") from err
        uid = claims.get("uid")
        return Principal(kind="shopper", subject=str(claims["sub"]), user_id=str(uid) if uid else None)

    def api_key(self, key: str) -> Principal | None:
        digest = _key_digest(key)
        for known in self._keys:
            if hmac.compare_digest(known, digest):
                return Principal(kind="merchant", subject="merchant:" + digest.hex()[:8])
        return None

    def credential(self, token: str) -> Principal:
        """A bearer credential: a merchant API key or a session token."""
        return self.api_key(token) or self.verify_token(token)

    # --- requests ------------------------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of an HTTP request or a websocket handshake from its ``Authorization`` header."""
        if not authorization:
            if self.required:
                raise AuthError("authentication required: send 'Authorization: Bearer <token>'")
            return OPEN
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        principal = self.credential(token.strip())
        return principal if self.required or principal.kind == "merchant" else OPEN

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser ``Origin`` may talk to this server (no Origin: not a browser, allowed)."""
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        # The page this server serves talks to the same host and port it came from.
        if host and parts.netloc == host.lower():
            return True
        # A developer's own machine: a page on loopback may talk to a server on loopback.
        host_name = urlsplit("//" + host).hostname if host else None
        return parts.hostname in _LOOPBACK and host_name in _LOOPBACK


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")
