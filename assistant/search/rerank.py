"""Second-stage re-ranking of retrieval hits with the LLM ranker (`ranking.ranker.Ranker`).

`LLMReranker` keeps one product-tower vector per shoppable product (computed once, refreshed by `update`),
builds the `FEATURE_NAMES` per hit (the first stage's own signals, slot matches, the shopper's session signals),
scores and reorders the hits, and rewrites each hit's ``reason`` from the score's top contributions.
`RankedSearcher` puts it behind the `ProductSearcher` interface: a retriever's top ``pool`` candidates (for a
`HybridRetriever`, widened with the filtered products its relevance gate dropped, each with its BM25 and MiniLM
ranks and scores: `retrieval_features`), re-ranked. `retrieval_examples` / `training_examples` draw training data
through exactly this path, so the ranker trains on the pools and features it serves.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from assistant.catalog.model import Catalog, Product
from assistant.core.signals import SessionSignals
from assistant.search.complements import REASONS as COMPLEMENT_REASONS
from assistant.search.query import (
    ProductHit,
    ProductSearcher,
    QueryVocab,
    SearchQuery,
    canonical_color,
    canonical_size,
    parse_query,
    relaxed_query,
)
from assistant.search.retrieval import (
    HybridRetriever,
    lexical_text,
    mark_near_misses,
    product_genders,
    with_near_misses,
)
from ranking.features import product_text, slot_features
from ranking.ranker import (
    FEATURE_INDEX,
    NUM_FEATURES,
    RETRIEVAL_FEATURES,
    SIGNAL_FEATURES,
    Ranker,
    RankingModel,
    RankOutput,
    render_query,
)

log = logging.getLogger(__name__)

_COL = FEATURE_INDEX
_NON_TERM_KEYS = {"color", "colour", "size", "available_color", "available_size", "associated_sku", "bundle_options",
                  "gender"}  # fmt: skip
DEFAULT_POOL = 50
_THREADS_LOCK = threading.Lock()

ImageVectors = Callable[[list[str]], "np.ndarray | None"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (the ranker's tiny matmuls are far slower with more), then restore.

    ``torch.set_num_threads`` is process-wide, so concurrent callers are serialised by a lock.
    """
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def product_dict(catalog: Catalog | None, product: Product, variant: Product | None = None) -> dict[str, Any]:
    """A catalog product as the plain dict ``ranking.train`` works on (colours/sizes over its variants).

    With `variant`, the price is the variant's; otherwise the cheapest variant's (or the product's own).
    """
    variants = catalog.variants_of(product.id) if catalog is not None else []
    rows = [product, *variants]
    colors = list(dict.fromkeys(c for v in rows for c in v.colors()))
    sizes = list(dict.fromkeys(str(s) for v in rows for s in v.sizes()))
    if variant is not None:
        price = variant.price
    else:
        price = min([v.price for v in variants] or [product.price])
    terms = [
        str(value)
        for key, raw in product.attributes.items()
        if key not in _NON_TERM_KEYS
        for value in (raw if isinstance(raw, list | tuple) else [raw])
        if isinstance(value, str) and value.strip() and value.strip().lower() not in ("no", "yes")
    ]
    gender = sorted(product_genders(product))
    return {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "category": product.category,
        "brand": product.brand,
        "price": price,
        "attributes": {"colors": colors, "sizes": sizes, "terms": terms, "gender": gender},
    }


def query_slots(query: SearchQuery) -> dict[str, Any]:
    """The parsed query's slots under the names the ranker was trained with (absent ones left out)."""
    slots = {
        "colour": query.color,
        "size": query.size,
        "max_price": query.max_price,
        "category": query.category.rsplit("/", 1)[-1].lower() if query.category else None,
        "brand": query.brand,
    }
    return {k: v for k, v in slots.items() if v not in (None, "")}


def _reason_words(name: str, query: SearchQuery, hit: ProductHit) -> str | None:
    # a request for complements: what it goes with is the reason the words match (the retrieval says it)
    text = " ".join(query.text.split()) if query.goes_with is None else ""
    words = {
        "text_relevance": f"matches '{text}'" if text else None,
        "image_relevance": "looks like what you asked for",
        "retrieval_score": f"matches '{text}'" if text else None,
        "retrieval_rank_recip": f"matches '{text}'" if text else None,
        "in_retrieval": f"matches '{text}'" if text else None,
        "lexical_score": f"has the words '{text}'" if text else None,
        "lexical_rank_recip": f"has the words '{text}'" if text else None,
        "lexical_coverage": f"has the words '{text}'" if text else None,
        "text_cosine": f"means '{text}'" if text else None,
        "text_rank_recip": f"means '{text}'" if text else None,
        "colour_match": f"comes in {query.color}" if query.color else None,
        "size_match": f"in size {query.size}" if query.size else None,
        "category_match": f"is a {query.category}" if query.category else None,
        "brand_match": f"by {query.brand}" if query.brand else None,
        "price_ok": f"within ${query.max_price:.0f}" if query.max_price is not None else None,
        "viewed": "you looked at it before",
        "liked": "you liked it before",
        "bought": "you bought it before",
        "friends_bought": "friends bought it",
        "friends_liked": "friends liked it",
        "recency": "you saw it recently",
    }
    return words.get(name)


