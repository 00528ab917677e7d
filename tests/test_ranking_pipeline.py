"""The ranker's data and serving pipeline: spoken query generation and grades, LambdaRank, the retrieval prior,
first-stage features over a real hybrid retriever, feedback through the serving pool, and personalisation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.catalog.model import Catalog, Product
from assistant.core.signals import SessionSignals
from assistant.search.query import SearchQuery, parse_query
from assistant.search.rerank import LLMReranker, RankedSearcher, product_dict
from assistant.search.training import feedback_candidates, retrieval_examples
from ranking.queries import QuerySpec, category_terms, grade, is_heldout, number_words, spoken_queries
from ranking.ranker import FEATURE_NAMES, INIT_FEATURE_WEIGHTS, RETRIEVAL_FEATURES
from ranking.registry import create_ranker
from ranking.train import feedback_examples, lambda_loss, listnet_loss
from tests.fakes import KeywordSearcher

pytestmark = pytest.mark.usefixtures("torch_one_thread")

COL = {name: j for j, name in enumerate(FEATURE_NAMES)}


def _product(pid: str, title: str, category: str, price: float, colours: list[str], desc: str = "") -> dict:
    return {"id": pid, "title": title, "description": desc, "category": category, "price": price,
            "attributes": {"colors": colours, "sizes": ["XS", "S", "M"], "terms": []}}  # fmt: skip


PRODUCTS = [
    _product("h1", "Mona Pullover Hoodie", "Women/Tops/Hoodies & Sweatshirts", 57.0, ["Green", "Purple"],
             "A warm wool hoodie for yoga."),
    _product("h2", "Hera Pullover Hoodie", "Women/Tops/Hoodies & Sweatshirts", 48.0, ["Blue"], "Cosy for running."),
    _product("t1", "Layla Tee", "Women/Tops/Tees", 29.0, ["Green"], "A light tee for yoga and running."),
    _product("b1", "Voyage Yoga Bag", "Gear/Bags", 32.0, ["Black"], "Carries a yoga mat."),
    _product("b2", "Compete Track Tote", "Gear/Bags", 32.0, ["Black"], "A gym bag with a laptop pocket."),
]  # fmt: skip




def test_number_words_and_category_terms() -> None:
    assert number_words(68) == "sixty eight" and number_words(150) == "one hundred fifty"
    assert category_terms("Women/Tops/Hoodies & Sweatshirts")[:2] == ["hoodies", "hoodie"]
    assert "sweatshirt" in category_terms("Women/Tops/Hoodies & Sweatshirts")
    assert category_terms("Women/Bottoms/Pants") == ["pants"]


def test_grades_follow_the_spec() -> None:
    hoodies = {"Women/Tops/Hoodies & Sweatshirts"}
    spec = QuerySpec("attribute", categories=hoodies, related={"Women/Tops/Tees"}, colour="green")
    assert [grade(spec, p) for p in PRODUCTS] == [3, 1, 1, 0, 0]  # right item / wrong colour / related / other
    spec = QuerySpec("usecase", categories=hoodies, soft=["yoga"])
    assert [grade(spec, p) for p in PRODUCTS][:2] == [3, 2]
    spec = QuerySpec("product_line", categories=hoodies, line="mona")
    assert [grade(spec, p) for p in PRODUCTS][:2] == [3, 1]
    spec = QuerySpec("price", categories={"Gear/Bags"}, max_price=30.0)
    assert grade(spec, PRODUCTS[3]) == 1


def test_spoken_queries_are_graded_and_varied() -> None:
    queries = spoken_queries(PRODUCTS * 1, 60, seed=3)
    assert len(queries) >= 30
    assert len({q.text for q in queries}) == len(queries)
    assert len({q.spec.intent for q in queries}) >= 4
    for q in queries:
        assert any(g >= 2 for g in q.judgments.values()), q.text
        assert set(q.judgments) <= {p["id"] for p in PRODUCTS}
    assert spoken_queries(PRODUCTS, 20, seed=3)[0].text == queries[0].text  # deterministic
    assert is_heldout("show me hoodies") == is_heldout("  Show me hoodies ")


def test_requests_worded_from_what_descriptions_say() -> None:
    from ranking.queries import description_queries, description_requests

    shell = _product("j1", "Ferrow Shell", "Women/Tops/Jackets", 90.0, ["Black"],
                     "Keeps you dry on wet hikes. Perfect for rainy commutes, too. Hood folds away.")
    assert description_requests(shell, {"dry", "rainy", "hikes"}) == [
        ("that keeps you dry on wet hikes", ["dry", "hikes"]), ("for rainy commutes", ["rainy"])]
    assert description_requests(shell, set()) == []  # no use word and no rare word: nothing a shopper would ask
    catalog = [*PRODUCTS, shell, _product("j2", "Ostrel Down", "Women/Tops/Jackets", 120.0, ["Grey"],
                                          "Traps heat on frozen mornings. Made for cold commutes.")]
    queries = description_queries(catalog, 12, seed=1)
    assert queries and len({q.text for q in queries}) == len(queries)
    for q in queries:
        assert q.spec.soft and q.judgments[q.target] == 3, q.text  # the product that says it is a full match
    assert [q.text for q in description_queries(catalog, 12, seed=1)] == [q.text for q in queries]


def test_lambda_loss_prefers_the_right_order() -> None:
    labels = torch.tensor([[3.0, 1.0, 0.0, 2.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    good = lambda_loss(torch.tensor([[3.0, 1.0, 0.0, 2.0]]), labels, mask)
    bad = lambda_loss(torch.tensor([[0.0, 2.0, 3.0, 1.0]]), labels, mask)
    assert float(bad) > float(good) > 0
    flat = torch.zeros(1, 4)
    assert float(lambda_loss(flat, torch.zeros(1, 4), mask)) == 0.0  # nothing to order
    assert torch.isfinite(listnet_loss(flat, labels, mask))


def test_untrained_head_reproduces_retrieval_order(tmp_path: Path) -> None:
    ranker = create_ranker("tiny-random", cache_dir=tmp_path, device="cpu")
    searcher = KeywordSearcher()
    reranker = LLMReranker(ranker, searcher.catalog)
    query = SearchQuery(text="black hoodie", k=4)
    hits = searcher.search(query)
    assert len(hits) >= 3
    assert [h.product.id for h in reranker.rerank(query, hits)] == [h.product.id for h in hits]
    weights = ranker.head.feature_weights.detach().numpy()
    for name, value in INIT_FEATURE_WEIGHTS.items():
        assert weights[COL[name]] == value


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> RankedSearcher:
    from assistant.catalog.demo import generate_demo_catalog
    from assistant.search.retrieval import HybridRetriever
    from ranking.text_encoder import TextEncoder

    root = tmp_path_factory.mktemp("demo")
    catalog = Catalog.load_jsonl(generate_demo_catalog(root / "catalog"))
    retriever = HybridRetriever(catalog, TextEncoder(device="cpu"))
    ranker = create_ranker("tiny-random", cache_dir=root, device="cpu")
    return RankedSearcher(retriever, LLMReranker(ranker, catalog), pool=30)


def test_pool_widens_the_hybrid_with_first_stage_features(demo: RankedSearcher) -> None:
    query = replace(parse_query("something warm for the weekend", demo.vocab), k=5)
    hits = demo.retriever.search(replace(query, k=demo.pool))
    pool, feats = demo.candidates(query)
    assert [h.product.id for h in pool[: len(hits)]] == [h.product.id for h in hits]
    assert len(pool) == min(demo.pool, len(demo.retriever.candidates(query)))
    assert feats.shape == (len(pool), len(RETRIEVAL_FEATURES))
    returned = feats[:, COL["in_retrieval"]]
    assert returned[: len(hits)].all() and not returned[len(hits) :].any()
    assert (feats[:, COL["text_cosine"]] != 0).all()
    assert ((0 <= feats[:, COL["lexical_coverage"]]) & (feats[:, COL["lexical_coverage"]] <= 1)).all()
    # untrained: the served order is the hybrid's own
    assert [h.product.id for h in demo.search(query)] == [h.product.id for h in hits][:5]


def test_near_misses_follow_the_products_that_fit(demo: RankedSearcher) -> None:
    query = replace(parse_query("hoodie in yellow", demo.vocab), k=5)
    strict = demo.retriever.candidates(query)
    relaxed = demo.retriever.candidates(replace(query, color=None))
    assert 0 < len(strict) < 5 < len(relaxed)  # few yellow hoodies, many hoodies
    for use_ranker in (True, False):
        hits = demo.search(query, use_ranker=use_ranker)
        assert len(hits) == 5
        fits = [h for h in hits if not h.near_miss]
        assert {h.product.id for h in fits} <= set(strict) and len(fits) == len(strict)
        assert hits[: len(fits)] == fits  # everything that fits comes first
        for hit in hits[len(fits) :]:
            assert hit.near_miss == ("colour",)
            assert hit.product.id in relaxed and hit.product.id not in strict
    pool, feats = demo.candidates(query)
    near = np.array([bool(h.near_miss) for h in pool])
    assert near.any() and not feats[near, COL["in_retrieval"]].any()
    full = demo.reranker.features(query, pool, None, feats)
    assert not full[near, COL["colour_match"]].any() and full[~near, COL["colour_match"]].all()  # what they miss
    strict_only = RankedSearcher(demo.retriever, demo.reranker, pool=demo.pool, near_misses=False)
    assert [h.product.id for h in strict_only.search(query)] == [h.product.id for h in hits if not h.near_miss][:5]
    # a query every product can fail only on price, and one with nothing to relax
    cheap = replace(parse_query("hoodie under five dollars", demo.vocab), k=3)
    assert all(h.near_miss == ("price",) for h in demo.search(cheap))
    plain = replace(parse_query("hoodie", demo.vocab), k=5)
    assert not any(h.near_miss for h in demo.search(plain))


def test_bench_ceiling_is_an_upper_bound(demo: RankedSearcher) -> None:
    from bench.ranking import ceiling, ndcg_at_k

    query = replace(parse_query("hoodie in yellow", demo.vocab), k=10)
    yellow = set(demo.retriever.candidates(query))
    hoodies = set(demo.retriever.candidates(replace(query, color=None)))
    grades = {pid: 3 if pid in yellow else 1 for pid in hoodies}
    top = ceiling(demo, [{"query": "hoodie in yellow", "judgments": grades}])
    served = ndcg_at_k([h.product.id for h in demo.search(query)], grades)
    assert top["near_misses"] == pytest.approx(1.0)  # the yellow ones, then other hoodies: the ideal list
    assert top["pool"] < top["near_misses"] and served <= top["near_misses"] + 1e-9


def test_brain_says_near_misses_for_what_they_are(demo: RankedSearcher) -> None:
    import asyncio

    from assistant.core.frames import ProductResults, ResponseDone, UserTurn
    from assistant.replies.grounding import check_grounding, facts_from_hits
    from assistant.runtime.turn import Brain
    from assistant.search.retrieval import NearMissSearcher

    searcher = NearMissSearcher(demo.retriever)
    query = replace(parse_query("hoodie in yellow", demo.vocab), k=5)
    assert [h.product.id for h in searcher.search(query)] == [
        h.product.id for h in demo.search(query, use_ranker=False)
    ]
    brain = Brain(searcher, tts=None)

    async def go() -> list[object]:
        turn = UserTurn(item_id="i1", text="do you have a hoodie in yellow", wants_audio=False)
        return [f async for f in brain.respond(turn, "r1")]

    frames = asyncio.run(go())
    done = frames[-1]
    assert isinstance(done, ResponseDone) and done.status == "completed"
    (results,) = [f for f in frames if isinstance(f, ProductResults)]
    near = [h for h in results.hits if h.near_miss]
    assert near and all(h.near_miss == ("colour",) for h in near)
    fits = len(results.hits) - len(near)
    assert "close match" in done.text and "not in yellow" in done.text
    opening = done.text.split(".")[0]  # counts only the hoodies that are yellow
    assert ("one match" if fits == 1 else ("zero", "one", "two", "three", "four")[fits]) in opening
    assert not check_grounding(done.text, facts_from_hits(results.hits), query=query)


def test_training_examples_come_from_the_serving_pool(demo: RankedSearcher) -> None:
    products = [product_dict(demo.catalog, p) for p in demo.catalog.parents()]
    queries = spoken_queries(products, 12, seed=5)
    examples = retrieval_examples(demo, queries, seed=0)
    assert examples
    for ex in examples:
        assert ex.features.shape == (len(ex.labels), len(FEATURE_NAMES))
        assert ex.labels.max() > 0 and len(ex.product_texts) == len(ex.labels)
        query = replace(parse_query(ex.meta["text"], demo.vocab), k=demo.pool)
        pool, retrieval = demo.candidates(query)
        assert [h.product.id for h in pool] == ex.product_ids
        np.testing.assert_allclose(ex.features[:, : len(RETRIEVAL_FEATURES)], retrieval)


def test_feedback_examples_through_the_serving_pool(demo: RankedSearcher) -> None:
    products = [product_dict(demo.catalog, p) for p in demo.catalog.parents()]
    pool = [h.product.id for h in demo.search(replace(parse_query("black hoodie", demo.vocab), k=4))]
    events = [
        {"query": "black hoodie", "product_id": pool[1], "kind": "click"},
        {"query": "black hoodie", "product_id": pool[1], "kind": "purchase"},
        {"query": "black hoodie", "product_id": pool[0], "kind": "dislike"},
        {"query": "black hoodie", "product_id": "nope", "kind": "click"},
    ]
    (example,) = feedback_examples(events, products, candidates=feedback_candidates(demo))
    labels = dict(zip(example.product_ids, example.labels.tolist(), strict=True))
    assert labels[pool[1]] == 3 and labels[pool[0]] == 0
    assert example.features[:, COL["in_retrieval"]].any()


def _personal_reranker(tmp_path: Path) -> tuple[RankedSearcher, SearchQuery]:
    """A tiny ranker whose head learned the signs of the session signals (as training on simulated sessions does)."""
    ranker = create_ranker("tiny-random", cache_dir=tmp_path, device="cpu")
    with torch.no_grad():
        for name, w in (("liked", 2.5), ("viewed", 0.5), ("disliked", -4.0), ("friends_bought", 1.0)):
            ranker.head.feature_weights[COL[name]] = w
    searcher = KeywordSearcher()
    return RankedSearcher(searcher, LLMReranker(ranker, searcher.catalog)), SearchQuery(text="black hoodie", k=4)


def test_two_shoppers_get_different_sensible_orders(tmp_path: Path) -> None:
    searcher, query = _personal_reranker(tmp_path)
    base = [h.product.id for h in searcher.search(query)]
    last = base[-1]
    fan = SessionSignals(viewed={last}, liked={last})
    critic = SessionSignals(disliked={base[0]}, friends_bought={base[1]: 2})
    a = searcher.search(query, signals=fan)
    b = searcher.search(query, signals=critic)
    a_ids, b_ids = [h.product.id for h in a], [h.product.id for h in b]
    assert a_ids != b_ids
    assert a_ids[0] == last  # the liked item leads for the shopper who liked it
    assert b_ids[-1] == base[0]  # the disliked one sinks for the other
    assert "you liked it before" in a[0].reason
    assert b_ids[0] == base[1] and "friends bought it" in b[0].reason
    out = searcher.reranker.score(query, searcher.retriever.search(replace(query, k=50)), fan)
    row = [h.product.id for h in searcher.retriever.search(replace(query, k=50))].index(last)
    assert "liked" in [name for name, _ in out.top_reasons(row)]


def test_cli_ranker_train_with_feedback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from server.cli import app

    monkeypatch.setenv("SHOPTALK_RANKER", "tiny-random")
    catalog = tmp_path / "products.jsonl"
    rows = [p.to_dict() for p in KeywordSearcher().catalog]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(
        json.dumps({"query": "black hoodie", "product_id": "p2", "kind": "purchase"}) + "\nnot json\n"
        + json.dumps({"query": "black hoodie", "product_id": "p1", "kind": "dislike"}) + "\n"
    )
    out = tmp_path / "ranker.pt"
    args = ["ranker", "train", "--data-dir", str(tmp_path), "--queries", "30", "--epochs", "1",
            "--catalog", str(catalog), "--feedback", str(feedback), "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert out.exists()
    r = CliRunner().invoke(app, [*args[:-4], "--feedback", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2


def test_product_dict_keeps_attribute_terms() -> None:
    product = Product.from_dict({
        "id": "x", "parent_id": None, "type": "simple", "title": "Tote", "description": "", "category": "Gear/Bags",
        "categories": ["Gear/Bags"], "brand": None, "price": 10.0, "currency": "USD",
        "attributes": {"color": "Black", "activity": ["Yoga", "Gym"], "material": "Nylon"}, "images": [],
    })  # fmt: skip
    d = product_dict(None, product)
    assert {"Yoga", "Gym", "Nylon"} <= set(d["attributes"]["terms"])
    assert d["attributes"]["colors"] == ["Black"]


def test_simulated_sessions_make_labels_personal() -> None:
    import random

    from ranking.train import simulate_session

    rng = random.Random(0)
    feats = np.zeros((400, len(FEATURE_NAMES)), np.float32)
    labels = np.array([3, 2, 1, 0] * 100)
    simulate_session(feats, labels, rng, personal_labels=True)
    disliked = feats[:, COL["disliked"]] > 0
    liked = (feats[:, COL["liked"]] > 0) & ~disliked
    assert disliked.any() and (labels[disliked] == 0).all()
    assert liked.any() and (labels[liked] >= 1).any()
    plain = np.array([3, 2, 1, 0] * 100)
    simulate_session(np.zeros_like(feats), plain, random.Random(0))
    assert (plain == np.array([3, 2, 1, 0] * 100)).all()  # labels untouched by default
