import hashlib
import re

import numpy as np
import pytest

from assistant.catalog.demo import generate_demo_catalog
from assistant.catalog.model import Catalog, Product
from assistant.replies.grounding import GroundingError, ProductFact, assert_grounded, check_grounding
from assistant.replies.templates import compose_reply, reply_facts
from assistant.search.query import ProductHit, SearchQuery, parse_query
from assistant.search.retrieval import EmbeddingSearcher


class HashEncoder:
    """A fast stand-in for MiniLM: hashed bag of words, L2-normalised (words shared with the query score high)."""

    dim = 64
    model_path = "hash-encoder"
    name = "hash-encoder"

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z]+", text.lower()):
            v[int(hashlib.md5(word.rstrip("s").encode()).hexdigest(), 16) % self.dim] += 1.0
        return v / (np.linalg.norm(v) or 1.0)

    def encode(self, texts):
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_query(self, text):
        return self._vec(text)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    catalog = Catalog.load_jsonl(generate_demo_catalog(tmp_path_factory.mktemp("demo")))
    return EmbeddingSearcher(catalog, HashEncoder(), min_score=0.0)  # type: ignore[arg-type]


def product(
    pid: str, title: str, price: float, color: str = "Black", category: str = "Men/Tops/Hoodies"
) -> Product:
    return Product.from_dict(
        {
            "id": pid,
            "title": title,
            "price": price,
            "currency": "USD",
            "category": category,
            "attributes": {"color": color, "size": ["S", "M"]},
        }
    )


HOODIES = [
    ProductHit(product("A", "Harbor Fleece Hoodie — Black", 39.99), 0.7, ""),
    ProductHit(product("B", "Ridge Zip Hoodie — Black", 44.0), 0.6, ""),
    ProductHit(product("C", "Cove Pullover Hoodie — Black", 47.5), 0.5, ""),
    ProductHit(product("D", "Metro Heavyweight Hoodie — Black", 49.0), 0.4, ""),
]
QUERY = parse_query("black hoodie under fifty dollars")


def test_compose_reply_names_at_most_three_with_their_prices():
    reply = compose_reply(QUERY, HOODIES)
    first, rest = reply.split(". ", 1)
    assert len(first.split()) <= 10 and "four black hoodies under $50" in first
    for hit in HOODIES[:3]:
        assert hit.product.title.split(" — ")[0] in rest
    assert "Metro" not in reply
    assert "$39.99" in reply and "$44" in reply and "$47.50" in reply
    assert check_grounding(reply, reply_facts(HOODIES), query=QUERY) == []


def test_a_category_with_no_plural_is_not_counted_as_one():
    gear = [ProductHit(product(p, f"Gym Thing {p}", 10.0, category="Gear/Fitness Equipment"), 0.5, "") for p in "XY"]
    reply = compose_reply(parse_query("gym stuff"), gear)
    assert "two fitness equipment" not in reply.lower() and "two options" in reply.lower(), reply


def test_compose_reply_single_and_none():
    one = compose_reply(QUERY, HOODIES[:1])
    assert one.startswith("I found one match") and "Harbor Fleece Hoodie is $39.99" in one
    none = compose_reply(QUERY, [])
    assert none.startswith("Sorry") and "$50" in none and "price limit" in none
    assert check_grounding(none, [], query=QUERY) == []
    assert "Sorry" in compose_reply(SearchQuery("pink moon boots", color="pink", size="9"), [])


def test_compose_reply_is_deterministic_and_varied():
    queries = [SearchQuery(f"hoodie number {i}") for i in range(12)]
    replies = [compose_reply(q, HOODIES[:3]) for q in queries]
    assert replies == [compose_reply(q, HOODIES[:3]) for q in queries]
    assert len({r.split()[0] + r.split()[1] for r in replies}) > 1  # more than one opening
    assert len({r.split(". ", 1)[1][:12] for r in replies}) > 1  # more than one listing style


def test_grounding_catches_invented_price():
    facts = reply_facts(HOODIES)
    bad = "I found three black hoodies under $50. The Harbor Fleece Hoodie is $29.99."
    assert any("$29.99" in v for v in check_grounding(bad, facts, query=QUERY))
    worded = "The Harbor Fleece Hoodie is twenty nine dollars."
    assert any("29" in v for v in check_grounding(worded, facts))
    assert (
        check_grounding("The Harbor Fleece Hoodie is thirty nine dollars and ninety nine cents.", facts) == []
        or check_grounding("The Harbor Fleece Hoodie is 39.99 dollars.", facts) == []
    )
    assert check_grounding("Anything under $50?", facts) != []  # a limit is only allowed with its query
    assert check_grounding("Anything under $50?", facts, query=QUERY) == []


