import json
import math
from pathlib import Path

import pytest
from PIL import Image

from assistant.catalog.demo import ensure_demo_catalog, generate_demo_catalog
from assistant.catalog.model import Catalog, CatalogError, Product
from tests.shared_data import LUMA_DIR

LUMA = LUMA_DIR / "products.jsonl"


def record(**overrides):
    base = {
        "id": "HD01-BLACK",
        "parent_id": None,
        "type": "simple",
        "title": "Harbor Fleece Hoodie — Black",
        "description": "A warm hoodie. " * 40,
        "category": "Men/Tops/Hoodies",
        "categories": ["Men/Tops/Hoodies", "Men/Tops"],
        "brand": "Northvale",
        "price": 39.99,
        "currency": "USD",
        "attributes": {"color": "Black", "size": ["S", "M", "L"], "material": "cotton fleece"},
        "images": ["HD01-BLACK.png"],
        "flags": {"ignored": True},
    }
    base.update(overrides)
    return base


# --- Product -------------------------------------------------------------------------------------------------------


def test_product_from_dict_round_trip():
    p = Product.from_dict(record())
    assert p.price == 39.99 and p.currency == "USD" and p.categories == ("Men/Tops/Hoodies", "Men/Tops")
    assert p.colors() == ["Black"] and p.sizes() == ["S", "M", "L"]
    assert Product.from_dict(p.to_dict()) == p
    assert "flags" not in p.to_dict()
    hash(p)  # frozen and hashable despite the attributes dict


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": None}, "id"),
        ({"title": "  "}, "title"),
        ({"price": -1}, "price"),
        ({"price": math.nan}, "price"),
        ({"price": math.inf}, "price"),
        ({"price": None}, "price"),
        ({"price": "cheap"}, "price"),
        ({"currency": "US"}, "currency"),
        ({"currency": "U5D"}, "currency"),
        ({"attributes": ["red"]}, "attributes"),
    ],
)
def test_product_validation_names_the_field(overrides, field):
    with pytest.raises(CatalogError, match=rf"^{field}:"):
        Product.from_dict(record(**overrides))


def test_catalog_error_is_value_error():
    assert issubclass(CatalogError, ValueError)


def test_search_text_has_title_category_attributes_and_short_description():
    text = Product.from_dict(record()).search_text()
    assert text.startswith("Harbor Fleece Hoodie — Black")
    assert "Men > Tops > Hoodies" in text and "color: Black" in text and "size: S, M, L" in text
    assert len(text) < 500


# --- Catalog -------------------------------------------------------------------------------------------------------


def get(catalog: Catalog, pid: str) -> Product:
    product = catalog.get(pid)
    assert product is not None, pid
    return product


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def variant_rows():
    parent = record(
        id="P1",
        type="configurable",
        price=None,
        title="Mona Pullover",
        images=["p1.jpg"],
        attributes={"available_color": ["Green", "Orange"], "available_size": ["S", "M"]},
    )
    variants = [
        record(
            id=f"P1-{s}-{c}",
            parent_id="P1",
            type="variant",
            title=f"Mona Pullover-{s}-{c}",
            price=price,
            attributes={"color": c, "size": s},
            images=[],
        )
        for s, c, price in (("S", "Green", 57.0), ("M", "Orange", 52.0))
    ]
    return [parent, *variants, record(id="S1", images=["images/s1.jpg"])]


def test_load_jsonl_groups_variants_and_prices_parents(tmp_path):
    catalog = Catalog.load_jsonl(write_jsonl(tmp_path / "products.jsonl", variant_rows()))
    assert len(catalog) == 4
    assert {p.id for p in catalog.parents()} == {"P1", "S1"}
    assert {v.id for v in catalog.variants_of("P1")} == {"P1-S-Green", "P1-M-Orange"}
    assert catalog.variants_of("S1") == []
    assert get(catalog, "P1").price == 52.0  # missing parent price = cheapest variant
    assert catalog.get("nope") is None and "S1" in catalog


