"""Ranking quality: nDCG@10 and MRR of BM25, vector-only, hybrid retrieval and retrieval + ranker, in one run.

Query sets:

* (a) ``generated``: a held-out split of generated (query, judgments) examples — given by the caller, or made by
  ``ranking.train.make_training_data`` over the Luma products and split by ``ranking.train.split_examples``
  (graded over every product by ``ranking.train.grade``); skipped with a note when that module is missing.
* (b) ``luma``: ``bench/data/luma_queries.jsonl``, hand-written spoken-style shopper queries over the Luma catalog
  with graded judgments (0–3) at the level search returns (parents for configurables; simple products as
  themselves). How it was written: ``bench/data/README.md``.

Systems (all through `HybridRetriever.search(parse_query(text, vocab))`, k = 10, a hit counted by its parent id):

* ``bm25``: ``sources=("lexical",)``;  ``vector``: ``sources=("text",)`` (MiniLM);  ``hybrid``: the default
  sources (lexical + text fused by reciprocal rank, #3);
* ``hybrid+ranker``: the hybrid's top `POOL` candidates re-ranked by ``ranker.rerank(query_text, hits)``; without a
  given ranker, the trained LLM ranker (`default_checkpoint`) through ``assistant.search.rerank.LLMReranker.rerank_text``,
  with its latency for 100 candidates (``rerank_latency``); reported as absent when there is no checkpoint.

Target (#4): ``hybrid+ranker`` nDCG@10 on (b) at least `TARGET_RATIO` × the best of the others.
Run: ``shoptalk bench ranking`` or ``python -m bench.ranking`` (results to bench/results/ranking.json).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, shared_data_dir, write_results

log = logging.getLogger(__name__)

K = 10
POOL = 50  # hybrid candidates the ranker re-orders
TARGET_RATIO = 1.10
ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "bench" / "data" / "luma_queries.jsonl"
USECASE = ROOT / "bench" / "data" / "luma_usecase.jsonl"  # (c) use-case, complementary and gift requests (#18)
USECASE_HELDOUT = ROOT / "bench" / "data" / "luma_usecase_heldout.jsonl"  # (c) held out: aggregates only
USECASE_RATIO = 1.25  # #18: the served ranking over hybrid+near-misses on (c)
HELDOUT_FRACTION = 0.2  # of generated examples; ranking.train.train holds out the same share
GENERATED_QUERIES = 2000  # make_training_data examples drawn (seed 0), so (a) has 400 queries
QUICK_QUERIES = 30
NEAR = "hybrid+near-misses"  # the hybrid, then close alternatives (`assistant.search.retrieval.NearMissSearcher`): no ranker
BASELINES = ("bm25", "vector", "hybrid", NEAR)
RANKED = "hybrid+ranker"
CROSS = "hybrid+ranker (demo-trained)"  # the shipped checkpoint, trained on the demo catalog only
WORDS_ONLY = "hybrid+near-misses, words only"  # no description passages, no complement kinds: as #18 found it
RANKER_ALONE = "hybrid+ranker, its order alone"  # no fusion with the retrieval's order (the served one fuses)


def _served_fusion() -> float:
    """The server's default weight of the retrieval's order against the ranker's (``SHOPTALK_RANKER_RETRIEVAL_WEIGHT``)."""
    from server.settings import Settings

    return float(Settings.model_fields["ranker_retrieval_weight"].default)


SERVED_FUSION = _served_fusion()
SYSTEMS = (*BASELINES, RANKED)

Search = Callable[[str], list[str]]
"""A system under test: query text -> ranked product ids (parents), best first."""


# --- metrics -------------------------------------------------------------------------------------------------------


def _unique(ids: Sequence[str]) -> list[str]:
    """`ids` without repeats (a parent returned twice counts once, at its first rank)."""
    return list(dict.fromkeys(ids))