def basic_retrieval_features(hits: list[ProductHit]) -> np.ndarray:
    """First-stage features from hits alone: score over the best score, reciprocal rank, all returned."""
    feats = np.zeros((len(hits), len(RETRIEVAL_FEATURES)), np.float32)
    if not hits:
        return feats
    scores = np.array([h.score for h in hits], np.float32)
    top = float(scores.max())
    feats[:, _COL["retrieval_score"]] = scores / top if top > 0 else 0.0
    feats[:, _COL["retrieval_rank_recip"]] = 1.0 / (1.0 + np.arange(len(hits)))
    feats[:, _COL["in_retrieval"]] = 1.0
    return feats


def ranked_view(query: SearchQuery) -> SearchQuery:
    """What the ranker matches products against: for a request for complements, only what is asked.

    In "what shorts go with the bella tank" the ranker's text match would favour what looks like the tank, the
    opposite of the request; the retrieval's complement rankings order what goes with it, and the ranker adds what
    the asked words ("shorts") and the shopper's signals say.
    """
    return query if query.goes_with is None else replace(query, text=query.asked_text)


def retrieval_features(
    retriever: HybridRetriever,
    query: SearchQuery,
    hits: list[ProductHit],
    allowed: Mapping[str, Product | None],
    n: int,
    token_cache: dict[str, frozenset[str]],
) -> tuple[list[ProductHit], np.ndarray]:
    """Widen a `HybridRetriever`'s hits to at most `n` filtered candidates and give each its first-stage signals.

    Args:
        retriever: The `HybridRetriever` that returned `hits`.
        query: The parsed query.
        hits: Its hits for `query`, best first.
        allowed: Products passing the query's hard filters, each with its matching variant
            (``retriever.candidates(query)``).
        n: Pool size.
        token_cache: Product id -> BM25 tokens (filled here).

    Returns:
        The pool (hits first, then gated-out candidates by MiniLM cosine) and its ``[len(pool), R]`` features.
    """
    text = query.text.strip()
    ids = set(allowed)
    lexical: list[tuple[str, float]] = []
    cosine: list[tuple[str, float]] = []
    if text and ids:
        lexical = retriever.lexical.search(text, len(ids), allowed=ids)
        cosine = retriever.text_index.search(retriever.encoder.encode_query(text), len(ids), allowed=ids)
    returned = {h.product.id for h in hits}
    extra = [pid for pid, _ in cosine if pid not in returned][: max(0, n - len(hits))]
    pool = list(hits)
    for pid in extra:
        product = retriever.catalog.get(pid)
        if product is not None:
            pool.append(ProductHit(product, 0.0, "", allowed.get(pid)))
    feats = np.zeros((len(pool), len(RETRIEVAL_FEATURES)), np.float32)
    feats[: len(hits)] = basic_retrieval_features(hits)
    row = {h.product.id: i for i, h in enumerate(pool)}
    for source, ranked in (("lexical", lexical), ("text", cosine)):
        score_col = _COL["lexical_score" if source == "lexical" else "text_cosine"]
        top = max((s for _, s in ranked), default=0.0) if source == "lexical" else 1.0
        for rank, (pid, score) in enumerate(ranked):
            if pid in row:
                feats[row[pid], score_col] = score / top if top > 0 else 0.0
                feats[row[pid], _COL[f"{source}_rank_recip"]] = 1.0 / (1.0 + rank)
    q_tokens = set(retriever.lexical.tokenizer(text)) if text else set()
    if q_tokens:
        for i, hit in enumerate(pool):
            tokens = token_cache.get(hit.product.id)
            if tokens is None:
                tokens = frozenset(retriever.lexical.tokenizer(lexical_text(hit.product)))
                token_cache[hit.product.id] = tokens
            feats[i, _COL["lexical_coverage"]] = len(q_tokens & tokens) / len(q_tokens)
    return pool, feats


