"""The FastAPI application: HTTP routes and the realtime websocket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket

from assistant.catalog_store import default_store
from server.engines import App, build_app_state
from server.realtime import serve_realtime
from server.routes import catalog, health, images, merchant, search, users, web
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
        yield

    app = FastAPI(title="ShopTalk", version="0.1.0", lifespan=lifespan)
    app.state.shoptalk = state
    app.include_router(health.router)
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(catalog.router)
    app.include_router(users.router)
    app.include_router(merchant.router)
    web.mount(app)

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        shared: App = ws.app.state.shoptalk
        tts_rate = shared.tts.sample_rate if shared.tts else 24000
        await serve_realtime(ws, shared.engines, queue_size=shared.settings.outbound_queue, output_rate=tts_rate)

    return app
