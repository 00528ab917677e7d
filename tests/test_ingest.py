import csv
import json
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from assistant.catalog import ingest as ingest_mod
from assistant.catalog.ingest import IngestError, ingest_file
from assistant.catalog.model import Catalog, CatalogError, Product
from assistant.catalog.store import CatalogStore, default_store, store_exists
from tests.shared_data import LUMA_DIR

LUMA = LUMA_DIR / "products.jsonl"
DEAD_URL = "http://127.0.0.1:9/hoodie.jpg"  # discard port: connection refused at once, offline or not


def rec(pid, **overrides):
    base = {
        "id": pid,
        "parent_id": None,
        "type": "simple",
        "title": f"Product {pid}",
        "description": "A product.",
        "category": "Men/Tops/Hoodies",
        "categories": ["Men/Tops/Hoodies"],
        "brand": "Northvale",
        "price": 10.0,
        "currency": "USD",
        "attributes": {"material": "cotton"},
        "images": [],
    }
    base.update(overrides)
    return base


def make_image(path: Path, color=(200, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def write_jsonl(path: Path, rows) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path):
    with default_store(tmp_path / "data") as s:
        yield s


def errors_by_id(report):
    return {(e.id, e.field): e for e in report.errors}


# --- JSONL: good and bad rows ----------------------------------------------------------------------------------------


def test_jsonl_good_and_bad_rows(tmp_path, store):
    src = tmp_path / "merchant"
    make_image(src / "images" / "red.png")
    make_image(src / "blue.png", (0, 0, 200))
    (src / "broken.jpg").write_bytes(b"not really a jpeg")
    good = [
        rec("S1", images=["red.png"]),  # found under images/
        rec("S2", images=["blue.png", "missing.png"]),  # one image missing: a warning, the row ingests
        rec("P1", type="configurable", price=None, attributes={"available_color": ["Red", "Blue"]}),
        rec("P1-R", parent_id="P1", type="variant", price=25.0, attributes={"color": "Red", "size": "M"}),
        rec("P1-B", parent_id="P1", type="variant", price=22.5, attributes={"color": "Blue", "size": "L"}),
        rec("ORPHAN", parent_id="NOPE", type="variant"),  # kept standalone, warned
        rec("S3", images=["broken.jpg"]),  # not an image: dropped, warned
        rec("S4", images=[DEAD_URL]),  # fetch fails: dropped, warned
        rec(42, title="Numeric id"),  # ids may be numbers in JSON
    ]
    bad = [
        "{not json",
        rec(None),
        rec("S1", title="Duplicate of S1"),
        rec("B-TITLE", title="   "),
        rec("B-PRICE", price="cheap"),
        rec("B-NEG", price=-1),
        '{"id": "B-NAN", "title": "NaN price", "price": NaN}',
        rec("B-CUR", currency="US"),
        rec("B-ATTR", attributes=["red"]),
        rec("B-NOPRICE", price=None),  # nothing to derive it from
        [1, 2],
    ]
    path = write_jsonl(src / "products.jsonl", good + bad)
    report = ingest_file(path, store)

    assert report.rows == len(good) + len(bad)
    assert report.ingested == len(good) == report.added
    assert report.skipped == len(bad)
    assert store.count() == len(good)
    assert {p.id for p in store.load_catalog()} == {str(r["id"]) for r in good}

    errors = errors_by_id(report)
    base = len(good)
    expected_errors = {
        (None, "id"): base + 2,
        ("S1", "id"): base + 3,
        ("B-TITLE", "title"): base + 4,
        ("B-PRICE", "price"): base + 5,
        ("B-NEG", "price"): base + 6,
        ("B-NAN", "price"): base + 7,
        ("B-CUR", "currency"): base + 8,
        ("B-ATTR", "attributes"): base + 9,
        ("B-NOPRICE", "price"): base + 10,
    }
    for key, row in expected_errors.items():
        assert key in errors, key
        assert errors[key].row == row and errors[key].severity == "error" and errors[key].reason
    assert [e.row for e in report.errors if e.field == "json"] == [base + 1, base + 11]
    assert "first at row 1" in errors[("S1", "id")].reason
    assert "not a number" in errors[("B-PRICE", "price")].reason

    warnings = {(e.id, e.field): e for e in report.errors if e.severity == "warning"}
    assert set(warnings) == {("S2", "images"), ("ORPHAN", "parent_id"), ("S3", "images"), ("S4", "images")}
    assert "missing.png" in warnings[("S2", "images")].reason
    assert "fetch failed" in warnings[("S4", "images")].reason
    assert report.warnings == 4

    catalog = store.load_catalog()
    assert catalog.get("P1").price == 22.5  # derived from the cheapest variant
    assert [v.id for v in catalog.variants_of("P1")] == ["P1-R", "P1-B"]
    assert catalog.get("ORPHAN") in catalog.parents()
    assert len(catalog.get("S2").images) == 1 and catalog.image_path(catalog.get("S2")).is_file()
    assert catalog.get("S3").images == () and catalog.get("S4").images == ()
    d = report.to_dict()
    assert d["skipped"] == len(bad) and d["errors"][0].keys() == {"row", "id", "field", "reason", "severity"}
    assert report.render() is not None


def test_oversized_image_and_fetch_disabled(tmp_path, store, monkeypatch):
    make_image(tmp_path / "big.png")
    monkeypatch.setattr(ingest_mod, "MAX_IMAGE_BYTES", 10)
    path = write_jsonl(tmp_path / "p.jsonl", [rec("A", images=["big.png", "https://example.com/x.jpg"])])
    report = ingest_file(path, store, fetch_urls=False)
    reasons = [e.reason for e in report.errors]
    assert report.added == 1 and len(reasons) == 2
    assert reasons[0].startswith("too large") and "URL fetching is off" in reasons[1]


# --- CSV ---------------------------------------------------------------------------------------------------------------

CSV_HEADER = ["id", "parent_id", "type", "title", "price", "currency", "categories", "attributes", "attr_color",
              "attr_size", "images"]


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for row in rows:
            writer.writerow(row)
    return path


def test_csv_good_and_bad_rows(tmp_path, store):
    make_image(tmp_path / "img" / "a.png")
    rows = [
        ["H1", "", "configurable", "Hoodie", "", "", "Men/Tops|Sale", '{"material": "wool"}', "Red|Blue", "", "img/a.png"],
        ["H1-R", "H1", "variant", "Hoodie Red", "30", "usd", "", "", "Red", "M", ""],
        ["H1-B", "H1", "variant", "Hoodie Blue", "28.5", "EUR", "", "", "Blue", "L", "img/a.png"],
        ["", "", "simple", "No id", "5", "", "", "", "", "", ""],
        ["H1-R", "H1", "variant", "Dup", "30", "", "", "", "", "", ""],
        ["T", "", "simple", "", "5", "", "", "", "", "", ""],
        ["P", "", "simple", "Bad price", "abc", "", "", "", "", "", ""],
        ["N", "", "simple", "NaN price", "nan", "", "", "", "", "", ""],
        ["C", "", "simple", "Bad currency", "5", "DOLLARS", "", "", "", "", ""],
        ["J", "", "simple", "Bad attrs", "5", "", "", "{oops", "", "", ""],
        ["L", "", "simple", "List attrs", "5", "", "", "[1, 2]", "", "", ""],
        ["X", "", "simple", "Too many", "5", "", "", "", "", "", "", "extra"],
        ["M", "", "simple", "Missing image", "5", "", "", "", "", "", "img/nope.png"],
    ]
    report = ingest_file(write_csv(tmp_path / "products.csv", rows), store)
    assert report.rows == len(rows) and report.ingested == 4 and store.count() == 4
    expected = {(None, "id"): 5, ("H1-R", "id"): 6, ("T", "title"): 7, ("P", "price"): 8, ("N", "price"): 9,
                ("C", "currency"): 10, ("J", "attributes"): 11, ("L", "attributes"): 12, ("X", "row"): 13}
    errors = errors_by_id(report)
    for key, line in expected.items():
        assert errors[key].row == line and errors[key].severity == "error", key
    assert errors[("M", "images")].severity == "warning" and errors[("M", "images")].row == 14
    catalog = store.load_catalog()
    parent = catalog.get("H1")
    assert parent.price == 28.5 and parent.categories == ("Men/Tops", "Sale")
    assert parent.attributes == {"material": "wool", "color": ["Red", "Blue"]}
    red = catalog.get("H1-R")
    assert red.attributes == {"color": "Red", "size": "M"} and red.currency == "USD"
    assert catalog.get("H1-B").images == parent.images  # same file, stored once


def test_csv_without_id_column_is_unreadable(tmp_path, store):
    path = tmp_path / "p.csv"
    path.write_text("sku,title\n1,x\n")
    with pytest.raises(IngestError, match="'id' column"):
        ingest_file(path, store)


@pytest.mark.parametrize("name", ["missing.jsonl", "products.xml"])
def test_unreadable_files(tmp_path, store, name):
    if name.endswith(".xml"):
        (tmp_path / name).write_text("<x/>")
    with pytest.raises(IngestError):
        ingest_file(tmp_path / name, store)
    assert isinstance(IngestError("x"), CatalogError)


def test_json_array_file(tmp_path, store):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([rec("A"), rec("B", price=-3)]))
    report = ingest_file(path, store)
    assert report.added == 1 and [(e.row, e.field) for e in report.errors] == [(2, "price")]


