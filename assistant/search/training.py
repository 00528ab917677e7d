"""Ranker training data drawn through the serving pipeline: the candidates and features the served ranker sees.

Training code: `shoptalk ranker train/eval` and the benchmarks import it; nothing on the serving path does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from assistant.search.query import parse_query
from assistant.search.rerank import RankedSearcher, product_dict, query_slots
from ranking.features import product_text
from ranking.ranker import render_query

DESCRIPTION_SHARE = 0.25  # requests worded from descriptions, per generated spoken query (`description_queries`)


def retrieval_examples(
    searcher: RankedSearcher,
    queries: Sequence[Any],
    *,
    session_fraction: float = 0.5,
    seed: int = 0,
) -> list[Any]:
    """Training examples whose candidates and features come from the pipeline that serves the ranker.

    Each generated query (``ranking.queries.GeneratedQuery``: ``text`` and ``judgments``) is parsed with the
    retriever's vocabulary, its pool drawn by `RankedSearcher.candidates` (the hybrid's hits and the filtered
    candidates its gate dropped: hard negatives) and featurised by `LLMReranker.features`, exactly as at
    serving time; labels are the query's graded judgments. Queries whose pool holds nothing graded ≥ 1 are
    dropped (a listwise loss learns nothing from them).

    Args:
        searcher: A `RankedSearcher` over the training catalog.
        queries: Generated queries with judgments.
        session_fraction: Share of examples given simulated session/social signals (``ranking.train``).
        seed: Seed for those signals.
    """
    from ranking.train import Example, simulate_session

    rng = random.Random(seed)
    reranker = searcher.reranker
    out = []
    for gq in queries:
        query = replace(parse_query(str(gq.text), searcher.vocab), k=searcher.pool)
        hits, retrieval = searcher.candidates(query)
        labels = np.array([int(gq.judgments.get(h.product.id, 0)) for h in hits], np.int64)
        if not hits or labels.max() <= 0:
            continue
        feats = reranker.features(query, hits, None, retrieval)
        if rng.random() < session_fraction:
            simulate_session(feats, labels, rng, personal_labels=True)
        for hit in hits:
            reranker._vector(hit.product)  # noqa: SLF001 - makes sure its text is known
        out.append(
            Example(
                query=render_query(query.text, query_slots(query)),
                product_ids=[h.product.id for h in hits],
                product_texts=[reranker._texts[h.product.id] for h in hits],  # noqa: SLF001
                labels=labels,
                features=feats,
                meta={"text": gq.text, "intent": getattr(getattr(gq, "spec", None), "intent", "-")},
            )
        )
    return out


def feedback_candidates(searcher: RankedSearcher) -> Callable[[str, Mapping[str, Any]], tuple[list[str], list[str], np.ndarray]]:
    """``ranking.train.feedback_examples``'s ``candidates``: a logged query's pool and features, as served."""

    def candidates(text: str, slots: Mapping[str, Any]) -> tuple[list[str], list[str], np.ndarray]:
        query = replace(parse_query(text, searcher.vocab), k=searcher.pool)
        hits, retrieval = searcher.candidates(query)
        feats = searcher.reranker.features(query, hits, None, retrieval)
        texts = [product_text(product_dict(searcher.reranker.catalog, h.product)) for h in hits]
        return [h.product.id for h in hits], texts, feats

    return candidates


def training_examples(
    searcher: RankedSearcher,
    n_queries: int,
    *,
    seed: int = 0,
    feedback: Sequence[Mapping[str, Any]] | None = None,
) -> list[Any]:
    """What ``shoptalk ranker train`` trains on, drawn through the serving pipeline.

    Generated spoken queries over the searcher's catalog (minus the held-out share the bench scores,
    `ranking.queries.is_heldout`) and shopper feedback, pooled and featurised as at serving time
    (`retrieval_examples`, `feedback_candidates`).
    """
    from ranking.queries import description_queries, is_heldout, spoken_queries
    from ranking.train import feedback_examples

    catalog = searcher.reranker.catalog
    products = [product_dict(catalog, p) for p in catalog.parents()]
    generated = [g for g in spoken_queries(products, n_queries, seed) if not is_heldout(g.text)]
    # and requests worded from what the descriptions say ("something that keeps you warm on cold mornings")
    drawn = description_queries(products, int(n_queries * DESCRIPTION_SHARE), seed)
    generated += [g for g in drawn if not is_heldout(g.text)]
    examples = retrieval_examples(searcher, generated, seed=seed)
    if feedback:
        examples += feedback_examples(feedback, products, candidates=feedback_candidates(searcher), seed=seed)
    return examples
