"""LLMReranker / RankedSearcher: fast tests on the tiny-random ranker, one integration test on the trained one."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.catalog.model import Catalog, Product
from assistant.catalog.view import CatalogView
from assistant.core.signals import SessionSignals
from assistant.search.query import SearchQuery, parse_query
from assistant.search.rerank import LLMReranker, RankedSearcher, product_dict, single_thread
from ranking.ranker import FEATURE_NAMES
from ranking.registry import create_ranker
from tests.fakes import KeywordSearcher, make_products

COL = {name: j for j, name in enumerate(FEATURE_NAMES)}


class CountingRanker:
    """Wraps a ranker and counts the product texts it is asked to encode."""

    def __init__(self, ranker: object) -> None:
        self.inner = ranker
        self.encoded: list[str] = []

    def encode_products(self, texts: list[str]) -> np.ndarray:
        self.encoded += list(texts)
        return self.inner.encode_products(texts)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> object:
    return create_ranker("tiny-random", cache_dir=tmp_path_factory.mktemp("rk"), device="cpu")


@pytest.fixture
def searcher() -> KeywordSearcher:
    return KeywordSearcher()


def test_product_dict_collects_variant_colours() -> None:
    parent = Product.from_dict({
        "id": "c1", "parent_id": None, "type": "configurable", "title": "Tee", "description": "", "category": "Tops",
        "categories": ["Tops"], "brand": None, "price": 20.0, "currency": "USD", "attributes": {}, "images": [],
    })
    variants = [
        Product.from_dict({
            "id": f"c1-{c}", "parent_id": "c1", "type": "variant", "title": f"Tee {c}", "description": "",
            "category": "Tops", "categories": ["Tops"], "brand": None, "price": price, "currency": "USD",
            "attributes": {"color": c, "size": "M"}, "images": [],
        })
        for c, price in (("Red", 18.0), ("Blue", 22.0))
    ]
    catalog = Catalog([parent, *variants])
    d = product_dict(catalog, parent)
    assert d["attributes"]["colors"] == ["Red", "Blue"]
    assert d["attributes"]["sizes"] == ["M"]
    assert d["price"] == 18.0
    assert product_dict(catalog, parent, variants[1])["price"] == 22.0


def test_vectors_precomputed_and_update_encodes_only_changes(tiny: object, searcher: KeywordSearcher) -> None:
    counting = CountingRanker(tiny)
    reranker = LLMReranker(counting, searcher.catalog)
    assert len(counting.encoded) == 4
    counting.encoded.clear()
    products = make_products()
    products[0] = replace(products[0], title="Harbor Fleece Hoodie v2")
    new = Product.from_dict({**products[1].to_dict(), "id": "p9", "title": "Brand New Hoodie"})
    stats = reranker.update(Catalog([*products[:3], new]))  # p4 removed, p1 changed, p9 added
    assert stats == {"encoded": 2, "removed": 1}
    assert len(counting.encoded) == 2


def test_rerank_features_and_reasons(tiny: object, searcher: KeywordSearcher) -> None:
    reranker = LLMReranker(tiny, searcher.catalog)
    query = parse_query("black hoodie under 50 dollars")
    hits = searcher.search(replace(query, k=10))
    assert hits
    signals = SessionSignals(liked={"p2"}, disliked={"p1"}, friends_bought={"p2": 3}, recency={"p2": 0.5})
    feats = reranker.features(query, hits, signals)
    assert feats.shape == (len(hits), len(FEATURE_NAMES))
    row = {h.product.id: i for i, h in enumerate(hits)}
    assert feats[row["p1"], COL["disliked"]] == 1.0
    assert feats[row["p2"], COL["liked"]] == 1.0
    assert feats[row["p2"], COL["friends_bought"]] == pytest.approx(np.log1p(3))
    assert feats[row["p1"], COL["colour_match"]] == 1.0
    assert feats[:, COL["price_ok"]].min() == 1.0
    assert feats[0, COL["retrieval_rank_recip"]] == 1.0
    ranked = reranker.rerank(query, hits, signals)
    assert sorted(h.product.id for h in ranked) == sorted(h.product.id for h in hits)
    assert [h.score for h in ranked] == sorted((h.score for h in ranked), reverse=True)
    assert all(h.reason for h in ranked)
    assert reranker.rerank(query, []) == []
    assert {h.product.id for h in reranker.rerank_text("black hoodie", hits)} == {h.product.id for h in hits}


def test_ranked_searcher_pool_bypass_and_passthroughs(tiny: object, searcher: KeywordSearcher) -> None:
    asked: list[int] = []
    original = searcher.search

    def spy(query: SearchQuery) -> list:
        asked.append(query.k)
        return original(query)

    searcher.search = spy  # type: ignore[method-assign]
    ranked = RankedSearcher(searcher, LLMReranker(tiny, searcher.catalog, pool=7))
    hits = ranked.search(SearchQuery(text="black hoodie", k=2))
    assert asked == [7] and len(hits) == 2
    plain = ranked.search(SearchQuery(text="black hoodie", k=2), use_ranker=False)
    assert asked[-1] == 2
    assert [h.product.id for h in plain] == [h.product.id for h in original(SearchQuery(text="black hoodie", k=2))]
    assert ranked.search(SearchQuery(text="black hoodie", k=0)) == []
    assert ranked.vocab is None  # KeywordSearcher has none; a HybridRetriever's is passed through


def test_image_vectors_are_passed(tiny: object, searcher: KeywordSearcher) -> None:
    seen: list[list[str]] = []

    def images(ids: list[str]) -> np.ndarray:
        seen.append(ids)
        return np.zeros((len(ids), 16), np.float32)

    reranker = LLMReranker(tiny, searcher.catalog, image_vectors=images)
    hits = searcher.search(SearchQuery(text="hoodie", k=10))
    reranker.rerank(SearchQuery(text="hoodie", k=10), hits)
    assert sorted(seen[0]) == sorted(h.product.id for h in hits)


def test_single_thread_restores() -> None:
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# --- the trained checkpoint over the demo catalog ---------------------------------------------------------------

MAIN_DATA = Path(__file__).resolve().parents[1] / ".data"
CHECKPOINT = Path(os.environ.get("SHOPTALK_RANKER_CHECKPOINT", MAIN_DATA / "models" / "ranker" / "smollm2-lora.pt"))


@pytest.mark.real_model
def test_trained_ranker_over_demo_catalog(tmp_path: Path, smollm2_dir: Path) -> None:
    """This checkout's trained ranker, else the shipped default checkpoint (trained on the demo catalog)."""
    from ranking.registry import shipped_checkpoint

    checkpoint = CHECKPOINT if CHECKPOINT.exists() else shipped_checkpoint("smollm2-lora")
    if checkpoint is None:
        pytest.skip(f"no trained ranker at {CHECKPOINT} and none shipped")
    from assistant.catalog.demo import generate_demo_catalog
    from assistant.search.retrieval import HybridRetriever
    from ranking.text_encoder import TextEncoder

    catalog = Catalog.load_jsonl(generate_demo_catalog(tmp_path / "catalog"))
    retriever = HybridRetriever(catalog, TextEncoder(device="cpu"))
    ranker = create_ranker("smollm2-lora", cache_dir=smollm2_dir.parent, checkpoint=checkpoint, device="cpu")
    searcher = RankedSearcher(retriever, LLMReranker(ranker, catalog))
    query = replace(parse_query("black hoodie under 60 dollars", retriever.vocab), k=8)
    assert query.color == "black" and query.max_price == 60
    for use_ranker in (True, False):
        hits = searcher.search(query, use_ranker=use_ranker)
        fits = [h for h in hits if not h.near_miss]
        assert fits and hits[: len(fits)] == fits  # close matches, if any, only after every black one under $60
        for hit in hits:
            colours = {c.lower() for c in (hit.variant or hit.product).colors()}
            assert (hit.price > 60) == ("price" in hit.near_miss)
            assert ("black" not in colours) == ("colour" in hit.near_miss)
    base = searcher.search(query)
    assert len(base) >= 2
    victim = base[0].product.id
    after = searcher.search(query, signals=SessionSignals(disliked={victim}))
    ids = [h.product.id for h in after]
    assert victim not in ids or ids.index(victim) > 0