class LLMReranker:
    """Re-rank retrieval hits with a `Ranker`.

    Args:
        ranker: The trained ranker (``ranking.registry.create_ranker``).
        catalog: The catalog whose shoppable products get product vectors now.
        image_vectors: Product ids -> ``[n, ranker.config.image_dim]`` image embeddings (zero rows: no image),
            or None (no image term).
        pool: Retrieval candidates a `RankedSearcher` hands over.
        one_thread: Score under `single_thread` (on a small CPU box torch with several threads was 10–30×
            slower for the ranker's short query encode).
        query_batcher: Encodes the query text, batched with other sessions' (``assistant.runtime.scheduling.
            batched_ranker_queries``); None encodes each query alone.
    """

    def __init__(
        self,
        ranker: RankingModel,
        catalog: Catalog,
        *,
        image_vectors: ImageVectors | None = None,
        pool: int = DEFAULT_POOL,
        one_thread: bool = True,
        query_batcher: Any | None = None,
    ) -> None:
        self.ranker = ranker
        self.one_thread = one_thread
        self.query_batcher = query_batcher
        self.image_vectors = image_vectors
        self.pool = pool
        self.catalog = catalog
        self._texts: dict[str, str] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()
        if isinstance(ranker, Ranker):
            ranker.eval()
        self.update(catalog)

    def update(self, catalog: Catalog) -> dict[str, int]:
        """Encode only the new and changed products of `catalog` (and forget removed ones)."""
        with self._lock:
            texts = {p.id: product_text(product_dict(catalog, p)) for p in catalog.parents()}
            todo = [pid for pid, t in texts.items() if self._texts.get(pid) != t]
            removed = [pid for pid in self._texts if pid not in texts]
            if todo:
                vecs = self.ranker.encode_products([texts[pid] for pid in todo])
                for pid, vec in zip(todo, vecs, strict=True):
                    self._vectors[pid] = np.asarray(vec, dtype=np.float32)
            for pid in removed:
                self._vectors.pop(pid, None)
            self._texts = texts
            self.catalog = catalog
            return {"encoded": len(todo), "removed": len(removed)}

    def _vector(self, product: Product) -> np.ndarray:
        vec = self._vectors.get(product.id)
        if vec is None:  # a product the catalog snapshot did not have (e.g. a fake searcher's)
            text = product_text(product_dict(self.catalog, product))
            vec = np.asarray(self.ranker.encode_products([text])[0], dtype=np.float32)
            self._vectors[product.id] = vec
            self._texts[product.id] = text
        return vec

    def features(
        self,
        query: SearchQuery,
        hits: list[ProductHit],
        signals: SessionSignals | None = None,
        retrieval: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[len(hits), NUM_FEATURES]`` features in `FEATURE_NAMES` order.

        Args:
            query: The parsed query.
            hits: Candidates, in the first stage's order.
            signals: The shopper's session.
            retrieval: ``[len(hits), len(RETRIEVAL_FEATURES)]`` from `retrieval_features`; None derives the
                first-stage columns from the hits' scores and order alone (every hit counted as returned).
        """
        feats = np.zeros((len(hits), NUM_FEATURES), np.float32)
        if not hits:
            return feats
        if retrieval is None:
            retrieval = basic_retrieval_features(hits)
        feats[:, : len(RETRIEVAL_FEATURES)] = retrieval
        slots = query_slots(query)
        for i, hit in enumerate(hits):
            product = product_dict(self.catalog, hit.product, hit.variant)
            if hit.variant is not None:  # the variant's own colour/size are what matched
                product["attributes"]["colors"] = [*hit.variant.colors(), *product["attributes"]["colors"]]
                product["attributes"]["sizes"] = [*hit.variant.sizes(), *product["attributes"]["sizes"]]
            product["attributes"]["colors"] = [canonical_color(c) for c in product["attributes"]["colors"]]
            product["attributes"]["sizes"] = [canonical_size(str(s)) for s in product["attributes"]["sizes"]]
            match_slots = dict(slots)
            if query.color:
                match_slots["colour"] = canonical_color(query.color)
            if query.size:
                match_slots["size"] = canonical_size(query.size)
            for name, value in slot_features(match_slots, product).items():
                feats[i, _COL[name]] = value
            if signals is not None:
                pid = hit.product.id
                feats[i, _COL["viewed"]] = float(pid in signals.viewed)
                feats[i, _COL["liked"]] = float(pid in signals.liked)
                feats[i, _COL["bought"]] = float(pid in signals.bought)
                feats[i, _COL["disliked"]] = float(pid in signals.disliked)
                feats[i, _COL["friends_bought"]] = math.log1p(max(0, signals.friends_bought.get(pid, 0)))
                feats[i, _COL["friends_liked"]] = math.log1p(max(0, signals.friends_liked.get(pid, 0)))
                feats[i, _COL["recency"]] = float(signals.recency.get(pid, 0.0))
        return feats

    def score(
        self,
        query: SearchQuery,
        hits: list[ProductHit],
        signals: SessionSignals | None = None,
        retrieval: np.ndarray | None = None,
    ) -> RankOutput:
        """The ranker's scores (and their contributions) for `hits`, in their order."""
        feats = self.features(query, hits, signals, retrieval)
        text = render_query(query.text, query_slots(query))
        # Batched: the query waits for the shared encoder outside the lock, so other sessions' queries join it.
        qvec = self.query_batcher(text) if self.query_batcher is not None else None
        threads = single_thread() if self.one_thread else contextlib.nullcontext()
        with self._lock, threads:
            product_vecs = np.stack([self._vector(h.product) for h in hits])
            images = None
            if self.image_vectors is not None:
                images = self.image_vectors([h.product.id for h in hits])
            if qvec is None:
                qvec = self.ranker.encode_query(text)
            return self.ranker.score(qvec, product_vecs, images, feats)

    def rerank(
        self,
        query: SearchQuery,
        hits: list[ProductHit],
        signals: SessionSignals | None = None,
        retrieval: np.ndarray | None = None,
        *,
        signals_only: bool = False,
    ) -> list[ProductHit]:
        """`hits` reordered by the ranker, best first, each ``reason`` naming its top reasons.

        With ``signals_only`` (a request the ranker never learnt, such as one for complements) only what the
        shopper and their friends did (`SIGNAL_FEATURES`) moves a hit; otherwise `hits` keep their order.
        """
        if not hits:
            return []
        out = self.score(query, hits, signals, retrieval)
        scores = out.scores
        if signals_only:
            personal = sum((out.contributions[n] for n in SIGNAL_FEATURES), np.zeros(len(hits), np.float32))
            scores = personal - personal.mean()
        order = np.argsort(-scores, kind="stable")
        ranked = []
        for i in order:
            hit = hits[int(i)]
            words = []
            for name, _ in out.top_reasons(int(i), k=3):
                if signals_only and name not in SIGNAL_FEATURES:
                    continue
                w = _reason_words(name, query, hit)
                if w and w not in words:
                    words.append(w)
            reason = "; ".join(words) if words else hit.reason
            ranked.append(replace(hit, score=float(scores[int(i)]), reason=reason))
        return ranked

    def rerank_text(self, query_text: str, hits: list[ProductHit], vocab: Any | None = None) -> list[ProductHit]:
        """Bench adapter: parse `query_text` (with `vocab`) and `rerank`."""
        return self.rerank(parse_query(query_text, vocab), hits)


FUSION_K = 60  # reciprocal rank fusion's constant (Cormack et al.)


def fuse_orders(ranked: list[ProductHit], retrieved: list[ProductHit], retrieval_weight: float) -> list[ProductHit]:
    """`ranked` (the ranker's order) fused with `retrieved` (the same hits in the retrieval's order) by reciprocal rank.

    A hit keeps the ranker's reason and score; products the retrieval did not order count as last in it.
    """
    where = {h.product.id: i for i, h in enumerate(retrieved)}
    last = len(retrieved)

    def fused(item: tuple[int, ProductHit]) -> float:
        i, hit = item
        return 1.0 / (FUSION_K + i) + retrieval_weight / (FUSION_K + where.get(hit.product.id, last))

    return [hit for _, hit in sorted(enumerate(ranked), key=lambda item: -fused(item))]


class RankedSearcher:
    """A `ProductSearcher`: a retriever's top ``max(k, pool)`` candidates re-ranked by an `LLMReranker`.

    Near misses: when the query sets a colour, size or price, products that break only those constraints (same
    category, brand, department and words: `assistant.search.query.relaxed_query`) join the pool as close alternatives,
    each marked with what it misses (`ProductHit.near_miss`). Results list every product that meets the query
    first, in the ranker's order, then the near misses, in the ranker's order: a shopper asking for "the Hera
    hoodie in blue" when none is blue hears so, and is offered the Hera hoodie in the colours it has.

    Args:
        retriever: A `HybridRetriever` (or anything with ``search`` and ``vocab``).
        reranker: The re-ranker.
        pool: Candidates fetched per query (default: the reranker's).
        near_misses: Offer close alternatives (above); False returns only products meeting every constraint.
        retrieval_weight: The final order fuses the ranker's order with the retrieval's by reciprocal rank, the
            retrieval's weighted this much against the ranker's 1 (0: the ranker's order alone). Where the ranker
            is unsure (a catalog or a kind of request it was not trained on) the retrieval's order holds.
    """

    ranked = True

    def __init__(
        self, retriever: ProductSearcher, reranker: LLMReranker, *, pool: int | None = None, near_misses: bool = True,
        retrieval_weight: float = 0.0,
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.pool = pool if pool is not None else reranker.pool
        self.near_misses = near_misses
        self.retrieval_weight = retrieval_weight
        self._tokens: dict[str, frozenset[str]] = {}  # product id -> BM25 tokens of its text

    @property
    def vocab(self) -> QueryVocab | None:
        return self.retriever.vocab

    @property
    def catalog(self) -> Catalog | None:
        return self.retriever.catalog

    def search(
        self, query: SearchQuery, *, use_ranker: bool = True, signals: SessionSignals | None = None
    ) -> list[ProductHit]:
        """Top `query.k` hits (near misses after the rest); with ``use_ranker=False`` the retriever's own ranking."""
        if query.k <= 0:
            return []
        if not use_ranker:
            hits = list(self.retriever.search(query))
            hybrid = self._relaxable(query)
            return with_near_misses(hybrid, query, hits) if hybrid is not None else hits
        hits, retrieval = self.candidates(query)
        complements = query.goes_with is not None
        if complements:
            # the ranker never learnt requests for complements: there the retrieval's own top k stands (a wider
            # pool fuses longer source lists, so its head may differ), moved only by what the shopper and their
            # friends did
            top = {h.product.id: n for n, h in enumerate(self.retriever.search(query))}
            order = sorted(range(len(hits)), key=lambda i: (top.get(hits[i].product.id, len(top)), i))
            hits, retrieval = [hits[i] for i in order], retrieval[order]
        ranked = self.reranker.rerank(ranked_view(query), hits, signals, retrieval, signals_only=complements)
        if self.retrieval_weight > 0:
            ranked = fuse_orders(ranked, hits, self.retrieval_weight)
        if query.goes_with is not None:  # keep saying what each one goes with ("goes with the Mona Pullover")
            why = {h.product.id: h.reason.split("; ", 1)[0] for h in hits if h.reason.startswith(COMPLEMENT_REASONS)}
            ranked = [replace(h, reason=f"{why[h.product.id]}; {h.reason}")
                      if h.product.id in why and not h.reason.startswith(why[h.product.id]) else h for h in ranked]
        ranked = [h for h in ranked if not h.near_miss] + [h for h in ranked if h.near_miss]
        return ranked[: query.k]

    def _relaxable(self, query: SearchQuery) -> HybridRetriever | None:
        """The retriever, when near misses are on, `query` has a constraint to relax, and it can test them."""
        relaxable = self.near_misses and relaxed_query(query) is not None
        return self.retriever if relaxable and isinstance(self.retriever, HybridRetriever) else None

    def candidates(self, query: SearchQuery) -> tuple[list[ProductHit], np.ndarray]:
        """The pool the ranker re-orders, and its first-stage features (`RETRIEVAL_FEATURES` columns).

        The retriever's own top ``max(k, pool)`` hits come first, in its order. A `HybridRetriever` also adds the
        products that pass every hard filter but that its relevance gate dropped (up to ``pool`` in all, by
        MiniLM cosine), each with its BM25/vector ranks and scores: the ranker may lift one the gate missed.
        With near misses on and a colour, size or price in the query, the products that pass the relaxed query
        compete for those places too (marked ``near_miss``; their slot features show what they miss).
        """
        n = max(query.k, self.pool)
        hits = list(self.retriever.search(replace(query, k=n)))
        retriever = self.retriever
        if not isinstance(retriever, HybridRetriever):  # e.g. a test's keyword searcher: its ranks alone
            return hits, basic_retrieval_features(hits)
        allowed = retriever.candidates(query)
        if self._relaxable(query) is None:
            return retrieval_features(retriever, ranked_view(query), hits, allowed, n, self._tokens)
        relaxed = relaxed_query(query)
        assert relaxed is not None
        widened = {**retriever.candidates(relaxed), **allowed}  # the query's own variant wins for its products
        pool, feats = retrieval_features(retriever, ranked_view(relaxed), hits, widened, n, self._tokens)
        return mark_near_misses(retriever, query, pool, allowed), feats

    def update(self, catalog: Catalog) -> Mapping[str, int]:
        """Update the retriever's indexes and the reranker's product vectors."""
        stats = dict(self.retriever.update(catalog))
        self.reranker.update(catalog)
        self._tokens.clear()
        return stats
