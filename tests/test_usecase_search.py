"""#18: use-case requests matched at the grain descriptions are written, and requests for what goes with a product.

Unit tests with a hashed bag-of-words encoder; the tests marked ``real_model`` run the packaged MiniLM.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from assistant.catalog.model import Catalog, Product
from assistant.search.complements import GOES_WITH, LAYERS_WITH, MERCHANT, Complements, load_table
from assistant.search.passages import PassageIndex, catalog_passages, product_passages
from assistant.search.query import complement_request, goes_with_split, parse_query, refers_back
from assistant.search.retrieval import HybridRetriever


def _product(pid: str, title: str, category: str, description: str, *, price: float = 40.0,
             colour: str = "Black", categories: tuple[str, ...] = (), **attributes: object) -> Product:
    return Product.from_dict({
        "id": pid, "parent_id": None, "type": "simple", "title": title, "description": description,
        "category": category, "categories": [category, *categories], "brand": None, "price": price,
        "currency": "USD", "attributes": {"color": colour, "size": ["S", "M", "L"], **attributes}, "images": [],
    })


def outdoor_catalog() -> Catalog:
    """A made-up merchant: its kinds, lines and words are nobody's real catalog."""
    return Catalog([
        _product("j1", "Ferrow Shell", "Women/Tops/Jackets", "A packable shell for wet days. Seams are taped so "
                 "rain stays out. Hood folds into the collar.", climate=["Rainy", "Windy"]),
        _product("j2", "Ostrel Down Jacket", "Women/Tops/Jackets", "Goose down traps heat on frozen mornings. "
                 "Keeps you warm well below freezing.", climate=["Cold"], price=120.0),
        _product("h1", "Quillon Hoodie", "Women/Tops/Hoodies", "A soft cotton hoodie for lazy weekends.",
                 colour="Gray", categories=("Collections/Weekend Edit",)),
        _product("t1", "Brisa Tee", "Women/Tops/Tees", "Wicks sweat during hard workouts. Light and breathable "
                 "for summer runs.", activity=["Running", "Gym"]),
        _product("p1", "Lander Jogger", "Women/Bottoms/Pants", "Relaxed joggers with a drawstring waist.",
                 colour="Gray", categories=("Collections/Weekend Edit",)),
        _product("s1", "Tamsin Short", "Women/Bottoms/Shorts", "Running shorts with a liner and a key pocket.",
                 activity=["Running"]),
        _product("b1", "Keld Duffel", "Gear/Bags", "Holds a week of gym kit and a yoga mat strap."),
        _product("w1", "Pacer Watch", "Gear/Watches", "Tracks your heart rate and pace on every run."),
    ])