def _search_app(tmp_path: Path, searcher: object) -> object:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from assistant.runtime.session import Engines
    from assistant.runtime.turn import Brain
    from assistant.runtime.uploads import ImageStore
    from server.engines import App
    from server.routes import search as search_routes
    from server.settings import Settings
    from tests.fakes import EnergyVAD, FakeSTT, FakeTTS

    tts = FakeTTS()
    images = ImageStore(tmp_path / "uploads")
    engines = Engines(stt=FakeSTT(), brain=Brain(searcher, tts, images=images), vad_factory=EnergyVAD)  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(search_routes.router)
    app.state.shoptalk = App(settings=Settings(data_dir=tmp_path), engines=engines,
                             view=CatalogView(searcher.catalog), searcher=searcher, tts=tts, images=images)  # type: ignore[attr-defined]
    return TestClient(app)


def test_search_route_ranker_field(tmp_path: Path, tiny: object, searcher: KeywordSearcher) -> None:
    ranked = RankedSearcher(searcher, LLMReranker(tiny, searcher.catalog))
    client = _search_app(tmp_path, ranked)
    for name in (None, "none", "smollm2-lora"):
        r = client.post("/v1/search", json={"text": "black hoodie", "k": 2, **({"ranker": name} if name else {})})
        assert r.status_code == 200, r.text
        assert len(r.json()["products"]) == 2
    plain = client.post("/v1/search", json={"text": "black hoodie", "k": 2, "ranker": "none"}).json()["products"]
    assert [p["reason"] for p in plain] == ["keyword match"] * 2  # the retriever's own ranking and reasons
    assert [p["near_miss"] for p in plain] == [[], []]  # both meet the query
    bad = client.post("/v1/search", json={"text": "black hoodie", "ranker": "bogus"})
    assert bad.status_code == 400 and "none" in bad.text and "smollm2-lora" in bad.text
    # retrieval-only server: only "none" is valid
    client = _search_app(tmp_path, KeywordSearcher())
    assert client.post("/v1/search", json={"text": "hoodie", "ranker": "none"}).status_code == 200
    r = client.post("/v1/search", json={"text": "hoodie", "ranker": "smollm2-lora"})
    assert r.status_code == 400 and "none" in r.text


