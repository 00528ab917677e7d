import os
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.catalog.demo import BACKGROUND, COLORS, generate_demo_catalog  # noqa: E402
from assistant.catalog.model import Catalog, Product  # noqa: E402
from assistant.search.query import (  # noqa: E402
    QueryVocab,
    SearchQuery,
    canonical_color,
    canonical_size,
    parse_query,
)
from assistant.search.retrieval import EmbeddingSearcher, HybridRetriever, product_genders  # noqa: E402
from ranking.fusion import reciprocal_rank_fusion  # noqa: E402
from ranking.lexical import BM25Index, Tokenizer  # noqa: E402
from tests.fakes import count_encodes
from tests.shared_data import LUMA_DIR  # noqa: E402

LUMA = LUMA_DIR / "products.jsonl"


# --- fusion --------------------------------------------------------------------------------------------------------


def test_rrf_hand_worked():
    # k = 60. lexical ranks a=1, b=2; text ranks b=1, c=2.
    #   a: 1/61            = 0.016393
    #   b: 1/62 + 1/61     = 0.016129 + 0.016393 = 0.032522
    #   c: 1/62            = 0.016129
    hits = reciprocal_rank_fusion({"lexical": [("a", 9.0), ("b", 4.0)], "text": [("b", 0.8), ("c", 0.7)]})
    assert [h.id for h in hits] == ["b", "a", "c"]
    assert [h.score for h in hits] == pytest.approx([1 / 62 + 1 / 61, 1 / 61, 1 / 62])
    assert hits[0].ranks == {"lexical": 2, "text": 1} and hits[0].scores == {"lexical": 4.0, "text": 0.8}


def test_rrf_weights_and_k():
    # k = 1, text weight 3: a = 1/(1+1) = 0.5; b = 3/(1+1) = 1.5; c = 3/(1+2) = 1.0.
    hits = reciprocal_rank_fusion(
        {"lexical": [("a", 1.0)], "text": [("b", 1.0), ("c", 0.5)]}, weights={"text": 3.0}, k=1
    )
    assert [(h.id, h.score) for h in hits] == [("b", 1.5), ("c", 1.0), ("a", 0.5)]
    # Ties (a and b both 1/61) go to the better best rank, then the id; a repeated id counts at its best rank.
    tied = reciprocal_rank_fusion({"x": [("b", 1.0), ("b", 0.5)], "y": [("a", 1.0)]})
    assert [h.id for h in tied] == ["a", "b"] and tied[1].ranks == {"x": 1}
    assert reciprocal_rank_fusion({}) == []


# --- BM25 ----------------------------------------------------------------------------------------------------------


def test_tokenizer_lowercases_stems_and_drops_stopwords():
    tokens = Tokenizer()("The Black HOODIES for running")
    assert "the" not in tokens and "for" not in tokens
    assert tokens[0] == "black" and Tokenizer()("hoodie") == [tokens[1]]  # "hoodies" and "hoodie" meet
    assert Tokenizer("plural")("dresses shoes") == ["dress", "shoe"]


def test_bm25_search_allowed_save_load(tmp_path):
    index = BM25Index()
    index.build(
        ["h1", "h2", "s1", "e"],
        ["black fleece hoodie", "grey zip hoodie with pockets", "red running shoes", ""],
    )
    hits = index.search("black hoodies", 10)
    assert [i for i, _ in hits] == ["h1", "h2"]  # h1 matches both words; s1 shares none and is never listed
    assert hits[0][1] > hits[1][1] > 0
    assert [i for i, _ in index.search("hoodie", 10, allowed={"h2", "s1"})] == ["h2"]
    assert index.search("unknownword", 5) == [] and index.search("hoodie", 0) == []
    index.save(tmp_path / "bm25")
    index.save(tmp_path / "bm25")  # replacing an existing index works
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.ids == index.ids and loaded.search("black hoodies", 10) == hits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]
    with pytest.raises(ValueError):
        BM25Index.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="unique"):
        index.build(["a", "a"], ["x", "y"])


# --- query parsing with a catalog vocabulary -----------------------------------------------------------------------