# --- incremental re-ingest, sync, deletion ---------------------------------------------------------------------------


def test_incremental_reingest(tmp_path, store):
    make_image(tmp_path / "a.png")
    rows = [rec(f"S{i}", price=10.0 + i, images=["a.png"]) for i in range(5)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    first = ingest_file(path, store)
    assert (first.added, first.updated, first.unchanged) == (5, 0, 0)
    v1 = store.version()
    hashes = store.content_hashes()

    again = ingest_file(path, store)
    assert (again.added, again.updated, again.unchanged, again.deleted) == (0, 0, 5, 0)
    assert store.version() == v1 and store.content_hashes() == hashes and not again.changed

    rows[2]["price"] = 99.0
    changed = ingest_file(write_jsonl(path, rows), store)
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 4)
    assert store.version() == v1 + 1 and store.get("S2").price == 99.0
    assert {k for k in hashes if store.content_hashes()[k] != hashes[k]} == {"S2"}

    make_image(tmp_path / "a.png", (0, 255, 0))  # new image content is a change too
    assert ingest_file(path, store).updated == 5

    del rows[4]
    write_jsonl(path, rows)
    assert ingest_file(path, store).deleted == 0 and store.count() == 5  # not a sync: nothing deleted
    synced = ingest_file(path, store, delete_missing=True)
    assert (synced.deleted, synced.unchanged) == (1, 4) and store.get("S4") is None


