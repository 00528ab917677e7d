"""The FastAPI application: HTTP routes and the realtime websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket

from assistant.catalog.store import default_store
from server.engines import App, build_app_state
from server.metrics import watch_event_loop
from server.realtime import LiveSessions, serve_realtime
from server.routes import catalog, health, images, merchant, search, tokens, users, web
from server.security import GateMiddleware
from server.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, state: App | None = None) -> FastAPI:
    """Build the app; engines are built at start-up from ``settings`` unless a prepared ``state`` is injected."""
    settings = settings or (state.settings if state else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "shoptalk", None) is None:
            app.state.shoptalk = build_app_state(settings)
        shared: App = app.state.shoptalk
        if shared.store is None and shared.settings.catalog is None:
            # Catalog admin creates the store on first use; the served catalog switches to it then.
            shared.store = default_store(shared.settings.data_dir)
        app.state.catalog_store = shared.store
        app.state.on_catalog_change = shared.reload_catalog
        app.state.catalog_fetch_urls = shared.settings.fetch_image_urls
        if not shared.settings.auth_required:
            log.warning("auth is off (SHOPTALK_AUTH=%s, listening on %s): every caller is trusted as the merchant; "
                        "set SHOPTALK_AUTH=on and SHOPTALK_API_KEYS before exposing the server",
                        shared.settings.auth, shared.settings.host)
        shared.start_background()  # what only improves quality starts now that the server can answer
        lag = asyncio.ensure_future(watch_event_loop())  # /metrics: shoptalk_event_loop_lag_*
        try:
            yield
        finally:
            lag.cancel()
            shared.stop_background()

    app = FastAPI(title="ShopTalk", version="0.1.0", lifespan=lifespan)
    app.state.shoptalk = state
    app.state.live = LiveSessions()
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(catalog.router)
    app.include_router(users.router)
    app.include_router(merchant.router)
    app.include_router(tokens.router)
    app.add_middleware(GateMiddleware, gate_of=lambda: _gate_of(app))
    web.mount(app)

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        shared: App = ws.app.state.shoptalk
        tts_rate = shared.tts.sample_rate if shared.tts else 24000
        await serve_realtime(ws, shared.engines, queue_size=shared.settings.outbound_queue, output_rate=tts_rate,
                             gate=shared.gate, live=ws.app.state.live)

    return app


def _gate_of(app: FastAPI) -> Any:
    shared: App | None = getattr(app.state, "shoptalk", None)
    return shared.gate if shared is not None else None


async def drain_connections(app: FastAPI, *, grace_s: float) -> int:
    """Graceful shutdown of the websockets; returns how many were drained.

    Each gets ``session.closing``, its reply in flight up to ``grace_s`` to finish, then close 1012; new
    connections are refused meanwhile.
    """
    sessions: LiveSessions = app.state.live
    sessions.closing = True
    live = list(sessions.connections)
    if live:
        log.info("draining %d websocket session(s), up to %.0f s", len(live), grace_s)
        await asyncio.gather(*(conn.shutdown(grace_s=grace_s) for conn in live), return_exceptions=True)
        # The close frames go out after the queued events; give the senders a moment.
        waits = [asyncio.ensure_future(conn.done.wait()) for conn in live]
        await asyncio.wait(waits, timeout=2.0)
        for wait in waits:
            wait.cancel()
    return len(live)


class GracefulServer(uvicorn.Server):
    """uvicorn that, on SIGTERM/SIGINT, stops accepting, drains the realtime sessions, then shuts down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, *, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        with contextlib.suppress(Exception):
            await drain_connections(self._app, grace_s=self._grace_s)
        await super().shutdown(sockets)