def demo_products() -> list[Product]:
    def p(pid: str, category: str, brand: str, gender: str | None = None) -> Product:
        attrs = {"gender": gender} if gender else {}
        return Product.from_dict(
            dict(id=pid, title=pid, price=10, category=category, brand=brand, attributes=attrs)
        )

    return [
        p("h", "Men/Tops/Hoodies", "Harbor & Pine"),
        p("r", "Women/Shoes/Running Shoes", "Northvale"),
        p("b", "Accessories/Bags/Backpacks", "Kestrel", "Unisex"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mens black hoodie", dict(text="black hoodie", gender="men", color="black", category="hoodie")),
        ("men's hoodie", dict(gender="men", category="hoodie")),
        ("running shoes for women under 80", dict(text="running shoes", gender="women", max_price=80.0)),
        ("a ladies backpack", dict(gender="women", category="backpack")),
        ("kids sneakers", dict(gender="kids", text="sneakers", category=None)),
        ("Harbor & Pine hoodie", dict(brand="Harbor & Pine", text="hoodie", category="hoodie")),
        ("northvale running shoes size 9", dict(brand="Northvale", size="9", category="running shoe")),
        ("a manhattan bag", dict(gender=None, category="bag")),
    ],
)
def test_parse_category_brand_gender(text, expected):
    q = parse_query(text, QueryVocab.from_products(demo_products()))
    for key, value in expected.items():
        assert getattr(q, key) == value, (key, q)


def test_vocab_and_genders():
    vocab = QueryVocab.from_products(demo_products())
    assert "men" not in vocab.category_terms  # departments are the gender filter, not a category
    assert vocab.categories_for("running shoe") == {"Women/Shoes/Running Shoes"}
    assert vocab.categories_for("Men/Tops") == {"Men/Tops/Hoodies"}
    assert parse_query("Harbor & Pine hoodie").brand is None  # no vocabulary, no brands
    genders = [product_genders(p) for p in demo_products()]
    assert genders == [frozenset({"men"}), frozenset({"women"}), frozenset()]


# --- HybridRetriever on the demo catalog, real MiniLM, a fake image encoder ------------------------------------------


class FakeImageEncoder:
    """Image-text encoder stand-in: a photo is its mean foreground colour plus a 4x4 silhouette; text is a colour."""

    name = "fake-colour-shape"
    model_key = name
    dim = 19
    aligned = True

    def __init__(self) -> None:
        self.files_encoded = 0

    def _vec(self, rgb: np.ndarray | None, grid: np.ndarray | None) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        if rgb is not None:
            v[:3] = 2.0 * (rgb / 255.0 - 0.5)
        if grid is not None:
            v[3:] = grid.ravel()
        return v / (np.linalg.norm(v) or 1.0)

    def encode_image(self, images, normalize=True):
        out = []
        for image in images:
            px = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
            fg = np.abs(px - np.array(BACKGROUND, dtype=np.float32)).sum(-1) > 30  # [64, 64]
            rgb = px[fg].mean(0) if fg.any() else None
            grid = fg.reshape(4, 16, 4, 16).mean((1, 3))
            out.append(self._vec(rgb, grid))
        return np.stack(out)

    def encode_image_files(self, paths, cache=None):
        self.files_encoded += len(paths)
        return self.encode_image([Image.open(p) for p in paths])

    def encode_text(self, texts, normalize=True):
        out = []
        for text in texts:
            words = [w for w in COLORS if w.lower() in text.lower().split()]
            out.append(self._vec(np.array(COLORS[words[0]], dtype=np.float32) if words else None, None))
        return np.stack(out)


@pytest.fixture(scope="module")
def encoder():
    from ranking.text_encoder import TextEncoder

    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return generate_demo_catalog(tmp_path_factory.mktemp("demo") / "catalog")


@pytest.fixture(scope="module")
def hybrid(demo_dir, encoder, tmp_path_factory):
    catalog = Catalog.load_jsonl(demo_dir)
    cache = tmp_path_factory.mktemp("cache")
    return HybridRetriever(catalog, encoder, image_encoder=FakeImageEncoder(), cache_dir=cache)


def assert_filters_hold(hit, q: SearchQuery, retriever: HybridRetriever) -> None:
    chosen = hit.variant or hit.product
    assert q.max_price is None or hit.price <= q.max_price, (q, hit.product.id, hit.price)
    assert q.min_price is None or hit.price >= q.min_price, (q, hit.product.id, hit.price)
    assert q.color is None or q.color in {canonical_color(c) for c in chosen.colors()}, (q, hit.product.id)
    assert q.size is None or q.size in {canonical_size(s) for s in chosen.sizes()}, (q, hit.product.id)
    assert q.brand is None or hit.product.brand == q.brand
    genders = product_genders(hit.product)
    assert q.gender is None or not genders or q.gender in genders, (q, hit.product.id)


@pytest.mark.real_model
def test_sources_in_use(hybrid):
    assert hybrid.sources == ("lexical", "text", "passage", "image")
    assert len(hybrid.passages) == len(hybrid.catalog.parents())  # every product has a sentence to match
    assert hybrid.image_index is not None and len(hybrid.image_index) == len(hybrid.catalog.parents())