def test_build_ranked_needs_a_checkpoint(tmp_path: Path, tiny: object, searcher: KeywordSearcher) -> None:
    from assistant.search.retrieval import NearMissSearcher
    from server.engines import build_ranked
    from server.settings import Settings

    def plain(built: object) -> bool:  # retrieval alone (with its near misses, the default)
        return isinstance(built, NearMissSearcher) and built.retriever is searcher

    settings = Settings(data_dir=tmp_path, ranker="tiny-random", serve_ranker=True, device="cpu")
    assert plain(build_ranked(settings, searcher.catalog, searcher))  # type: ignore[arg-type]
    # Trained but switched off: retrieval alone.
    off = Settings(data_dir=tmp_path, ranker="tiny-random", device="cpu", serve_ranker=False)
    assert plain(build_ranked(Settings(data_dir=tmp_path, ranker="none"), searcher.catalog, searcher))  # type: ignore[arg-type]
    no_near = Settings(data_dir=tmp_path, ranker="none", near_misses=False)
    assert build_ranked(no_near, searcher.catalog, searcher) is searcher  # type: ignore[arg-type]
    settings.ranker_checkpoint_path.parent.mkdir(parents=True)
    tiny.save(settings.ranker_checkpoint_path)  # type: ignore[attr-defined]
    assert plain(build_ranked(off, searcher.catalog, searcher))  # type: ignore[arg-type]
    ranked = build_ranked(settings, searcher.catalog, searcher)  # type: ignore[arg-type]
    assert isinstance(ranked, RankedSearcher) and ranked.near_misses
    assert ranked.retrieval_weight == settings.ranker_retrieval_weight == 1.0  # fused with retrieval's order
    assert len(ranked.search(SearchQuery(text="black hoodie", k=2))) == 2