def ndcg_at_k(ranked_ids: Sequence[str], judgments: Mapping[str, int], k: int = K) -> float:
    """Normalised discounted cumulative gain at `k`: gain 2^g − 1, discount log2(rank + 1), ideal from `judgments`.

    Args:
        ranked_ids: Returned ids, best first; unjudged ids have grade 0.
        judgments: Id -> graded relevance (0–3).
        k: Cut-off.

    Returns:
        nDCG in [0, 1]; 0 when nothing is relevant.
    """
    gains = [2 ** judgments.get(pid, 0) - 1 for pid in _unique(ranked_ids)[:k]]
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sorted((2**g - 1 for g in judgments.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr(ranked_ids: Sequence[str], judgments: Mapping[str, int], min_grade: int = 2) -> float:
    """Reciprocal rank of the first id graded at least `min_grade` (0 when none is returned)."""
    for rank, pid in enumerate(_unique(ranked_ids), start=1):
        if judgments.get(pid, 0) >= min_grade:
            return 1.0 / rank
    return 0.0


# --- query sets ----------------------------------------------------------------------------------------------------


def load_queries(path: Path = QUERIES) -> list[dict[str, Any]]:
    """The hand-written set (b): ``{"qid", "query", "intent", "judgments"}`` per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def judged_stats(queries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Size of a judged set: queries, judged products per query, and how the grades are spread."""
    judged = [len(q["judgments"]) for q in queries]
    grades = [g for q in queries for g in q["judgments"].values()]
    intents: dict[str, int] = {}
    for q in queries:
        intents[q.get("intent", "-")] = intents.get(q.get("intent", "-"), 0) + 1
    return {
        "queries": len(queries),
        "mean_judged": round(float(np.mean(judged)), 1) if judged else 0.0,
        "mean_relevant": round(
            float(np.mean([sum(g >= 2 for g in q["judgments"].values()) for q in queries])), 1
        )
        if queries
        else 0.0,
        "grades": {str(g): grades.count(g) for g in (3, 2, 1)},
        "intents": intents,
    }


def heldout_split(
    examples: Sequence[Mapping[str, Any]], fraction: float = HELDOUT_FRACTION
) -> list[dict[str, Any]]:
    """The examples whose query text hashes into the held-out `fraction` (same split whatever their order)."""

    def bucket(text: str) -> float:
        return int(hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF

    return [dict(e) for e in examples if bucket(str(e["query"])) < fraction]


def luma_product_dicts(catalog: Any) -> list[dict[str, Any]]:
    """Shoppable products as the plain dicts ``ranking`` works on (colours and sizes over the variants)."""
    from assistant.search.rerank import product_dict

    return [product_dict(catalog, p) for p in catalog.parents()]


def _raw_query(rendered: str) -> str:
    """The transcript part of a rendered ranker query (``"red tee | colour: red"`` → ``"red tee"``)."""
    return rendered.split(" | ", 1)[0].strip()


def _judged_example(example: Any, products: Sequence[Mapping[str, Any]], grade: Any) -> dict[str, Any]:
    """A generated example as ``{"query", "judgments"}``: graded over every product when its spec is known
    (candidates outside the example's pool would otherwise count as irrelevant), else over its candidates."""
    spec = (getattr(example, "meta", None) or {}).get("spec")
    if spec is not None and grade is not None:
        judgments = {str(p["id"]): g for p in products if (g := int(grade(spec, p))) > 0}
    else:
        judgments = {
            str(pid): int(g) for pid, g in zip(example.product_ids, example.labels, strict=True) if int(g) > 0
        }
    return {"query": _raw_query(str(example.query)), "judgments": judgments}


def generated_queries(
    catalog: Any, generated: Sequence[Mapping[str, Any]] | None
) -> tuple[list[dict[str, Any]], str]:
    """Set (a) and a note on where it came from (an empty set and the reason when it cannot be made).

    Given examples are split by `heldout_split`. Otherwise ``ranking.queries.spoken_queries`` generates
    `GENERATED_QUERIES` spoken queries (seed 0, what ``shoptalk ranker train`` draws too) over the shoppable
    products, each graded over every product, and the held-out share (``ranking.queries.is_heldout``, by a hash
    of the text, which training skips) is kept.
    """
    if generated is not None:
        return heldout_split(generated), f"held-out {HELDOUT_FRACTION:.0%} of {len(generated)} given examples"
    try:
        queries = importlib.import_module("ranking.queries")
    except ImportError as err:
        return [], f"skipped: ranking.queries cannot be imported ({err})"
    products = luma_product_dicts(catalog)
    try:
        drawn = queries.spoken_queries(products, GENERATED_QUERIES, 0)
    except Exception as err:  # noqa: BLE001 - (a) is reported as skipped rather than failing (b)
        log.warning("spoken_queries failed: %s", err)
        return [], f"skipped: spoken_queries failed ({type(err).__name__}: {err})"
    out = [
        {"qid": f"gen-{i:04d}", "query": g.text, "intent": g.spec.intent, "judgments": g.judgments}
        for i, g in enumerate(drawn)
        if queries.is_heldout(g.text)
    ]
    return out, (
        f"held-out {HELDOUT_FRACTION:.0%} (by text hash; training skips them) of {len(drawn)} "
        f"ranking.queries.spoken_queries (seed 0), graded over all {len(products)} products by ranking.queries.grade"
    )


# --- evaluation ----------------------------------------------------------------------------------------------------


def evaluate(search: Search, queries: Sequence[Mapping[str, Any]], k: int = K) -> dict[str, Any]:
    """Mean nDCG@k and MRR of one system over `queries`, with each query's scores and the search latency."""
    per_query: dict[str, dict[str, float]] = {}
    ndcgs, mrrs, ms = [], [], []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        ranked = _unique(search(str(q["query"])))[:k]
        ms.append((time.perf_counter() - start) * 1000)
        n, r = ndcg_at_k(ranked, q["judgments"], k), mrr(ranked, q["judgments"])
        ndcgs.append(n)
        mrrs.append(r)
        per_query[str(q.get("qid", i))] = {"ndcg@10": round(n, 4), "mrr": round(r, 4)}
    return {
        "ndcg@10": round(float(np.mean(ndcgs)), 4) if ndcgs else None,
        "mrr": round(float(np.mean(mrrs)), 4) if mrrs else None,
        "search_ms_p50": round(float(np.median(ms)), 1) if ms else None,
        "per_query": per_query,
    }


def by_intent(
    queries: Sequence[Mapping[str, Any]], per_query: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean nDCG@10 per query intent (category, attribute, price, use case, product line, ...)."""
    groups: dict[str, list[float]] = {}
    for q in queries:
        groups.setdefault(q.get("intent", "-"), []).append(per_query[q["qid"]]["ndcg@10"])
    return {name: round(float(np.mean(v)), 4) for name, v in sorted(groups.items())}


def retriever_search(retriever: Any, k: int = K, *, complements: bool = True) -> Search:
    """A system from a `HybridRetriever`: parse with its vocabulary, search `k`, return parent ids.

    ``complements=False`` reads a request for complements as plain words (no kinds that go with what it names).
    """
    from assistant.search.query import parse_query

    def search(text: str) -> list[str]:
        query = replace(parse_query(text, retriever.vocab), k=k)
        if not complements:
            query = replace(query, goes_with=None)
        return [hit.product.id for hit in retriever.search(query)]

    return search


def reranked_search(retriever: Any, ranker: Any, pool: int = POOL) -> Search:
    """The hybrid's top `pool` candidates re-ordered by ``ranker.rerank(query_text, hits)``."""
    from assistant.search.query import parse_query

    def search(text: str) -> list[str]:
        hits = retriever.search(replace(parse_query(text, retriever.vocab), k=pool))
        return [hit.product.id for hit in ranker.rerank(text, hits)]

    return search


def searcher_search(searcher: Any, k: int = K) -> Search:
    """A system from a `RankedSearcher`: its pool (hybrid hits and gated-out filtered candidates) re-ranked."""
    from assistant.search.query import parse_query

    def search(text: str) -> list[str]:
        query = replace(parse_query(text, searcher.vocab), k=k)
        return [hit.product.id for hit in searcher.search(query)]

    return search


def build_systems(
    catalog: Any, encoder: Any, ranker: Any | None, reranker: Any | None = None, extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Search], Any]:
    """BM25, vector and hybrid retrieval over `catalog`, and the hybrid re-ranked: by `ranker` (``rerank(text,
    hits)``) when given, else by the `LLMReranker` `reranker` through a `RankedSearcher`; `extra` names more
    `LLMReranker` s (e.g. one trained on another catalog). Returns the systems and the hybrid retriever."""
    from assistant.search.rerank import RankedSearcher
    from assistant.search.retrieval import HybridRetriever, NearMissSearcher

    bm25 = HybridRetriever(catalog, encoder, sources=("lexical",))
    vector = HybridRetriever(catalog, encoder, sources=("text",))
    hybrid = HybridRetriever(catalog, encoder)
    words_only = HybridRetriever(catalog, encoder, sources=("lexical", "text", "image"))
    systems = {
        "bm25": retriever_search(bm25),
        "vector": retriever_search(vector),
        "hybrid": retriever_search(hybrid),
        NEAR: retriever_search(NearMissSearcher(hybrid)),
        WORDS_ONLY: retriever_search(NearMissSearcher(words_only), complements=False),
    }
    if ranker is not None:
        systems[RANKED] = reranked_search(hybrid, ranker)
    elif reranker is not None:  # as served: the ranker's order fused with the retrieval's
        systems[RANKED] = searcher_search(RankedSearcher(hybrid, reranker, pool=POOL, retrieval_weight=SERVED_FUSION))
        systems[RANKER_ALONE] = searcher_search(RankedSearcher(hybrid, reranker, pool=POOL))
    for name, other in (extra or {}).items():
        systems[name] = searcher_search(RankedSearcher(hybrid, other, pool=POOL, retrieval_weight=SERVED_FUSION))
    return systems, hybrid


LATENCY_CANDIDATES = 100
LATENCY_QUERIES = 40


def default_checkpoint() -> Path | None:
    """The trained ranker the bench uses when none is given: the configured one, else the checkout's ``.data``,
    else the shipped default (`shipped_checkpoint`)."""
    try:
        from server.settings import Settings

        configured = Settings().ranker_checkpoint_path
    except Exception:  # noqa: BLE001 - a broken environment only means "no ranker"
        configured = None
    local = ROOT / ".data" / "models" / "ranker" / "smollm2-lora.pt"
    for path in (configured, local, shipped_checkpoint()):
        if path is not None and path.exists():
            return path
    return None


def shipped_checkpoint() -> Path | None:
    """The default checkpoint committed with the code (trained on the demo catalog only), if present."""
    from ranking.registry import shipped_checkpoint as shipped

    return shipped("smollm2-lora")


class TextReranker:
    """``rerank(query_text, hits)`` for `reranked_search`, via ``LLMReranker.rerank_text`` with the retriever's vocab."""

    def __init__(self, reranker: Any, vocab: Any) -> None:
        self.reranker = reranker
        self.vocab = vocab

    def rerank(self, query_text: str, hits: list[Any]) -> list[Any]:
        return self.reranker.rerank_text(query_text, hits, self.vocab)  # type: ignore[no-any-return]


def load_reranker(catalog: Any, checkpoint: Path) -> Any:
    """An `assistant.search.rerank.LLMReranker` over `catalog` from a trained checkpoint."""
    from assistant.search.rerank import LLMReranker
    from ranking.registry import create_ranker

    ranker = create_ranker("smollm2-lora", cache_dir=model_cache(), checkpoint=checkpoint, device="cpu")
    return LLMReranker(ranker, catalog, pool=POOL)


def model_cache() -> Path:
    """Where the dequantized SmolLM2 backbone lives: the configured model cache or the checkout's ``.data`` one,
    whichever has it prepared (else the configured one, where it is prepared on first use)."""
    from ranking.registry import SMOLLM2_FOLDER

    local = ROOT / ".data" / "models"
    try:
        from server.settings import Settings

        configured: Path | None = Settings().cache_dir
    except Exception:  # noqa: BLE001 - a broken environment: the checkout's cache
        configured = None
    for cache in (configured, local):
        if cache is not None and (cache / SMOLLM2_FOLDER / "config.json").is_file():
            return cache
    return configured or local


def rerank_latency(
    retriever: Any, reranker: Any, queries: Sequence[Mapping[str, Any]], n: int = LATENCY_CANDIDATES
) -> dict[str, Any]:
    """Milliseconds to re-rank exactly `n` candidates (first-stage features + query encode + features + scoring).

    The candidates are the hybrid's hits for the query, widened with other catalog products up to `n` (the
    hybrid's filters and gate often return fewer) the way `RankedSearcher.candidates` widens a pool with the
    filtered candidates its gate dropped. Timed with one torch thread (the reranker's setting) and with the
    process's threads, alternating per query so neither setting gets the warmer cache.
    """
    import torch

    from assistant.search.query import parse_query
    from assistant.search.rerank import retrieval_features

    parents = list(retriever.catalog.parents())
    everything = {p.id: None for p in parents}
    tokens: dict[str, frozenset[str]] = {}
    one: list[float] = []
    many: list[float] = []
    for q in queries:
        query = replace(parse_query(str(q["query"]), retriever.vocab), k=n)
        hits = list(retriever.search(query))
        for one_thread, out in ((True, one), (False, many)):
            reranker.one_thread = one_thread
            pool, feats = retrieval_features(retriever, query, hits, everything, n, tokens)
            reranker.rerank(query, pool, None, feats)  # warm-up
            start = time.perf_counter()
            pool, feats = retrieval_features(retriever, query, hits, everything, n, tokens)
            reranker.rerank(query, pool, None, feats)
            out.append((time.perf_counter() - start) * 1000)
    reranker.one_thread = True

    def pct(ms: list[float], p: int) -> float | None:
        return round(float(np.percentile(ms, p)), 1) if ms else None

    return {
        "candidates": min(n, len(parents)),
        "queries": len(queries),
        "p50_ms": pct(one, 50),
        "p95_ms": pct(one, 95),
        f"threads_{torch.get_num_threads()}": {"p50_ms": pct(many, 50), "p95_ms": pct(many, 95)},
    }


PERSONAL_QUERIES = 12


def ceiling(searcher: Any, queries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """nDCG@10 of a perfect order of what the ranker is given: the most any re-ranker can reach on `queries`.

    ``pool``: the `RankedSearcher`'s candidates without near misses, any order. ``near_misses``: with them,
    ordered as served (every product that meets the query before any near miss).
    """
    from assistant.search.query import parse_query
    from assistant.search.rerank import RankedSearcher

    out = {}
    for name, near in (("pool", False), ("near_misses", True)):
        pool_of = RankedSearcher(searcher.retriever, searcher.reranker, pool=searcher.pool, near_misses=near)
        total = 0.0
        for q in queries:
            grades = q["judgments"]
            hits, _ = pool_of.candidates(replace(parse_query(q["query"], searcher.vocab), k=K))
            best = sorted(hits, key=lambda h: (bool(h.near_miss), -grades.get(h.product.id, 0)))
            total += ndcg_at_k([h.product.id for h in best], grades)
        out[name] = round(total / max(1, len(queries)), 4)
    return out


def personalisation(searcher: Any, queries: Sequence[Mapping[str, Any]], n: int = PERSONAL_QUERIES) -> dict[str, Any]:
    """Two shoppers with different histories ask the same queries: do they get different, sensible orders?

    For each query (the first `n` of `queries` with at least 8 hits): the order without a session, then shopper A
    (liked and just viewed the 6th hit; two friends bought the 8th) and shopper B (disliked the 1st hit; viewed and
    liked the 7th). Reported: how often A's and B's top 10 differ, how often each signal moved its product the
    expected way, and how often the moved product's reason names the signal.
    """
    from assistant.core.signals import SessionSignals
    from assistant.search.query import parse_query

    rows: list[dict[str, Any]] = []
    example: dict[str, Any] = {}
    for q in queries:
        if len(rows) >= n:
            break
        query = replace(parse_query(str(q["query"]), searcher.vocab), k=K)
        base = searcher.search(query)
        if len(base) < 8:
            continue
        ids = [h.product.id for h in base]
        a_like, a_friend, b_dislike, b_like = ids[5], ids[7], ids[0], ids[6]
        shopper_a = SessionSignals(viewed={a_like}, liked={a_like}, recency={a_like: 1.0},
                                   friends_bought={a_friend: 2})  # fmt: skip
        shopper_b = SessionSignals(disliked={b_dislike}, viewed={b_like}, liked={b_like})
        a = searcher.search(query, signals=shopper_a)
        b = searcher.search(query, signals=shopper_b)
        a_ids, b_ids = [h.product.id for h in a], [h.product.id for h in b]

        def rank(pid: str, order: list[str]) -> int:
            return order.index(pid) if pid in order else len(order)

        reason_a = next((h.reason for h in a if h.product.id == a_like), "")
        reason_b = next((h.reason for h in b if h.product.id == b_like), "")
        rows.append({
            "differ": a_ids != b_ids,
            "a_liked_up": rank(a_like, a_ids) < 5,
            "a_friend_up": rank(a_friend, a_ids) < 7,
            "b_disliked_down": rank(b_dislike, b_ids) > 0,
            "b_liked_up": rank(b_like, b_ids) < 6,
            "reason_liked": "liked" in reason_a and "liked" in reason_b,
            "reason_friends": "friends" in next((h.reason for h in a if h.product.id == a_friend), ""),
        })  # fmt: skip
        if not example:
            example = {"query": q["query"], "no_session": ids, "shopper_a": a_ids, "shopper_b": b_ids,
                       "a_liked": a_like, "a_liked_reason": reason_a, "b_disliked": b_dislike,
                       "b_liked": b_like, "b_liked_reason": reason_b}  # fmt: skip
    out: dict[str, Any] = {"queries": len(rows)}
    for key in ("differ", "a_liked_up", "a_friend_up", "b_disliked_down", "b_liked_up", "reason_liked",
                "reason_friends"):  # fmt: skip
        out[key] = round(sum(r[key] for r in rows) / len(rows), 3) if rows else None
    out["example"] = example
    return out


def run_sets(
    systems: Mapping[str, Search], sets: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Every system on every non-empty query set."""
    return {
        name: {s: evaluate(search, qs) for s, search in systems.items()} for name, qs in sets.items() if qs
    }


def target(luma: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The #4 target on (b): ranker nDCG@10 over the best baseline's."""
    best = max(BASELINES, key=lambda s: luma[s]["ndcg@10"] if s in luma else -1.0)
    out: dict[str, Any] = {
        "best_baseline": best,
        "best_ndcg@10": luma[best]["ndcg@10"],
        "needed_ratio": TARGET_RATIO,
    }
    if RANKED in luma:
        ratio = luma[RANKED]["ndcg@10"] / luma[best]["ndcg@10"] if luma[best]["ndcg@10"] else float("inf")
        out.update(ratio=round(ratio, 3), met=bool(ratio >= TARGET_RATIO))
        out["ratio_over"] = {  # over each baseline: the near-miss policy's share of the gain shows against "hybrid"
            s: round(luma[RANKED]["ndcg@10"] / luma[s]["ndcg@10"], 3)
            for s in BASELINES
            if s in luma and luma[s]["ndcg@10"]
        }
    else:
        out.update(ratio=None, met=None, note="no ranker given")
    return out


def usecase_target(systems: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """#18 on a use-case set: the served ranking over hybrid+near-misses (needed `USECASE_RATIO`)."""
    base = systems.get(NEAR, {}).get("ndcg@10")
    if RANKED not in systems or not base:
        return {"ratio": None, "needed_ratio": USECASE_RATIO, "note": "no ranker or no baseline"}
    ratio = systems[RANKED]["ndcg@10"] / base
    out = {"ratio": round(ratio, 3), "needed_ratio": USECASE_RATIO, "met": bool(ratio >= USECASE_RATIO)}
    if systems.get(WORDS_ONLY, {}).get("ndcg@10"):  # the whole #18 work against the retrieval as the issue found it
        out["over_words_only"] = round(systems[RANKED]["ndcg@10"] / systems[WORDS_ONLY]["ndcg@10"], 3)
    return out


def main(
    data_dir: Path | None = None,
    out: Path = Path("bench/results/ranking.json"),
    ranker: Any | None = None,
    quick: bool = False,
    generated: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every system on (a) and (b), write `out` and print the table.

    Args:
        data_dir: The Luma catalog folder (``products.jsonl``); default ``shared_data_dir() / "luma-dev"``.
        out: Results JSON.
        ranker: An object with ``rerank(query_text, hits) -> hits``; None: the trained LLM ranker
            (`default_checkpoint`) through ``LLMReranker.rerank_text``, or ``hybrid+ranker`` absent without one.
        quick: The first `QUICK_QUERIES` queries of each set only.
        generated: Generated ``{"query", "judgments"}`` examples for (a); None asks ``ranking.train``.

    Returns:
        The results written to `out`.
    """
    import torch

    from assistant.catalog.model import Catalog
    from ranking.text_encoder import TextEncoder

    torch.set_num_threads(min(2, torch.get_num_threads()))
    luma_dir = data_dir or shared_data_dir() / "luma-dev"
    catalog = Catalog.load_jsonl(luma_dir / "products.jsonl")
    start = time.perf_counter()
    checkpoint = default_checkpoint() if ranker is None else None
    reranker = load_reranker(catalog, checkpoint) if checkpoint is not None else None
    shipped = shipped_checkpoint() if ranker is None else None
    extra = {}
    if shipped is not None and checkpoint is not None and shipped.resolve() != checkpoint.resolve():
        extra[CROSS] = load_reranker(catalog, shipped)
    systems, hybrid = build_systems(catalog, TextEncoder(), ranker, reranker, extra)
    build_s = time.perf_counter() - start
    luma = load_queries()
    usecase = load_queries(USECASE) if USECASE.is_file() else []
    usecase_heldout = load_queries(USECASE_HELDOUT) if USECASE_HELDOUT.is_file() else []
    gen, gen_note = generated_queries(catalog, generated)
    if quick:
        luma, gen, usecase = luma[:QUICK_QUERIES], gen[:QUICK_QUERIES], usecase[:QUICK_QUERIES]
        usecase_heldout = []
    sets = run_sets(systems, {"generated": gen, "luma": luma, "usecase": usecase, "usecase_heldout": usecase_heldout})
    latency = rerank_latency(hybrid, reranker, luma[:LATENCY_QUERIES]) if reranker is not None else None
    personal, ceilings = None, None
    if reranker is not None:
        from assistant.search.rerank import RankedSearcher

        probes = [q for q in gen if q.get("intent") == "category"] or gen
        # in the default configuration: the served fusion with the retrieval's order
        personal = personalisation(RankedSearcher(hybrid, reranker, pool=POOL, retrieval_weight=SERVED_FUSION), probes)
        ceilings = ceiling(RankedSearcher(hybrid, reranker, pool=POOL), luma)
    results: dict[str, Any] = {
        "machine": machine(),
        "k": K,
        "pool": POOL,
        "quick": quick,
        "build_s": round(build_s, 1),
        "systems": [*SYSTEMS, *([RANKER_ALONE] if RANKER_ALONE in systems else []), WORDS_ONLY, *extra],
        "absent": [] if RANKED in systems else [RANKED],
        "ranker_checkpoint": _shown(checkpoint),
        "cross_catalog_checkpoint": _shown(shipped) if extra else None,
        "rerank_latency": latency,
        "personalisation": personal,
        "generated": {
            "note": gen_note,
            "queries": len(gen),
            "judged": judged_stats(gen) if gen else None,
            "systems": {
                s: {m: r[m] for m in ("ndcg@10", "mrr", "search_ms_p50")}
                for s, r in sets.get("generated", {}).items()
            },
        },
        "luma": {
            "file": str(QUERIES.relative_to(QUERIES.parents[2])),
            "judged": judged_stats(luma),
            "systems": {
                s: {m: r[m] for m in ("ndcg@10", "mrr", "search_ms_p50")} for s, r in sets["luma"].items()
            },
            "by_intent": {s: by_intent(luma, r["per_query"]) for s, r in sets["luma"].items()},
            "per_query": {
                q["qid"]: {
                    "query": q["query"],
                    **{s: r["per_query"][q["qid"]] for s, r in sets["luma"].items()},
                }
                for q in luma
            },
        },
    }
    results["luma"]["ceiling"] = ceilings
    for name, queries, path in (("usecase", usecase, USECASE), ("usecase_heldout", usecase_heldout, USECASE_HELDOUT)):
        if not queries:
            continue
        results[name] = {
            "file": str(path.relative_to(path.parents[2])),
            "judged": judged_stats(queries),
            "systems": {s: {m: r[m] for m in ("ndcg@10", "mrr", "search_ms_p50")} for s, r in sets[name].items()},
            "by_intent": {s: by_intent(queries, r["per_query"]) for s, r in sets[name].items()},
        }
        if reranker is not None:  # what a perfect re-order of the ranker's candidates would reach
            results[name]["ceiling"] = ceiling(RankedSearcher(hybrid, reranker, pool=POOL), queries)["pool"]
        if name == "usecase":  # the held-out part keeps no per-query scores: nobody tunes on them
            results[name]["per_query"] = {
                q["qid"]: {"query": q["query"], **{s: r["per_query"][q["qid"]] for s, r in sets[name].items()}}
                for q in queries
            }
    results["target"] = target(results["luma"]["systems"])
    results["target_usecase"] = {
        name: usecase_target(results[name]["systems"]) for name in ("usecase", "usecase_heldout") if name in results
    }
    write_results(out, results)
    print(table(results))
    print(f"\nresults written to {out}")
    return results


def _shown(path: Path | None) -> str | None:
    """A path relative to the checkout when it is inside it."""
    if path is None:
        return None
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(results: Mapping[str, Any]) -> str:
    """Markdown: one row per system, nDCG@10 and MRR on (a) and (b), then the judged set and the target."""
    gen, luma = results["generated"], results["luma"]
    lines = [
        "| system | (a) generated nDCG@10 | (a) MRR | (b) Luma nDCG@10 | (b) MRR | (b) search p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for s in results.get("systems", SYSTEMS):
        a, b = gen["systems"].get(s, {}), luma["systems"].get(s)
        if b is None:
            lines.append(f"| {s} | absent | absent | absent | absent | — |")
            continue
        ms = b.get("search_ms_p50")
        lines.append(
            f"| {s} | {_cell(a.get('ndcg@10'))} | {_cell(a.get('mrr'))} | {_cell(b['ndcg@10'])} | {_cell(b['mrr'])} "
            f"| {'—' if ms is None else f'{ms:.1f}'} |"
        )
    j = luma["judged"]
    lines += [
        "",
        f"(a) {gen['queries']} queries — {gen['note']}. (b) {j['queries']} hand-written queries, "
        f"{j['mean_judged']} judged products per query ({j['mean_relevant']} graded ≥ 2); k = {results['k']}, "
        f"MRR counts the first grade ≥ 2 hit.",
    ]
    lat = results.get("rerank_latency")
    if lat:
        lines.append(
            f"Re-ranking {lat['candidates']} candidates: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms "
            f"(1 torch thread, {lat['queries']} queries)."
        )
    p = results.get("personalisation")
    if p and p.get("queries"):
        lines.append(
            f"Personalisation ({p['queries']} queries, two shoppers): top 10 differ {p['differ']:.0%}; liked item "
            f"into the top 5 {p['a_liked_up']:.0%}/{p['b_liked_up']:.0%}; friends' purchase up {p['a_friend_up']:.0%}; "
            f"disliked first hit moved down {p['b_disliked_down']:.0%}; reason names 'liked' {p['reason_liked']:.0%}, "
            f"'friends' {p['reason_friends']:.0%}."
        )
    c, sys_b = luma.get("ceiling"), luma["systems"]
    if c and "hybrid" in sys_b and NEAR in sys_b:
        lines.append(
            f"Ceiling on (b), a perfect order of the ranker's candidates: {c['pool']:.3f} without near misses "
            f"({c['pool'] / sys_b['hybrid']['ndcg@10']:.2f}× hybrid), {c['near_misses']:.3f} with them, those that "
            f"fit first ({c['near_misses'] / sys_b[NEAR]['ndcg@10']:.2f}× {NEAR})."
        )
    t = results.get("target")
    if t:
        if t.get("ratio") is None:
            lines.append(
                f"Target: {RANKED} ≥ {t['needed_ratio']:.2f}× {t['best_baseline']} "
                f"({t['best_ndcg@10']:.3f}) on (b) — no ranker given."
            )
        else:
            over = t.get("ratio_over") or {}
            others = ", ".join(f"{s} {r:.2f}×" for s, r in over.items() if s != t["best_baseline"])
            lines.append(
                f"Target: {RANKED} / {t['best_baseline']} nDCG@10 on (b) = {t['ratio']:.2f}× "
                f"(needed {t['needed_ratio']:.2f}×): {'met' if t['met'] else 'not met'}"
                + (f" (over {others})." if others else ".")
            )
    for name, label in (("usecase", "(c) use-case/complement/gift, dev"), ("usecase_heldout", "(c) held out")):
        part = results.get(name)
        if not part:
            continue
        lines += ["", f"| system | {label} nDCG@10 | MRR | " + " | ".join(
            f"{intent} nDCG@10" for intent in next(iter(part["by_intent"].values()))) + " |",
            "|---|---|---|" + "---|" * len(next(iter(part["by_intent"].values())))]
        for s in results.get("systems", SYSTEMS):
            row = part["systems"].get(s)
            if row is None:
                continue
            intents = part["by_intent"][s]
            lines.append(f"| {s} | {_cell(row['ndcg@10'])} | {_cell(row['mrr'])} | "
                         + " | ".join(_cell(v) for v in intents.values()) + " |")
        t = (results.get("target_usecase") or {}).get(name) or {}
        if t.get("ratio") is not None:
            if part.get("ceiling"):
                lines.append(f"Ceiling, a perfect order of the ranker's candidates: {part['ceiling']:.3f} "
                             f"({part['ceiling'] / part['systems'][NEAR]['ndcg@10']:.2f}× {NEAR}).")
            lines.append(f"Target (#18): {RANKED} / {NEAR} = {t['ratio']:.2f}× (needed {t['needed_ratio']:.2f}×): "
                         f"{'met' if t['met'] else 'not met'}"
                         + (f"; {RANKED} / {WORDS_ONLY} (the retrieval as #18 found it) = {t['over_words_only']:.2f}×."
                            if t.get("over_words_only") else "."))
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
