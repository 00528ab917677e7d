import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.catalog.demo import generate_demo_catalog  # noqa: E402
from assistant.catalog.model import Catalog  # noqa: E402
from assistant.search.query import SearchQuery, parse_query, words_to_numbers  # noqa: E402
from assistant.search.retrieval import EmbeddingSearcher  # noqa: E402
from tests.shared_data import LUMA_DIR

LUMA = LUMA_DIR / "products.jsonl"


# --- parse_query ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("black hoodie under fifty dollars", dict(text="black hoodie", max_price=50.0, color="black")),
        ("Show me red running shoes under $50.", dict(text="red running shoes", max_price=50.0, color="red")),
        ("socks less than 40", dict(text="socks", max_price=40.0)),
        ("a backpack below 30 bucks", dict(text="backpack", max_price=30.0)),
        ("jeans between 20 and 40 dollars", dict(text="jeans", min_price=20.0, max_price=40.0)),
        ("headphones over 100", dict(text="headphones", min_price=100.0)),
        ("hoodie for under forty nine dollars", dict(text="hoodie", max_price=49.0)),
        ("a hoodie under forty-nine ninety nine", dict(text="hoodie", max_price=49.99)),
        ("jacket under one hundred and fifty dollars", dict(text="jacket", max_price=150.0)),
        ("boots under a thousand dollars", dict(text="boots", max_price=1000.0)),
        ("shoes under 49 dollars and 99 cents", dict(text="shoes", max_price=49.99)),
        ("I'm looking for a gray jacket", dict(text="gray jacket", color="grey")),
        ("navy blue hat", dict(color="navy")),
        ("size nine running shoes", dict(text="running shoes", size="9")),
        (
            "white sneakers size nine and a half please",
            dict(text="white sneakers", color="white", size="9.5"),
        ),
        ("size 10.5 sneakers", dict(size="10.5")),
        ("a hoodie in medium", dict(text="hoodie", size="M")),
        ("XL t-shirt", dict(size="XL")),
        ("extra large hoodie under $1,200", dict(text="hoodie", size="XL", max_price=1200.0)),
        ("large backpack", dict(text="large backpack", size=None)),  # "large" alone is not a size
        ("the red one", dict(text="red one", color="red", max_price=None)),
        # The amount first, as people say it.
        ("hoodies for fifty bucks or less", dict(text="hoodies", max_price=50.0)),
        ("a jacket 80 dollars or under", dict(text="jacket", max_price=80.0)),
        ("tees $25 max", dict(text="tees", max_price=25.0)),
        ("watches a hundred dollars and up", dict(text="watches", min_price=100.0)),
        ("bags at 40 dollars or more", dict(text="bags", min_price=40.0)),
        ("two or less hoodies", dict(max_price=None)),  # no money: not a price
        ("a hat 40 dollars or less", dict(text="hat", max_price=40.0)),  # "at" inside "hat" is not "at $40"
        # Sizes as shoppers say them in a conversation.
        ("the maxima drawstring short in a 31", dict(size="31", max_price=None)),  # a bare number after "in a"
        ("blue ones in a twenty nine please", dict(size="29", color="blue")),
        ("a bag in 2 colors", dict(size=None)),  # a count of something, not a size
        ("add it to my cart in gray, medium", dict(size="M", color="grey")),  # a size word after the colour
        ("a medium gray hoodie", dict(size=None, color="grey")),  # a shade, not a size
        ("nice, add a large in yellow to the cart", dict(size="L", color="yellow")),  # "a large": the size taken
        ("a large hoodie", dict(size=None)),
        ("plus size leggings in 3x", dict(size="XXXL")),  # plus sizes as written
        ("what about running shorts, men?", dict(gender=None)),  # addressing people is no department
        ("any hoodies guys", dict(gender=None)),
        ("watches for men", dict(gender="men")),
        ("show me men jackets", dict(gender="men")),
    ],
)
def test_parse_query(text, expected):
    q = parse_query(text)
    for key, value in expected.items():
        assert getattr(q, key) == value, (key, q)


def test_words_to_numbers():
    assert words_to_numbers("forty nine") == "49"
    assert words_to_numbers("two thousand five hundred and ten dollars") == "2510 dollars"
    assert words_to_numbers("Twenty-one") == "21"
    assert words_to_numbers("nine nine") == "9 9"  # two numbers, not 18