class HashEncoder:
    """A stand-in for MiniLM: hashed bag of word stems, L2-normalised (shared words score high)."""

    dim = 256
    name = model_path = "hash-words"
    device = "cpu"

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z]+", text.lower()):
            v[int(hashlib.md5(word[:5].encode()).hexdigest(), 16) % self.dim] += 1.0
        return v / (np.linalg.norm(v) or 1.0)

    def encode(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self._vec(t) for t in texts]) if len(texts) else np.zeros((0, self.dim), np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self._vec(text)

    def encode_queries(self, texts):  # type: ignore[no-untyped-def]
        return self.encode(texts)


# --- passages ---------------------------------------------------------------------------------------------------


def test_passages_are_kind_prefixed_sentences_attribute_phrases_and_collections() -> None:
    catalog = outdoor_catalog()
    shell = product_passages(catalog.get("j1"))  # type: ignore[arg-type]
    assert "Jackets: Seams are taped so rain stays out." in shell
    assert "Jackets, climate: rainy, windy" in shell
    assert not any("color" in p or ": black" in p for p in shell)  # colour and size are filters, not uses
    hoodie = catalog_passages(catalog)["h1"]
    assert "Hoodies, collection: weekend edit" in hoodie
    assert all(len(p.split()) >= 3 for p in shell)


def test_passage_index_scores_a_product_by_its_best_passage() -> None:
    encoder = HashEncoder()
    index = PassageIndex(encoder.dim)
    index.build(catalog_passages(outdoor_catalog()), encoder.encode)
    hits = index.search(encoder.encode_query("something to keep warm below freezing"), n=3)
    assert hits[0][0] == "j2"
    assert [pid for pid, _ in index.search(encoder.encode_query("warm freezing"), n=5, allowed={"j1", "t1"})] \
        == sorted([pid for pid, _ in index.search(encoder.encode_query("warm freezing"), n=5, allowed={"j1", "t1"})],
                  key=lambda p: -dict(index.search(encoder.encode_query("warm freezing"), 8))[p])
    passage, score = index.best_passage(encoder.encode_query("keeps you warm below freezing"), "j2")  # type: ignore[misc]
    assert "freezing" in passage and score > 0.5


def test_retriever_finds_products_by_what_their_description_says(tmp_path: Path) -> None:
    retriever = HybridRetriever(outdoor_catalog(), HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    found = [h.product.id for h in retriever.search(parse_query("i need something for rain", retriever.vocab))]
    assert found and found[0] == "j1"
    assert "description" in retriever.search(parse_query("taped seams so rain stays out", retriever.vocab))[0].reason
    without = HybridRetriever(outdoor_catalog(), HashEncoder(), sources=("lexical", "text"))  # type: ignore[arg-type]
    assert len(without.passages) == 0


def test_an_update_reindexes_the_passages(tmp_path: Path) -> None:
    catalog = outdoor_catalog()
    retriever = HybridRetriever(catalog, HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    products = [p for p in catalog if p.id != "j1"] + [_product("j9", "Cinder Anorak", "Women/Tops/Jackets",
                                                                 "Sheds sleet and snow on winter hikes.")]
    retriever.update(Catalog(products))
    hits = retriever.search(parse_query("a jacket for sleet and snow", retriever.vocab))
    assert hits[0].product.id == "j9" and "j1" not in {h.product.id for h in hits}


# --- complements ------------------------------------------------------------------------------------------------


def test_complement_requests_split_into_what_is_asked_and_what_it_goes_with() -> None:
    assert goes_with_split("what goes well with a grey hoodie") == ("what", "grey hoodie")
    assert goes_with_split("shorts to go with this tank") == ("shorts to", "tank")
    assert goes_with_split("what sports bra should i wear under the nona tank")[1] == "nona tank"  # type: ignore[index]
    assert goes_with_split("what goes with it") is None and refers_back(complement_request("what goes with it")[1])  # type: ignore[index]
    assert goes_with_split("a bag for my yoga mat") is None and goes_with_split("black hoodies under 50") is None
    assert complement_request("a black tee that goes with everything") is None  # versatile, not a complement
    # what goes in a bag: "I got the duffel, what should I put in it" names the duffel
    assert complement_request("i got the keld duffel, what should i put in it") == ("what should i", "keld duffel")
    assert goes_with_split("something to pack in my gym bag") == ("something to", "gym bag")
    assert complement_request("a bag i can carry in my hand") is None
    # a yes/no question about the product on screen is not a request for complements
    assert complement_request("can i wear it over a sports bra?") is None
    # what it goes with ends at the clause: the colour and size after it are asked for
    assert complement_request("a tank top to go with the brisa tee, red too, in medium") == (
        "a tank top to red too, in medium", "brisa tee")
    # choosing is not asking what goes with it
    assert complement_request("should i go with the cheaper one or the other one") is None
    assert complement_request("i think i'll go with the blue one") is None
    assert complement_request("i love my nona leggings, what top should i get to go with them") == (
        "what top should i get to", "nona leggings")
    assert complement_request("what would go with a red dress") == ("what would", "red dress")
    catalog = outdoor_catalog()
    retriever = HybridRetriever(catalog, HashEncoder())  # type: ignore[arg-type]
    query = parse_query("gray shorts to go with the quillon hoodie under $60", retriever.vocab)
    assert query.goes_with == "quillon hoodie" and query.max_price == 60 and query.color == "grey"
    assert query.category is not None and "short" in query.category.lower()
    plain = parse_query("what goes with a gray hoodie", retriever.vocab)
    assert plain.goes_with == "gray hoodie" and plain.color is None and plain.category is None


def test_kinds_that_go_together_come_from_the_catalog_tree() -> None:
    kinds = Complements.from_catalog(outdoor_catalog())
    hoodie = kinds.for_category("Women/Tops/Hoodies")
    paths = [c.path for c in hoodie]
    assert paths[:2] == ["Women/Bottoms/Pants", "Women/Bottoms/Shorts"] or \
        set(paths[:2]) == {"Women/Bottoms/Pants", "Women/Bottoms/Shorts"}
    assert {c.reason for c in hoodie[:2]} == {GOES_WITH}
    assert "Women/Tops/Hoodies" not in paths and {"Women/Tops/Jackets", "Women/Tops/Tees"} <= set(paths)
    assert all(c.reason == LAYERS_WITH for c in hoodie if c.path.startswith("Women/Tops/"))
    assert [c.path for c in kinds.for_category("Gear/Bags")] == ["Gear/Watches"]


def test_the_merchants_table_overrides_the_tree(tmp_path: Path) -> None:
    (tmp_path / "complements.json").write_text(json.dumps({"hoodies": ["Shorts", "Gear/Bags"]}))
    kinds = Complements.from_catalog(outdoor_catalog(), tmp_path)
    assert [(c.path, c.reason) for c in kinds.for_category("Women/Tops/Hoodies")] == [
        ("Women/Bottoms/Shorts", MERCHANT), ("Gear/Bags", MERCHANT)]
    (tmp_path / "broken.json").write_text("{not json")
    assert load_table(tmp_path / "broken.json") is None and load_table(tmp_path / "absent.json") is None


def test_what_goes_with_a_product_is_never_its_own_kind(tmp_path: Path) -> None:
    retriever = HybridRetriever(outdoor_catalog(), HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    hits = retriever.search(replace(parse_query("what goes well with the quillon hoodie", retriever.vocab), k=5))
    assert hits and all(h.product.category != "Women/Tops/Hoodies" for h in hits)
    assert hits[0].product.id == "p1"  # same collection and colour: the jogger first
    assert hits[0].reason.startswith("goes with the Quillon Hoodie")
    asked = retriever.search(parse_query("shorts to go with the brisa tee", retriever.vocab))
    assert [h.product.id for h in asked] == ["s1"]
    assert "t1" not in {h.product.id for h in retriever.search(parse_query("what goes with the brisa tee",
                                                                          retriever.vocab))}


def test_the_named_products_words_do_not_rank_what_goes_with_it(tmp_path: Path) -> None:
    """The words naming what a product goes with name that product, not what is asked: a hoodie sharing the shell's
    name ranks as a layer by its likeness to the shell (the ``goes_with`` source), not by those words as well."""
    namesake = _product("h2", "Ferrow Shell Hoodie", "Women/Tops/Hoodies", "A soft knit hoodie.")
    retriever = HybridRetriever(Catalog([*outdoor_catalog(), namesake]), HashEncoder(),  # type: ignore[arg-type]
                                cache_dir=tmp_path)
    query = replace(parse_query("what goes with the ferrow shell", retriever.vocab), k=4)
    hits = retriever.search(query)
    assert hits[0].product.category == "Women/Bottoms/Pants"
    by_id = {h.product.id: h.reason for h in hits}
    assert by_id["h2"] == "layers with the Ferrow Shell; $40"  # offered as a layer; no word source matched it
    assert query.asked_text == "what"
    assert parse_query("what shorts go with the ferrow shell", retriever.vocab).asked_text == "what shorts"
    assert parse_query("a rain jacket", retriever.vocab).asked_text == "rain jacket"
    shorts = retriever.search(parse_query("shorts to go with the ferrow shell", retriever.vocab))
    assert [h.product.id for h in shorts] == ["s1"] and "by words" in shorts[0].reason  # "shorts" matched it


def test_gear_sold_by_measure_goes_with_its_own_kind(tmp_path: Path) -> None:
    """Balls of 55 and 65 cm are not clothes: a strap of their own kind goes with them (a hoodie does not go with a
    hoodie, because clothes come in sizes one wears)."""
    gear = [
        _product("g1", "Orba Ball 55 cm", "Gear/Fitness", "An exercise ball for core work.", size=["55 cm"]),
        _product("g2", "Orba Ball 65 cm", "Gear/Fitness", "An exercise ball for core work.", size=["65 cm"]),
        _product("g3", "Orba Strap", "Gear/Fitness", "A strap for deeper stretches after core work.", size=[]),
    ]
    catalog = Catalog([*outdoor_catalog(), *gear])
    retriever = HybridRetriever(catalog, HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    hits = retriever.search(replace(parse_query("what goes with the orba ball", retriever.vocab), k=3))
    assert "g3" in [h.product.id for h in hits]  # not the ball's own line, but its kind
    assert {"g1", "g2"}.isdisjoint(h.product.id for h in hits)
    hoodie = retriever.search(replace(parse_query("what goes with the quillon hoodie", retriever.vocab), k=8))
    assert all(h.product.category != "Women/Tops/Hoodies" for h in hoodie)


def test_what_goes_with_a_mens_product_is_for_men_or_anyone(tmp_path: Path) -> None:
    """A catalog whose tree has no departments says them in attributes: a men's hoodie goes with no dress."""
    catalog = Catalog([
        _product("mh", "Tarn Hoodie", "Clothing/Hoodies", "A fleece hoodie.", gender="Men"),
        _product("wd", "Lisle Dress", "Clothing/Dresses", "A jersey dress.", gender="Women"),
        _product("mj", "Corrie Jogger", "Clothing/Pants", "A fleece jogger.", gender="Men"),
        _product("us", "Pell Socks", "Clothing/Socks", "Wool socks.", size=["One Size"]),
    ])
    retriever = HybridRetriever(catalog, HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    hits = retriever.search(replace(parse_query("what goes with the tarn hoodie", retriever.vocab), k=5))
    assert {h.product.id for h in hits} == {"mj", "us"}
    asked = retriever.search(replace(parse_query("a dress to go with the tarn hoodie", retriever.vocab), k=5))
    assert "wd" not in {h.product.id for h in asked}  # the hoodie's department, unless the shopper says another
    hers = retriever.search(replace(parse_query("a women's dress to go with the tarn hoodie", retriever.vocab), k=5))
    assert [h.product.id for h in hers] == ["wd"]


def _conversation(tmp_path: Path) -> tuple[Any, Any, Any]:
    """A rules-only dialogue over the outdoor catalog, the turn's search, and a fresh conversation state."""
    from assistant.conversation.dialogue import Dialogue, DialogueState
    from assistant.conversation.intent import IntentRecognizer
    from assistant.runtime.turn import Brain

    catalog = outdoor_catalog()
    retriever = HybridRetriever(catalog, HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    dialogue = Dialogue(IntentRecognizer(mode="rules"), catalog=catalog)
    return dialogue, Brain(retriever, tts=None, dialogue=dialogue), DialogueState()


def test_what_goes_with_it_means_the_product_on_screen(tmp_path: Path) -> None:
    dialogue, brain, state = _conversation(tmp_path)
    first = dialogue.plan("show me the quillon hoodie", image_id=None, state=state, search=brain.search,
                          signals=None, k=3)
    assert first.hits and first.hits[0].product.id == "h1"
    then = dialogue.plan("what goes with it", image_id=None, state=state, search=brain.search, signals=None, k=3)
    assert then.hits and all(h.product.category != "Women/Tops/Hoodies" for h in then.hits)
    assert then.query is not None and then.query.goes_with == "Quillon Hoodie"
    # the reply names what they go with, and the grounding check knows it is the product on screen
    from assistant.replies.grounding import check_grounding

    first_hit = then.hits[0]
    reply = f"Here is one to go with the Quillon Hoodie: the {first_hit.product.title} at ${first_hit.price:.0f}."
    assert check_grounding(reply, then.facts, query=then.query) == []
    assert {f.title for f in then.facts} == {h.product.title for h in then.hits} | {"Quillon Hoodie"}


def test_the_server_reads_the_merchants_table_from_the_data_dir(tmp_path: Path) -> None:
    from server.engines import build_search
    from server.settings import Settings

    (tmp_path / "complements.json").write_text(json.dumps({"hoodies": ["Running Shoes"]}))
    catalog, retriever, _ = build_search(Settings(data_dir=tmp_path), vision=False)
    hoodie = next(p for p in catalog.parents() if p.leaf_category == "Hoodies")
    kinds = retriever.complements.for_category(hoodie.category)
    assert kinds and {c.reason for c in kinds} == {MERCHANT} and all("Running" in c.path for c in kinds)


def test_what_goes_with_the_second_one_on_screen(tmp_path: Path) -> None:
    dialogue, brain, state = _conversation(tmp_path)
    shown = dialogue.plan("show me jackets", image_id=None, state=state, search=brain.search, signals=None, k=3)
    assert len(shown.hits) >= 2
    second = shown.hits[1].product
    then = dialogue.plan("what goes with the second one", image_id=None, state=state, search=brain.search,
                         signals=None, k=3)
    assert then.query is not None and then.query.goes_with == second.title
    assert then.hits and all(h.product.category != second.category for h in then.hits)


# --- bought together ---------------------------------------------------------------------------------------------


def test_baskets_are_sessions_and_shop_orders_and_count_each_pair_once() -> None:
    from assistant.memory.bought_together import co_purchases
    from assistant.memory.store import Event

    events = [
        Event("h1", "purchase", 1.0, "s1", None), Event("w1", "add_to_cart", 2.0, "s1", None),
        Event("w1", "purchase", 3.0, "s1", None),  # the same pair again in one basket: still one basket
        Event("h1", "click", 4.0, "s2", None), Event("b1", "purchase", 5.0, "s2", None),  # a click buys nothing
        Event("h1", "purchase", 6.0, None, "ann"), Event("w1", "purchase", 7.0, None, "ann"),  # shop orders
        Event("s1", "purchase", 8.0, "s3", None),  # a basket of one pairs with nothing
    ]
    pairs = co_purchases(events)
    assert pairs["h1"] == {"w1": 2}
    assert pairs["w1"] == {"h1": 2}
    assert "b1" not in pairs and "s1" not in pairs


def test_what_shoppers_bought_together_ranks_first_with_its_reason(tmp_path: Path) -> None:
    from assistant.memory.bought_together import BoughtTogether
    from assistant.memory.store import SQLiteMemory

    memory = SQLiteMemory(tmp_path / "memory.sqlite")
    for _ in range(2):  # two shoppers bought the hoodie with the shorts
        session = memory.open_session()
        session.record_event("h1", "purchase")
        session.record_event("s1", "add_to_cart")
    now = [1000.0]
    together = BoughtTogether(memory, ttl_s=60, clock=lambda: now[0])
    retriever = HybridRetriever(outdoor_catalog(), HashEncoder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    query = replace(parse_query("what goes well with the quillon hoodie", retriever.vocab), k=5)
    before = retriever.search(query)
    assert before[0].product.id == "p1"  # same collection and colour: the jogger, as without shoppers
    retriever.co_purchases = together
    hits = retriever.search(query)
    assert [h.product.id for h in hits[:2]] == ["s1", "p1"]
    assert hits[0].reason.startswith("often bought with the Quillon Hoodie")
    assert hits[1].reason.startswith("goes with the Quillon Hoodie")
    assert "h1" not in {h.product.id for h in hits}
    # new baskets count once the counts are refreshed, not on every search
    for _ in range(3):
        session = memory.open_session()
        session.record_event("h1", "purchase")
        session.record_event("w1", "purchase")
    assert together.bought_with("h1") == {"s1": 2}
    now[0] += 61
    assert together.bought_with("h1") == {"w1": 3, "s1": 2}
    after = {h.product.id: (n, h.reason) for n, h in enumerate(retriever.search(query))}
    assert "w1" not in {h.product.id for h in hits}
    assert after["w1"][1].startswith("often bought with")  # one signal among the fused ones: into the top five