@pytest.mark.real_model
def test_black_hoodie_under_fifty(hybrid):
    hits = hybrid.search(parse_query("black hoodie under fifty dollars", hybrid.vocab))
    assert len(hits) >= 2
    for hit in hits:
        assert hit.product.leaf_category == "Hoodies" and "Black" in hit.product.colors()
        assert hit.price <= 50.0
    assert "black" in hits[0].reason and "under your $50 limit" in hits[0].reason
    assert "words" in hits[0].reason and "meaning" in hits[0].reason
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.real_model
def test_filters_are_never_violated(hybrid):
    # Property-style: random categories with random price ranges, colours, sizes, genders and brands.
    rng = random.Random(7)
    nouns = [
        "hoodie",
        "t-shirt",
        "jacket",
        "jeans",
        "running shoes",
        "sneakers",
        "boots",
        "backpack",
        "hat",
        "socks",
    ]
    colours = [c.lower() for c in COLORS]
    sizes = ["XS", "S", "M", "L", "XL", "9", "9.5", "32"]
    brands = sorted({p.brand for p in hybrid.catalog if p.brand})

    def maybe(p, values):
        return rng.choice(values) if rng.random() < p else None

    checked = 0
    for _ in range(80):
        lo = maybe(0.3, [20.0, 40.0, 60.0])
        hi = maybe(0.6, [30.0, 50.0, 75.0, 120.0])
        q = SearchQuery(
            rng.choice(nouns),
            k=rng.choice([3, 5, 10]),
            min_price=lo,
            max_price=hi if lo is None or hi is None or hi > lo else None,
            color=maybe(0.4, colours),
            size=maybe(0.3, sizes),
            gender=maybe(0.3, ["men", "women", "kids"]),
            brand=maybe(0.15, brands),
        )
        hits = hybrid.search(q)
        assert len(hits) <= q.k and len({h.product.id for h in hits}) == len(hits)
        for hit in hits:
            assert_filters_hold(hit, q, hybrid)
            checked += 1
    assert checked > 60  # the constraints leave plenty of results to check


@pytest.mark.real_model
def test_spoken_filters_are_hard(hybrid):
    for text in [
        "jacket under 100",
        "headphones between 50 and 150 dollars",
        "white sneakers size nine and a half",
        "green hoodie in medium over 40",
        "womens running shoes under 90",
        "mens boots",
    ]:
        q = replace(parse_query(text, hybrid.vocab), k=10)
        hits = hybrid.search(q)
        assert hits, text
        for hit in hits:
            assert_filters_hold(hit, q, hybrid)
    men = hybrid.search(parse_query("mens boots", hybrid.vocab))
    assert men and all(h.product.category == "Men/Shoes/Boots" for h in men)


@pytest.mark.real_model
def test_category_and_brand_filters(hybrid):
    brand = hybrid.catalog.get("HD01-BLACK").brand
    hits = hybrid.search(SearchQuery("something warm", k=10, brand=brand, category="hoodie"))
    assert hits and all(h.product.brand == brand and h.product.leaf_category == "Hoodies" for h in hits)
    assert (
        hybrid.search(SearchQuery("hoodie", category="surfboard")) == []
    )  # an unknown category matches nothing
    spoken = parse_query(f"{brand} hoodie", hybrid.vocab)
    assert spoken.brand == brand and all(h.product.brand == brand for h in hybrid.search(spoken))


@pytest.mark.real_model
def test_unrelated_query_returns_nothing(hybrid):
    assert hybrid.search(SearchQuery("quantum chromodynamics lecture notes")) == []


@pytest.mark.real_model
def test_photo_alone_and_photo_plus_words(hybrid):
    path = hybrid.catalog.image_path(hybrid.catalog.get("HD05-BROWN"))
    photo = hybrid.image_encoder.encode_image_files([path])[0]
    alone = hybrid.search_image(photo)
    assert alone[0].product.id == "HD05-BROWN" and "looks like your photo" in alone[0].reason

    q = parse_query("like this but in blue, under $40", hybrid.vocab)
    assert q.color == "blue" and q.max_price == 40.0
    hits = hybrid.search_image(photo, replace(q, k=5))
    assert hits
    for hit in hits:
        assert_filters_hold(hit, q, hybrid)
    assert hits[0].product.leaf_category == "Hoodies"  # the blue item that looks most like the brown hoodie
    assert "looks like your photo" in hits[0].reason and "under your $40 limit" in hits[0].reason