# --- real MiniLM search --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from ranking.text_encoder import TextEncoder

    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("demo")
    catalog = Catalog.load_jsonl(generate_demo_catalog(root / "catalog"))
    return EmbeddingSearcher(catalog, encoder, cache_dir=root / "cache")


@pytest.mark.real_model
def test_encoder_vectors_are_normalised(encoder):
    many = encoder.encode(["black hoodie", "red running shoes"])
    assert many.shape == (2, encoder.dim) and many.dtype == np.float32
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-4)
    one = encoder.encode_query("black hoodie")
    assert one.shape == (encoder.dim,) and float(one @ many[0]) > 0.999
    assert encoder.encode([]).shape == (0, encoder.dim)


@pytest.mark.real_model
def test_black_hoodie_under_fifty(demo):
    hits = demo.search(parse_query("black hoodie under fifty dollars"))
    assert len(hits) >= 2
    for hit in hits:
        assert hit.product.leaf_category == "Hoodies" and "Black" in hit.product.colors()
        assert hit.price <= 50.0
    assert "black" in hits[0].reason and "under your $50 limit" in hits[0].reason


@pytest.mark.real_model
def test_red_running_shoes_top_hit(demo):
    hits = demo.search(parse_query("red running shoes"))
    assert hits[0].product.leaf_category == "Running Shoes" and "Red" in hits[0].product.colors()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.real_model
@pytest.mark.parametrize(
    "text",
    [
        "jacket under 100",
        "headphones between 50 and 150 dollars",
        "something cheap under ten dollars",
        "white sneakers size nine and a half",
        "green hoodie in medium over 40",
        "water bottle under 5 dollars",
    ],
)
def test_filters_are_hard(demo, text):
    q = parse_query(text)
    for hit in demo.search(
        SearchQuery(q.text, k=10, max_price=q.max_price, min_price=q.min_price, color=q.color, size=q.size)
    ):
        assert q.max_price is None or hit.price <= q.max_price
        assert q.min_price is None or hit.price >= q.min_price
        assert q.color is None or q.color in {c.lower() for c in hit.product.colors()}
        assert q.size is None or q.size in hit.product.sizes()


@pytest.mark.real_model
def test_index_cache_is_reused(demo, encoder, monkeypatch):
    cache_dir = demo.catalog.image_root.parent / "cache"
    files = list(cache_dir.glob("text-index-*.npz"))
    assert [f.name for f in files] == [f"text-index-{demo.catalog.content_hash()}.npz"]
    monkeypatch.setattr(encoder, "encode", lambda texts: pytest.fail("index was rebuilt, not loaded"))
    again = EmbeddingSearcher(demo.catalog, encoder, cache_dir=cache_dir)
    assert again.index.ids == demo.index.ids
    assert np.array_equal(again.index.vectors("HD01-BLACK"), demo.index.vectors("HD01-BLACK"))
    q = parse_query("red running shoes")
    assert [h.product.id for h in again.search(q)] == [h.product.id for h in demo.search(q)]


@pytest.mark.real_model
@pytest.mark.skipif(not LUMA.is_file(), reason="Luma dev catalog not present")
def test_luma_variant_search(encoder):
    catalog = Catalog.load_jsonl(LUMA)
    searcher = EmbeddingSearcher(catalog, encoder)
    assert len(searcher.index) == len(catalog.parents())
    hits = searcher.search(parse_query("a green hoodie in medium"))
    assert hits
    for hit in hits:
        assert hit.variant is not None and hit.variant.parent_id == hit.product.id
        assert hit.variant.colors() == ["Green"] and hit.variant.sizes() == ["M"]
    assert "Hoodies" in hits[0].product.category
    assert searcher.search(parse_query("noise cancelling headphones")) == []  # nothing related in Luma


def test_a_size_said_on_its_own_in_a_terse_request() -> None:
    assert parse_query("hoodie. grey. M.", None).size == "M"
    assert parse_query("green, extra small, thanks", None).size == "XS"
    assert parse_query("i m fine", None).size is None  # a letter inside a sentence is no size


def test_a_waist_size_said_as_people_say_it() -> None:
    assert parse_query("she's a 31 waist, favourite colour red", None).size == "31"
    assert parse_query("shorts, waist 30", None).size == "30"
    assert parse_query("a 31 size please", None).size == "31"