def test_sync_with_no_valid_rows_deletes_nothing(tmp_path, store):
    ingest_file(write_jsonl(tmp_path / "p.jsonl", [rec("A"), rec("B")]), store)
    report = ingest_file(write_jsonl(tmp_path / "bad.jsonl", [rec("A", price=-1)]), store, delete_missing=True)
    assert report.deleted == 0 and store.count() == 2


def test_sync_keeps_rows_that_failed_validation(tmp_path, store):
    ingest_file(write_jsonl(tmp_path / "p.jsonl", [rec("A"), rec("B")]), store)
    report = ingest_file(write_jsonl(tmp_path / "p.jsonl", [rec("A"), rec("B", price="x")]), store,
                         delete_missing=True)
    assert report.deleted == 0 and store.get("B").price == 10.0  # a typo does not delete the product


def test_variant_price_change_reprices_parent(tmp_path, store):
    rows = [rec("P", type="configurable", price=None), rec("P-1", parent_id="P", price=20.0),
            rec("P-2", parent_id="P", price=30.0)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    ingest_file(path, store)
    assert store.get("P").price == 20.0
    rows[1]["price"] = 35.0
    report = ingest_file(write_jsonl(path, rows), store)
    assert report.updated == 1  # only the variant; the parent's stored record has no price
    assert store.get("P").price == 30.0 and store.load_catalog().get("P").price == 30.0
    # A parent sent alone later is priced from the variants already in the store.
    ingest_file(write_jsonl(tmp_path / "parent.jsonl", [rec("P", type="configurable", price=None, title="New")]),
                store)
    assert store.get("P").title == "New" and store.get("P").price == 30.0


def test_delete_cascades_to_variants(tmp_path, store):
    rows = [rec("P", price=None), rec("P-1", parent_id="P", price=1.0), rec("P-2", parent_id="P", price=2.0),
            rec("Q"), rec("R", price=None), rec("R-1", parent_id="R", price=3.0)]
    ingest_file(write_jsonl(tmp_path / "p.jsonl", rows), store)
    v = store.version()
    assert store.delete(["P"]) == 3 and store.count() == 3 and store.version() == v + 1
    assert store.delete(["nope"]) == 0 and store.version() == v + 1
    assert store.delete(["R"], cascade_variants=False) == 1
    catalog = store.load_catalog()
    assert {p.id for p in catalog.parents()} == {"Q", "R-1"}  # the orphaned variant stands alone


def test_images_are_copied_and_content_addressed(tmp_path, store):
    a = make_image(tmp_path / "merchant" / "a.png")
    shutil.copy(a, tmp_path / "merchant" / "same-as-a.png")
    make_image(tmp_path / "merchant" / "b.png", (0, 0, 255))
    rows = [rec("A", images=["a.png", "b.png"]), rec("B", images=["same-as-a.png"])]
    ingest_file(write_jsonl(tmp_path / "merchant" / "p.jsonl", rows), store)
    files = sorted(p.name for p in store.image_dir.iterdir())
    assert len(files) == 2  # a.png and its copy are one image
    catalog = store.load_catalog()
    assert catalog.get("A").images[0] == catalog.get("B").images[0]
    assert all(len(name.split(".")[0]) == 64 for name in files)
    shutil.rmtree(tmp_path / "merchant")  # the merchant's files may go away
    assert catalog.image_path(catalog.get("B")).is_file()
    store.delete(["A"])
    assert store.prune_images() == 1 and len(list(store.image_dir.iterdir())) == 1


# --- store integrity -------------------------------------------------------------------------------------------------


def product(pid, price=10.0):
    return Product.from_dict(rec(pid, price=price))


def test_failed_batch_leaves_store_intact(store):
    store.upsert([product("A"), product("B")])
    version = store.version()

    def batch():
        yield product("A", price=1.0)
        yield product("C")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.upsert(batch())
    assert store.count() == 2 and store.get("A").price == 10.0 and store.get("C") is None
    assert store.version() == version
    with pytest.raises(CatalogError, match="duplicate"):
        store.upsert([product("D"), product("D")])
    assert store.get("D") is None
    assert store.upsert([product("D")]).added == 1  # the store still works


def test_store_reopens_and_exports(tmp_path, store):
    make_image(tmp_path / "a.png")
    rows = [rec("P", price=None, images=["a.png"]), rec("P-1", parent_id="P", price=5.0)]
    ingest_file(write_jsonl(tmp_path / "p.jsonl", rows), store)
    assert store_exists(tmp_path / "data")
    reopened = CatalogStore(store.db_path, store.image_dir)
    assert reopened.count() == 2 and reopened.version() == store.version()
    out = store.image_dir.parent / "products.jsonl"
    assert store.export_jsonl(out) == 2
    exported = Catalog.load_jsonl(out)
    assert exported.content_hash() == store.load_catalog().content_hash()
    parent = exported.get("P")
    assert parent is not None and (image := exported.image_path(parent)) is not None and image.is_file()
    assert ingest_file(out, reopened).unchanged == 2  # an export re-ingests as no change
    reopened.close()


def test_concurrent_readers_and_writers(store):
    errors = []

    def write(start):
        try:
            for i in range(start, start + 20):
                store.upsert([product(f"T{i}")])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    def read():
        try:
            for _ in range(40):
                store.count()
                store.load_catalog()
        except Exception as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i * 100,)) for i in range(3)] + [
        threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and store.count() == 60 and store.version() == 60


# --- Luma -------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not LUMA.is_file(), reason="Luma dev catalog not present")
def test_luma_full_ingest(store):
    report = ingest_file(LUMA, store, fetch_urls=False)
    assert report.rows == report.ingested == report.added == 1064 and report.errors == []
    reference = Catalog.load_jsonl(LUMA)
    catalog = store.load_catalog()
    assert len(catalog) == len(reference) == 1064
    assert len(catalog.parents()) == len(reference.parents())
    for p in reference:
        assert catalog.get(p.id).price == p.price, p.id  # bundle and grouped parents priced from children
    wh01 = catalog.get("WH01")
    assert wh01.type == "configurable" and {v.colors()[0] for v in catalog.variants_of("WH01")} >= {"Green"}
    assert catalog.image_path(wh01).is_file()
    assert len(list(store.image_dir.iterdir())) == 397
    again = ingest_file(LUMA, store, fetch_urls=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1064)


@pytest.mark.real_model
@pytest.mark.skipif(not LUMA.is_file(), reason="Luma dev catalog not present")
def test_luma_store_snapshot_search_returns_matching_variant(store):
    from assistant.search.query import parse_query
    from assistant.search.retrieval import EmbeddingSearcher
    from ranking.text_encoder import TextEncoder

    ingest_file(LUMA, store, fetch_urls=False)
    searcher = EmbeddingSearcher(store.load_catalog(), TextEncoder(device="cpu"))
    hits = searcher.search(parse_query("a green hoodie in medium"))
    assert hits
    for hit in hits:
        assert hit.variant is not None and hit.variant.parent_id == hit.product.id
        assert hit.variant.colors() == ["Green"] and hit.variant.sizes() == ["M"]


# --- CLI -------------------------------------------------------------------------------------------------------------


def test_cli_ingest_delete_show(tmp_path):
    from server.cli import app

    runner = CliRunner()
    data = tmp_path / "data"
    path = write_jsonl(tmp_path / "p.jsonl", [rec("P", price=None), rec("P-1", parent_id="P", price=2.0),
                                              rec("Q"), rec("BAD", price=-1)])
    result = runner.invoke(app, ["catalog", "ingest", str(path), "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["added"], body["skipped"]) == (3, 1) and body["errors"][0]["field"] == "price"

    result = runner.invoke(app, ["catalog", "ingest", str(path), "--data-dir", str(data)])
    assert result.exit_code == 0 and "3 unchanged" in result.stdout and "BAD" in result.stdout

    result = runner.invoke(app, ["catalog", "show", "--data-dir", str(data)])
    assert json.loads(result.stdout)["products"] == 3

    result = runner.invoke(app, ["catalog", "delete", "P", "--data-dir", str(data)])
    assert result.exit_code == 0 and json.loads(result.stdout)["deleted"] == 2

    result = runner.invoke(app, ["catalog", "ingest", str(tmp_path / "nope.csv"), "--data-dir", str(data)])
    assert result.exit_code == 2