def test_image_path_bare_and_prefixed_names(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("p1.jpg", "s1.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / name)
    catalog = Catalog.load_jsonl(write_jsonl(tmp_path / "products.jsonl", variant_rows()))
    assert catalog.image_path(get(catalog, "P1")) == tmp_path / "images" / "p1.jpg"
    assert catalog.image_path(get(catalog, "S1")) == tmp_path / "images" / "s1.jpg"
    assert (
        catalog.image_path(get(catalog, "P1-S-Green")) == tmp_path / "images" / "p1.jpg"
    )  # parent's picture
    assert Catalog(catalog, image_root=None).image_path(get(catalog, "S1")) is None


def test_load_jsonl_reports_line_and_field(tmp_path):
    rows = [record(id="A"), record(id="B", currency="dollars")]
    with pytest.raises(CatalogError, match=r"products.jsonl:2: currency"):
        Catalog.load_jsonl(write_jsonl(tmp_path / "products.jsonl", rows))
    with pytest.raises(CatalogError, match=r"products.jsonl:1: price"):
        Catalog.load_jsonl(write_jsonl(tmp_path / "products.jsonl", [record(id="A", price="cheap")]))
    (tmp_path / "bad.jsonl").write_text('{"id": "A"\n')
    with pytest.raises(CatalogError, match="bad.jsonl:1: invalid JSON"):
        Catalog.load_jsonl(tmp_path / "bad.jsonl")


def test_duplicate_ids_rejected():
    p = Product.from_dict(record())
    with pytest.raises(CatalogError, match="duplicate"):
        Catalog([p, p], image_root=None)


def test_content_hash_is_order_independent_and_content_sensitive():
    a, b = Product.from_dict(record(id="A")), Product.from_dict(record(id="B"))
    h = Catalog([a, b]).content_hash()
    assert h == Catalog([b, a]).content_hash() and len(h) == 64
    cheaper = Product.from_dict(record(id="B", price=10.0))
    assert Catalog([a, cheaper]).content_hash() != h


# --- demo catalog --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return generate_demo_catalog(tmp_path_factory.mktemp("demo")).parent


def test_demo_catalog_size_and_variety(demo_dir):
    catalog = Catalog.load_jsonl(demo_dir / "products.jsonl")
    shoppable = catalog.parents()
    assert len(shoppable) >= 240
    assert len({p.leaf_category for p in shoppable}) >= 8
    assert len({p.brand for p in shoppable}) >= 4
    assert len({c for p in shoppable for c in p.colors()}) >= 12
    black_hoodies = [p for p in shoppable if p.leaf_category == "Hoodies" and "Black" in p.colors()]
    assert any(p.price < 50 for p in black_hoodies) and any(p.price > 50 for p in black_hoodies)
    assert len([p for p in shoppable if p.leaf_category == "Running Shoes" and "Red" in p.colors()]) >= 3
    for p in shoppable:
        assert p.currency == "USD" and round(p.price % 1, 2) in (0.0, 0.99)
        assert p.description.count(".") >= 2 and p.brand
        assert {"color", "material", "gender"} <= set(p.attributes)


def test_demo_catalog_images_exist_and_open(demo_dir):
    catalog = Catalog.load_jsonl(demo_dir / "products.jsonl")
    for p in catalog:
        path = catalog.image_path(p)
        assert path is not None, p.id
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (256, 256)


def test_demo_catalog_is_deterministic(demo_dir, tmp_path):
    again = generate_demo_catalog(tmp_path / "again")
    assert again.read_bytes() == (demo_dir / "products.jsonl").read_bytes()
    assert (tmp_path / "again/images/HD01-BLACK.png").read_bytes() == (
        demo_dir / "images/HD01-BLACK.png"
    ).read_bytes()
    other = generate_demo_catalog(tmp_path / "other", seed=8)
    assert other.read_bytes() != again.read_bytes()


def test_ensure_demo_catalog_generates_once(tmp_path):
    path = ensure_demo_catalog(tmp_path)
    assert path == tmp_path / "demo-catalog" / "products.jsonl" and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert ensure_demo_catalog(tmp_path) == path and path.stat().st_mtime_ns == mtime


# --- the real Luma catalog -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not LUMA.is_file(), reason="Luma dev catalog not present")
def test_luma_catalog_loads_with_variants_grouped():
    catalog = Catalog.load_jsonl(LUMA)
    assert len(catalog) > 1000
    parents = catalog.parents()
    assert 100 < len(parents) < 200
    assert all(p.parent_id is None for p in parents)
    variants = catalog.variants_of("WH01")
    assert len(variants) == 15 and all(v.parent_id == "WH01" for v in variants)
    assert {"Green", "Orange", "Purple"} == {c for v in variants for c in v.colors()}
    assert get(catalog, "24-WG085_Group").price > 0  # grouped product priced from its members
    assert get(catalog, "24-WG080").price > 0  # bundle priced from its options
    assert sum(len(catalog.variants_of(p.id)) for p in parents) == sum(1 for p in catalog if p.parent_id)
    with_images = [p for p in parents if catalog.image_path(p) is not None]
    assert len(with_images) >= 0.9 * len(parents)
    assert catalog.image_path(variants[0]) is not None
