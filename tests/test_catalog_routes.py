import io
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from assistant.catalog.store import default_store
from server.routes import catalog as catalog_routes


def rec(pid, **overrides):
    base = {"id": pid, "title": f"Product {pid}", "category": "Men/Tops", "price": 10.0, "currency": "USD",
            "attributes": {}, "images": []}
    base.update(overrides)
    return base


@pytest.fixture
def app(tmp_path):
    app = FastAPI()
    app.include_router(catalog_routes.router)
    app.state.catalog_store = default_store(tmp_path / "data")
    app.state.changes = 0

    def on_change():
        app.state.changes += 1

    app.state.on_catalog_change = on_change
    yield app
    app.state.catalog_store.close()


@pytest.fixture
def client(app):
    return TestClient(app)


def test_info_and_upsert_one_and_many(client, app):
    assert client.get("/v1/catalog").json() == {"count": 0, "version": 0}
    r = client.post("/v1/catalog/products", json=rec("A"))
    assert r.status_code == 200 and (r.json()["added"], r.json()["errors"]) == (1, [])
    assert app.state.changes == 1

    r = client.post("/v1/catalog/products", json=[rec("A"), rec("B", price=-5), rec("C"), "junk"])
    body = r.json()
    assert r.status_code == 200
    assert (body["added"], body["unchanged"], body["skipped"]) == (1, 1, 2)
    assert [(e["row"], e["id"], e["field"]) for e in body["errors"]] == [(2, "B", "price"), (4, None, "json")]
    assert all(e["reason"] for e in body["errors"])
    assert app.state.changes == 2
    assert client.get("/v1/catalog").json() == {"count": 2, "version": 2}

    r = client.post("/v1/catalog/products", json=[rec("A"), rec("C")])
    assert r.json()["unchanged"] == 2 and app.state.changes == 2  # nothing changed, no re-index


def test_upsert_with_nothing_valid_is_422(client, app):
    r = client.post("/v1/catalog/products", json=[rec("X", title=""), rec("Y", currency="DOLLAR")])
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["title", "currency"]
    r = client.post("/v1/catalog/products", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    empty = client.post("/v1/catalog/products", json=[])
    assert empty.status_code == 400
    assert empty.json()["detail"] == {"code": "no_products",
                                      "message": "no products in the body: send a product object or a list of them"}
    assert app.state.changes == 0


def test_local_image_paths_are_refused_over_http(client, app, tmp_path):
    img = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(img)
    r = client.post("/v1/catalog/products", json=rec("A", images=[str(img)], price=3))
    body = r.json()
    assert body["added"] == 1 and body["errors"][0]["severity"] == "warning"
    assert "not accepted" in body["errors"][0]["reason"]
    store = app.state.catalog_store
    assert store.get("A").images == ()
    # An image already in the store may be referenced by its stored name.
    store.upsert([store.get("A")], {"A": [img]})
    name = store.get("A").images[0]
    r = client.post("/v1/catalog/products", json=rec("B", images=[name]))
    assert r.json()["errors"] == [] and store.get("B").images == (name,)


def test_ingest_upload_jsonl_and_csv(client, app):
    lines = "\n".join(json.dumps(r) for r in [rec("P", price=None), rec("P-1", parent_id="P", price=4.0),
                                              rec("Q"), rec("BAD", price="x")])
    r = client.post("/v1/catalog/ingest", files={"file": ("products.jsonl", lines.encode(), "application/x-ndjson")})
    body = r.json()
    assert r.status_code == 200 and body["added"] == 3 and body["errors"][0]["row"] == 4
    assert app.state.catalog_store.get("P").price == 4.0

    csv_text = "id,title,price\nQ,Product Q,10\nR,Product R,7\n"
    r = client.post("/v1/catalog/ingest?sync=true", files={"file": ("cat.csv", csv_text.encode(), "text/csv")})
    body = r.json()
    assert (body["added"], body["updated"], body["deleted"]) == (1, 1, 2)  # Q lost its category
    assert client.get("/v1/catalog").json()["count"] == 2
    assert app.state.changes == 2


def test_ingest_upload_limits(client, monkeypatch):
    r = client.post("/v1/catalog/ingest", files={"file": ("p.txt", b"x", "text/plain")})
    assert r.status_code == 415
    monkeypatch.setattr(catalog_routes, "MAX_UPLOAD_BYTES", 100)
    big = (json.dumps(rec("A")) + "\n") * 10
    r = client.post("/v1/catalog/ingest", files={"file": ("p.jsonl", io.BytesIO(big.encode()), "text/plain")})
    assert r.status_code == 413
    r = client.post("/v1/catalog/ingest", files={"file": ("p.csv", b"sku\n1\n", "text/csv")})
    assert r.status_code == 400 and "'id' column" in r.json()["detail"]
    r = client.post("/v1/catalog/ingest", files={"file": ("p.jsonl", b"{bad\n", "text/plain")})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "json"


def test_delete_product_and_variants(client, app):
    client.post("/v1/catalog/products", json=[rec("P", price=None), rec("P-1", parent_id="P", price=1.0), rec("Q")])
    changes = app.state.changes
    r = client.delete("/v1/catalog/products/P")
    assert r.status_code == 200 and r.json()["deleted"] == 2
    assert app.state.changes == changes + 1
    assert client.delete("/v1/catalog/products/P").status_code == 404
    assert client.get("/v1/catalog").json()["count"] == 1


def test_async_change_callback_and_missing_store(tmp_path):
    app = FastAPI()
    app.include_router(catalog_routes.router)
    with TestClient(app) as client:
        assert client.get("/v1/catalog").status_code == 503
    calls = []

    async def on_change():
        calls.append(1)

    app.state.catalog_store = default_store(tmp_path)
    app.state.on_catalog_change = on_change
    with TestClient(app) as client:
        assert client.post("/v1/catalog/products", json=rec("A")).status_code == 200
    assert calls == [1]
    app.state.catalog_store.close()