@pytest.mark.real_model
def test_update_reencodes_only_changes(demo_dir, encoder, tmp_path, monkeypatch):
    catalog = Catalog.load_jsonl(demo_dir)
    retriever = HybridRetriever(catalog, encoder, cache_dir=tmp_path)
    records = [p.to_dict() for p in catalog]
    by_id = {r["id"]: r for r in records}
    by_id["HD01-BLACK"]["price"] = 999.0  # changed
    del by_id["HD02-BLACK"]  # removed
    added = dict(by_id["HD03-BLACK"], id="HD99-BLACK", title="Brand New Hoodie — Black")
    by_id["HD99-BLACK"] = added
    new_catalog = Catalog([Product.from_dict(r) for r in by_id.values()], image_root=catalog.image_root)

    encoded = count_encodes(encoder, monkeypatch)
    assert retriever.update(new_catalog) == {"added": 1, "changed": 1, "removed": 1}
    assert len(encoded) == 1 and encoded[0].startswith(
        "Brand New Hoodie"
    )  # a price change keeps the text vector
    hits = retriever.search(SearchQuery("black hoodie", k=20, max_price=100))
    ids = {h.product.id for h in hits}
    assert "HD02-BLACK" not in ids and "HD01-BLACK" not in ids and "HD99-BLACK" in ids
    assert any(h.product.id == "HD01-BLACK" for h in retriever.search(SearchQuery("black hoodie", k=20)))

    # The updated index is what a fresh retriever loads from the cache: nothing is encoded again.
    encoded.clear()
    again = HybridRetriever(new_catalog, encoder, cache_dir=tmp_path)
    assert encoded == [] and set(again.index.ids) == set(retriever.index.ids)
    assert [p.name for p in tmp_path.glob("text-index-*.npz")] == [
        f"text-index-{new_catalog.content_hash()}.npz"
    ]


@pytest.mark.real_model
def test_embedding_searcher_is_text_only(demo_dir, encoder):
    searcher = EmbeddingSearcher(Catalog.load_jsonl(demo_dir), encoder)
    assert searcher.sources == ("text",)
    hits = searcher.search(parse_query("red running shoes"))
    assert hits[0].product.leaf_category == "Running Shoes" and 0.2 < hits[0].score <= 1.0  # a cosine


@pytest.mark.real_model
@pytest.mark.skipif(not LUMA.is_file(), reason="Luma dev catalog not present")
def test_luma_department_and_variant(encoder):
    retriever = HybridRetriever(Catalog.load_jsonl(LUMA), encoder)
    hits = retriever.search(parse_query("womens purple hoodie", retriever.vocab))
    assert hits
    for hit in hits:
        assert "Hoodies" in hit.product.category and hit.product.category.startswith("Women/")
        assert hit.variant is not None and hit.variant.colors() == ["Purple"]
    grey = retriever.search(parse_query("grey hoodie for women in medium", retriever.vocab))
    assert grey and all(h.variant is not None and h.variant.colors() == ["Gray"] for h in grey)
    assert all(h.variant is not None and h.variant.sizes() == ["M"] for h in grey)
    # Luma-dev sells women's clothing only, and none of its hoodies comes in black: a men's request finds nothing
    # rather than a women's hoodie.
    assert retriever.search(parse_query("mens black hoodie", retriever.vocab)) == []
    assert retriever.search(parse_query("mens hoodie", retriever.vocab)) == []


def test_spoken_category_aliases() -> None:
    """"t shirts", "sweat shirt", "hoody": how shoppers say (and ASR writes) the catalog's category words."""

    def product(pid: str, category: str) -> Product:
        return Product.from_dict({"id": pid, "title": pid, "category": category, "categories": [category],
                                  "price": 20.0, "currency": "USD", "attributes": {}, "images": []})

    vocab = QueryVocab.from_products([product("t1", "Women/Tops/Tees"), product("h1", "Women/Tops/Hoodies & Sweatshirts")])
    for said, term in (("womens t shirts", "t shirt"), ("a tee shirt", "tee shirt"), ("a sweat shirt", "sweat shirt"),
                       ("a zip hoody", "hoody")):
        q = parse_query(said, vocab)
        assert q.category == term, (said, q)
    assert vocab.categories_for("t shirt") == {"Women/Tops/Tees"}
    assert vocab.categories_for("sweat shirt") == vocab.categories_for("sweatshirt") == {"Women/Tops/Hoodies & Sweatshirts"}
    # An alias is only added for a term the catalog has: no tees, no "t shirt".
    assert "t shirt" not in QueryVocab.from_products([product("h1", "Women/Tops/Hoodies")]).category_terms