def test_the_ranker_is_served_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from server.settings import Settings

    monkeypatch.delenv("SHOPTALK_SERVE_RANKER", raising=False)  # the test suite switches it off for speed
    monkeypatch.delenv("SHOPTALK_RANKER_RETRIEVAL_WEIGHT", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.serve_ranker and settings.ranker_enabled and settings.ranker_retrieval_weight > 0


def test_fusing_the_rankers_order_with_the_retrievals() -> None:
    from assistant.search.query import ProductHit
    from assistant.search.rerank import fuse_orders

    products = make_products()
    retrieved = [ProductHit(p, 1.0, "retrieval") for p in products]  # p1, p2, p3, p4
    ranker = [retrieved[i] for i in (3, 2, 1, 0)]  # the ranker reverses it
    ids = lambda hits: [h.product.id for h in hits]  # noqa: E731
    assert ids(fuse_orders(ranker, retrieved, 0.0)) == ids(ranker)
    assert ids(fuse_orders(ranker, retrieved, 10.0)) == ids(retrieved)  # the retrieval's order holds
    agree = fuse_orders(retrieved, retrieved, 1.0)
    assert ids(agree) == ids(retrieved)  # where both agree, nothing moves
    moved = fuse_orders([retrieved[1], retrieved[0], retrieved[2], retrieved[3]], retrieved, 1.0)
    assert set(ids(moved[:2])) == {"p1", "p2"} and ids(moved[2:]) == ["p3", "p4"]  # a swap stays a local change


def test_cli_ranker_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from server.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["ranker", "--help"]).exit_code == 0
    assert "train" in runner.invoke(app, ["ranker", "--help"]).output
    r = runner.invoke(app, ["ranker", "eval", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["search", "--data-dir", str(tmp_path), "--text", "hoodie", "--ranker", "bogus"])
    assert r.exit_code == 2


def test_cli_search_offers_near_misses(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from server.cli import app

    runner = CliRunner()
    args = ["search", "--data-dir", str(tmp_path), "--text", "hoodie in yellow", "--k", "5"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    def products(output: str) -> list[dict]:
        (line,) = [x for x in output.splitlines() if '{"products"' in x]  # stderr's progress bars share the line
        return json.loads(line[line.index('{"products"') :])["products"]  # type: ignore[no-any-return]

    rows = products(r.output)
    assert len(rows) == 5
    fits = [p for p in rows if not p["near_miss"]]
    assert fits and rows[: len(fits)] == fits and all(p["near_miss"] == ["colour"] for p in rows[len(fits) :])
    off = runner.invoke(app, [*args, "--json"], env={"SHOPTALK_NEAR_MISSES": "0"})
    assert [p["id"] for p in products(off.output)] == [p["id"] for p in fits]
    text = runner.invoke(app, args).output
    assert text.count("[close match: not the asked colour]") == len(rows) - len(fits)


def test_cli_ranker_train_and_eval_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from server.cli import app

    monkeypatch.setenv("SHOPTALK_RANKER", "tiny-random")
    runner = CliRunner()
    r = runner.invoke(app, ["ranker", "train", "--data-dir", str(tmp_path), "--queries", "40", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "models" / "ranker" / "tiny-random.pt").exists()
    r = runner.invoke(app, ["ranker", "eval", "--data-dir", str(tmp_path), "--queries", "40"])
    assert r.exit_code == 0, r.output
    assert "trained" in r.output and "untrained" in r.output


def test_an_unprepared_ranker_is_built_in_the_background(tmp_path: Path, tiny: object, searcher: KeywordSearcher,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from assistant.search.retrieval import NearMissSearcher
    from server.background import BackgroundWorker
    from server.engines import App, build_ranked
    from server.settings import Settings

    settings = Settings(data_dir=tmp_path, ranker="tiny-random", serve_ranker=True, device="cpu", background=True)
    settings.ranker_checkpoint_path.parent.mkdir(parents=True)
    tiny.save(settings.ranker_checkpoint_path)  # type: ignore[attr-defined]
    monkeypatch.setattr("server.engines.ranker_prepared", lambda s: False)  # as if SmolLM2 were not dequantized yet
    plain = build_ranked(settings, searcher.catalog, searcher, prepare=False)  # type: ignore[arg-type]
    assert isinstance(plain, NearMissSearcher)  # the server answers with retrieval alone meanwhile
    brain = SimpleNamespace(searcher=plain, dialogue=None)
    app = App(settings=settings, engines=SimpleNamespace(brain=brain), view=CatalogView(searcher.catalog),  # type: ignore[arg-type]
              searcher=plain, tts=None, images=None, retriever=searcher)  # type: ignore[arg-type]
    app.background = BackgroundWorker()
    app.improve()
    assert app.background.wait_idle(60)
    assert [(t["task"], t["state"]) for t in app.background.snapshot()] == [("ranker-prepare", "done")]
    assert isinstance(app.searcher, RankedSearcher) and brain.searcher is app.searcher
    assert len(app.searcher.search(SearchQuery(text="black hoodie", k=2))) == 2
    app.background.close()


def test_a_request_for_complements_keeps_the_retrievals_order_but_for_the_shoppers_signals(
    tiny: object, searcher: KeywordSearcher
) -> None:
    """The ranker never learnt requests for complements: only what the shopper and their friends did moves a hit,
    and its words are matched on what is asked, not on what it goes with."""
    from assistant.search.rerank import ranked_view

    reranker = LLMReranker(tiny, searcher.catalog)
    query = replace(parse_query("a hoodie to go with the black jeans"), k=10)
    assert query.goes_with == "black jeans"
    assert ranked_view(query).text == "a hoodie to"
    assert ranked_view(parse_query("black hoodie")).text == "black hoodie"
    hits = searcher.search(replace(query, goes_with=None))
    assert len(hits) >= 3
    plain = reranker.rerank(query, hits, signals_only=True)
    assert [h.product.id for h in plain] == [h.product.id for h in hits]
    last = hits[-1].product.id
    weights = tiny.head.feature_weights  # type: ignore[attr-defined]
    saved = weights.data.clone()
    try:
        weights.data[COL["liked"]] = 2.0  # as training learns it; the untrained head starts at 0
        weights.data[COL["retrieval_rank_recip"]] = -5.0  # the head's other terms do not move a hit here
        liked = reranker.rerank(query, hits, SessionSignals(liked={last}), signals_only=True)
    finally:
        weights.data.copy_(saved)
    assert liked[0].product.id == last and liked[0].reason == "you liked it before"
    assert [h.product.id for h in liked[1:]] == [h.product.id for h in hits[:-1]]
