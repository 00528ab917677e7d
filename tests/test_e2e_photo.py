"""End to end with real models on an ingested catalog: photo turns and live catalog changes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageEnhance

from assistant.catalog.demo import generate_demo_catalog
from assistant.catalog.ingest import ingest_file
from assistant.catalog.store import default_store
from server.app import create_app
from server.client import TalkClient
from server.engines import App, build_app_state
from server.settings import Settings
from tests.fakes import check_products

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> App:
    data_dir = tmp_path_factory.mktemp("data")
    products = generate_demo_catalog(tmp_path_factory.mktemp("merchant"))
    with default_store(data_dir) as store:
        report = ingest_file(products, store)
    assert report.ingested >= 240 and not [e for e in report.errors if e.severity == "error"]
    return build_app_state(Settings(data_dir=data_dir), warmup=False)


@pytest.fixture(scope="module")
def server(state: App) -> Any:
    from tests.conftest import LiveServer

    with LiveServer(create_app(state=state)) as live:
        yield live


def phone_photo(path: Path) -> bytes:
    """A shopper's photo of a catalog item: cropped, tilted, darker, JPEG-compressed."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    image = image.crop((int(0.06 * w), int(0.04 * h), int(0.95 * w), int(0.97 * h))).rotate(8, fillcolor=(200, 190, 170))
    image = ImageEnhance.Brightness(image).enhance(0.85)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=60)
    return buf.getvalue()


async def upload(http: httpx.AsyncClient, data: bytes) -> str:
    res = await http.post("/v1/images", files={"file": ("photo.jpg", data, "image/jpeg")})
    assert res.status_code == 201, res.text
    return str(res.json()["image_id"])


async def test_serves_the_ingested_catalog(server: Any, state: App) -> None:
    assert state.store is not None and len(state.catalog) == state.store.count()
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        body = (await http.post("/v1/search", json={"text": "black hoodie under fifty dollars", "k": 5})).json()
    fits = check_products(body["products"], state.catalog, max_price=50, colour="black", words=("hoodie",))
    assert fits and all("Black" in p["title"] for p in fits)


@pytest.mark.parametrize("product_id", ["HD01-BLACK", "RS01-RED", "BP01-GREY"])
async def test_photo_turn_over_websocket(server: Any, state: App, product_id: str) -> None:
    product = state.catalog.get(product_id)
    assert product is not None
    path = state.catalog.image_path(product)
    assert path is not None
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        image_id = await upload(http, phone_photo(path))
    async with TalkClient(server.ws_url) as client:
        await client.update(modalities=["text"])
        result = await client.ask_text("", image_id=image_id, timeout=60)
    assert result.status == "completed", result.types()
    top_ids = [p["id"] for p in result.products[:3]]
    assert product_id in top_ids, (product_id, [p["title"] for p in result.products])
    assert product.title.split(" — ")[0] in result.reply or any(
        p["title"].split(" — ")[0] in result.reply for p in result.products)


async def test_photo_plus_words_keeps_the_constraints(server: Any, state: App) -> None:
    product = state.catalog.get("HD01-BLACK")
    assert product is not None
    path = state.catalog.image_path(product)
    assert path is not None
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        image_id = await upload(http, phone_photo(path))
        body = (await http.post("/v1/search", json={"image_id": image_id, "text": "like this but in blue under $40"})).json()
    assert body["products"]
    for p in body["products"]:
        full = state.catalog.get(p["id"])
        assert full is not None and p["price"] <= 40 and "blue" in [c.lower() for c in full.colors()]
    assert "Hoodie" in body["products"][0]["title"]


async def test_catalog_change_is_searchable_at_once(server: Any) -> None:
    scarf = {"id": "SC99-TEAL", "title": "Aurora Silk Scarf — Teal", "description": "A light silk scarf in teal.",
             "category": "Women/Accessories/Scarves", "price": 24.5, "currency": "USD",
             "attributes": {"color": "Teal", "material": "silk", "gender": "Women"}}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
        res = await http.post("/v1/catalog/products", json=[scarf, {"id": "", "title": "no id"}])
        assert res.status_code in (200, 207), res.text
        body = res.json()
        assert body["added"] == 1 and body["errors"] and body["errors"][0]["field"] == "id"
        found = (await http.post("/v1/search", json={"text": "silk scarf", "k": 3})).json()["products"]
        assert found and found[0]["id"] == "SC99-TEAL"
        assert (await http.delete("/v1/catalog/products/SC99-TEAL")).status_code == 200
        found = (await http.post("/v1/search", json={"text": "silk scarf", "k": 3})).json()["products"]
        assert all(p["id"] != "SC99-TEAL" for p in found)
        assert (await http.delete("/v1/catalog/products/SC99-TEAL")).status_code == 404