def test_grounding_catches_invented_product_name():
    facts = reply_facts(HOODIES)
    for bad in (
        "I found two hoodies. The Summit Alpine Parka is $39.99.",
        "There's the Harbor Fleece Hoodie at $39.99 and the Zephyr at $44.",
        'Try the "Cloud Nine Hoodie" at $44.',
        "The Harbor Zip Hoodie is $44.",  # a mash-up of two real names is still invented
    ):
        violations = check_grounding(bad, facts, query=QUERY)
        assert any(v.startswith("product") for v in violations), bad
    assert check_grounding("The Ridge Zip Hoodie is $44.", facts) == []


def test_grounding_catches_invented_colour():
    facts = reply_facts(HOODIES)
    assert any("purple" in v for v in check_grounding("The Ridge Zip Hoodie in purple is $44.", facts))
    assert check_grounding("The Ridge Zip Hoodie in black is $44.", facts) == []
    pink_query = SearchQuery("hoodie", color="pink")
    assert check_grounding("No luck in pink.", [], query=pink_query) == []


def test_assert_grounded_raises():
    with pytest.raises(GroundingError) as info:
        assert_grounded("The Summit Alpine Parka is $12.", reply_facts(HOODIES))
    assert len(info.value.violations) == 2 and isinstance(info.value, ValueError)
    assert_grounded(compose_reply(QUERY, HOODIES), reply_facts(HOODIES), query=QUERY)


def test_product_fact_from_variant_hit():
    parent = product("P", "Mona Pullover Hoodlie", 57.0)
    variant = Product.from_dict(
        {
            "id": "P-M-Green",
            "parent_id": "P",
            "title": "Mona Pullover Hoodlie-M-Green",
            "price": 52.0,
            "currency": "USD",
            "attributes": {"color": "Green", "size": "M"},
        }
    )
    fact = ProductFact.from_hit(ProductHit(parent, 0.5, "", variant))
    assert (fact.id, fact.title, fact.price, fact.color, fact.size) == (
        "P-M-Green",
        "Mona Pullover Hoodlie",
        52.0,
        "Green",
        "M",
    )


QUERIES = [
    "black hoodie under fifty dollars",
    "red running shoes",
    "white sneakers size nine and a half",
    "cheap backpack under 40",
    "noise cancelling headphones",
    "a green hoodie in medium",
    "jeans between 40 and 80",
    "waterproof jacket over one hundred dollars",
    "wool hat",
    "socks",
    "a water bottle under twenty dollars",
    "a red dress in small",
    "brown boots size 10",
    "blue t-shirt under 20 bucks",
    "navy jacket",
    "purple headphones",
    "pink sneakers under forty nine dollars",
    "grey backpack",
    "yellow socks size large",
    "beige dress under 200",
    "orange running shoes size 11",
    "something for the gym",
    "black jeans size 32",
]


@pytest.mark.parametrize("text", QUERIES)
def test_compose_reply_output_is_grounded_on_demo_catalog(searcher, text):
    query = parse_query(text)
    hits = searcher.search(query)
    reply = compose_reply(query, hits)
    assert check_grounding(reply, reply_facts(hits), query=query) == [], reply
    assert len(reply.split(". ", 1)[0].split()) <= 14
    assert reply.count("$") - reply.split(". ", 1)[0].count("$") <= 3  # at most three products priced


def test_near_misses_are_never_counted_or_named_as_fitting():
    query = parse_query("blue hoodie under fifty dollars")
    exact = ProductHit(product("A", "Harbor Fleece Hoodie", 39.99, color="Blue"), 0.7, "")
    grey = ProductHit(product("B", "Ridge Zip Hoodie", 44.0, color="Grey"), 0.6, "", near_miss=("colour",))
    pricey = ProductHit(product("C", "Cove Pullover Hoodie", 59.0, color="Blue"), 0.5, "", near_miss=("price",))
    reply = compose_reply(query, [exact, grey, pricey])
    assert reply.startswith("I found one match in blue under $50.")
    assert "The Harbor Fleece Hoodie is $39.99." in reply
    assert "Ridge" not in reply and "Cove" not in reply  # named only when nothing fits
    assert reply.endswith("I also have two close matches that are not in blue under $50.")
    assert [f.id for f in reply_facts([exact, grey, pricey])] == ["A"]

    only_near = compose_reply(query, [grey, pricey])
    assert only_near.startswith("I couldn't find that in blue under $50. The closest are ")
    assert "the Ridge Zip Hoodie in grey at $44" in only_near  # its own colour, never "in blue"
    assert "the Cove Pullover Hoodie in blue at $59" in only_near  # blue, but over the limit: said at its price
    assert not check_grounding(only_near, reply_facts([grey, pricey]), query=query)
    one = compose_reply(query, [grey])
    assert one == "I couldn't find that in blue. The closest is the Ridge Zip Hoodie in grey at $44."
