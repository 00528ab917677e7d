"""Reply generation: grounding violations of SmolLM2's replies before and after the check, and latency.

Cases are built from the demo catalog: a seed product gives a spoken query ("men's black hoodie under forty
dollars", "running shoes in size 9", ...), `parse_query` reads its constraints, and the hits are the catalog's
products of the seed's category that satisfy them (one per model, the seed first). Each case is answered by
`assistant.replies.llm.LLMReplyWriter`, and:

* ``before``: the model's raw text (everything it generated for the reply, unchecked) through
  `assistant.replies.grounding.check_generated` against the top pick's facts, counted per 100 replies, by kind;
* ``after``: the reply as streamed through `check_grounding` and `check_generated` against the facts of the
  products it names: must be 0;
* first-sentence latency (the template opening), the model's first accepted sentence, the whole reply, decoding
  tokens/s.

Run: ``python -m bench.reply_grounding`` (results to bench/results/reply_grounding.json).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from assistant.catalog.model import Catalog, Product
from assistant.replies.grounding import check_generated, check_grounding
from assistant.replies.llm import LLMReplyWriter, ReplyStats
from assistant.replies.templates import reply_facts
from assistant.search.query import (
    ProductHit,
    QueryVocab,
    SearchQuery,
    canonical_color,
    canonical_size,
    parse_query,
)
from bench.common import machine, summary, write_results

log = logging.getLogger(__name__)

SEED = 11
K = 5
_NUMBER_WORDS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
                 90: "ninety", 100: "one hundred", 120: "a hundred and twenty", 150: "a hundred and fifty"}


def _nouns(product: Product) -> tuple[str, str]:
    """(singular, plural) for the product's category: ("dress", "dresses"), ("jeans", "jeans")."""
    leaf = product.leaf_category.lower().replace("&", "and")
    if " " in leaf or leaf in _PLURAL_ONLY or not leaf.endswith("s"):
        return leaf, leaf
    return (leaf[:-2] if leaf.endswith("sses") else leaf[:-1]), leaf


_PLURAL_ONLY = {"jeans", "pants", "shorts", "leggings", "socks", "shoes", "sneakers", "boots", "sunglasses", "joggers"}


def _limit_above(price: float) -> int:
    return next(v for v in sorted(_NUMBER_WORDS) + [10**6] if v >= price) if price <= 150 else 10**6


def make_query(product: Product, rng: random.Random) -> str:
    """A spoken request the seed product answers ("women's red dress under sixty dollars")."""
    noun, nouns = _nouns(product)
    color = canonical_color(product.colors()[0]) if product.colors() else ""
    sizes = [s for s in product.sizes() if " " not in s]
    gender = str(product.attributes.get("gender", "")).lower()
    limit = _limit_above(product.price)
    parts = {
        "color": f"{color} {noun}" if color else noun,
        "colors": f"{color} {nouns}" if color else nouns,
        "price": f" under {_NUMBER_WORDS[limit]} dollars" if limit in _NUMBER_WORDS else "",
        "size": f" in size {canonical_size(rng.choice(sizes))}" if sizes else "",
        "gender": f"{gender}'s " if gender in ("men", "women") else "",
    }
    forms = [
        "{color}",
        "{gender}{color}{price}",
        "show me {colors}{price}",
        "i need a {color}{size}",
        "do you have {gender}{color}{size}{price}",
        "{noun}{price}",
        "looking for a {noun}{size}",
    ]
    return rng.choice(forms).format(noun=noun, **parts).strip()


def matching_hits(catalog: Catalog, seed: Product, query: SearchQuery, k: int = K) -> list[ProductHit]:
    """The seed and other products of its category meeting `query`'s colour, size, price and gender, one per model."""
    color = canonical_color(query.color) if query.color else None
    size = canonical_size(query.size) if query.size else None

    def ok(p: Product) -> bool:
        return (
            p.category == seed.category
            and (color is None or color in {canonical_color(c) for c in p.colors()})
            and (size is None or size in {canonical_size(s) for s in p.sizes()})
            and (query.max_price is None or p.price <= query.max_price)
            and (query.min_price is None or p.price >= query.min_price)
        )

    models: dict[str, Product] = {}
    for p in [seed, *sorted(catalog, key=lambda p: (abs(p.price - seed.price), p.id))]:
        if ok(p):
            models.setdefault(re.sub(r"-[A-Z]+$", "", p.id), p)
    return [ProductHit(p, 1.0 - i / 10, "bench") for i, p in enumerate(list(models.values())[:k])]


def build_cases(catalog: Catalog, n: int, seed: int = SEED) -> list[tuple[str, SearchQuery, list[ProductHit]]]:
    """`n` (shopper text, query, hits) cases with at least one hit each."""
    rng = random.Random(seed)
    vocab = QueryVocab.from_catalog(catalog)
    products = sorted(catalog, key=lambda p: p.id)
    cases: list[tuple[str, SearchQuery, list[ProductHit]]] = []
    while len(cases) < n:
        product = rng.choice(products)
        text = make_query(product, rng)
        query = replace(parse_query(text, vocab), k=K)
        hits = matching_hits(catalog, product, query)
        if hits:
            cases.append((text, query, hits))
    return cases


def _kind(violation: str) -> str:
    """"price '$19' is not ..." -> "price"; "too long to speak (30 words)" -> "too long"."""
    for kind in ("too long", "off topic", "repeats"):
        if violation.startswith(kind):
            return kind
    return violation.split(" ", 1)[0].rstrip(":")


async def _run_case(writer: LLMReplyWriter, text: str, query: SearchQuery, hits: Sequence[ProductHit]
                    ) -> tuple[str, ReplyStats, int]:
    stats = ReplyStats()
    deltas = [d async for d in writer.stream(text, query, hits, stats)]
    return "".join(deltas), stats, len(deltas)


def main(
    out: Path = Path("bench/results/reply_grounding.json"),
    n: int = 100,
    *,
    model_dir: Path | None = None,
    writer: LLMReplyWriter | None = None,
    catalog: Catalog | None = None,
    threads: int | None = None,
    show: int = 8,
) -> dict[str, Any]:
    """Answer `n` demo-catalog cases with the LLM writer; write `out` and print a markdown table.

    Args:
        out: Results JSON.
        n: Number of replies.
        model_dir: Prepared SmolLM2 folder; default ``.data/models/smollm2-135m-instruct`` (prepared if missing).
        writer: A ready writer (overrides `model_dir`).
        catalog: Default: the generated demo catalog.
        threads: torch CPU threads (None: leave as is).
        show: Example replies kept in the results.

    Returns:
        The results written to `out`.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    if catalog is None:
        from assistant.catalog.demo import generate_demo_catalog

        catalog = Catalog.load_jsonl(generate_demo_catalog(Path(tempfile.mkdtemp(prefix="demo-catalog-"))))
    if writer is None:
        if model_dir is None:
            from ranking.llm import prepare_smollm2
            from ranking.registry import SMOLLM2_FOLDER

            model_dir = prepare_smollm2(Path(".data/models") / SMOLLM2_FOLDER)
        writer = LLMReplyWriter(model_dir, device="cpu")
    start = time.perf_counter()
    _ = writer.generator  # load before timing
    load_s = time.perf_counter() - start
    cases = build_cases(catalog, n)
    asyncio.run(_run_case(writer, *cases[0]))  # warm-up: builds the cached prompt prefix

    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    replies_before = replies_after = fell_back = sentences_rejected = 0
    first_ms: list[float] = []
    llm_first_ms: list[float] = []
    total_ms: list[float] = []
    prefill_ms: list[float] = []
    tok_s: list[float] = []
    new_tokens: list[float] = []
    words: list[float] = []
    multi_delta = 0
    examples: list[dict[str, Any]] = []
    for i, (text, query, hits) in enumerate(cases):
        reply, stats, n_deltas = asyncio.run(_run_case(writer, text, query, hits))
        top = reply_facts(hits)[:1]
        raw = check_generated(stats.llm_text, top, query=query, support=text) if stats.llm_text.strip() else []
        before.update(_kind(v) for v in raw)
        replies_before += bool(raw)
        # What was said: the whole reply passes the pipeline's check, every model sentence in it the strict one.
        final = check_grounding(reply, reply_facts(hits), query=query)
        for sentence in stats.accepted:
            final += check_generated(sentence, top, query=query, support=text)
        after.update(_kind(v) for v in final)
        replies_after += bool(final)
        fell_back += stats.used_template
        sentences_rejected += len(stats.rejected)
        rejected.update(_kind(v) for _, vs in stats.rejected for v in vs)
        multi_delta += n_deltas > 1
        first_ms.append(stats.first_sentence_ms or 0.0)
        total_ms.append(stats.total_ms)
        words.append(len(reply.split()))
        if stats.llm_first_sentence_ms is not None:
            llm_first_ms.append(stats.llm_first_sentence_ms)
        if stats.generation is not None:
            prefill_ms.append(stats.generation.prefill_ms)
            new_tokens.append(stats.generation.new_tokens)
            if stats.generation.tokens_per_s:
                tok_s.append(stats.generation.tokens_per_s)
        if i < show or (raw and len(examples) < 2 * show):
            examples.append({"query": text, "reply": reply, "llm_text": stats.llm_text, "raw_violations": raw,
                             "rejected": [s for s, _ in stats.rejected], "used_template": stats.used_template})
        log.info("%d/%d %r -> %r", i + 1, len(cases), text, reply)

    per100 = 100.0 / len(cases)
    results: dict[str, Any] = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "n": len(cases),
        "model_load_s": round(load_s, 2),
        "violations_before_per_100": round(sum(before.values()) * per100, 1),
        "replies_with_violation_before_per_100": round(replies_before * per100, 1),
        "violations_before_by_kind": dict(before.most_common()),
        "violations_after_per_100": round(sum(after.values()) * per100, 1),
        "replies_with_violation_after_per_100": round(replies_after * per100, 1),
        "violations_after_by_kind": dict(after.most_common()),
        "sentences_rejected_per_100": round(sentences_rejected * per100, 1),
        "rejection_reasons": dict(rejected.most_common()),
        "replies_with_model_sentence_per_100": round((len(cases) - fell_back) * per100, 1),
        "replies_streamed_in_several_deltas_per_100": round(multi_delta * per100, 1),
        "first_sentence_ms": summary(first_ms, 2),
        "model_first_sentence_ms": summary(llm_first_ms),
        "reply_ms": summary(total_ms),
        "prefill_ms": summary(prefill_ms),
        "new_tokens": summary(new_tokens),
        "decode_tokens_per_s": summary(tok_s),
        "reply_words": summary(words),
        "examples": examples,
    }
    write_results(out, results)
    print(table(results))
    return results


def table(r: dict[str, Any]) -> str:
    """The headline numbers as a markdown table."""
    rows = [
        ("replies", r["n"]),
        ("grounding violations / 100 replies, before the check", r["violations_before_per_100"]),
        ("replies with a violation / 100, before the check", r["replies_with_violation_before_per_100"]),
        ("violations before, by kind", ", ".join(f"{k} {v}" for k, v in r["violations_before_by_kind"].items())),
        ("grounding violations / 100 replies, after the check", r["violations_after_per_100"]),
        ("replies keeping a model sentence / 100", r["replies_with_model_sentence_per_100"]),
        ("why model sentences were dropped", ", ".join(f"{k} {v}" for k, v in r["rejection_reasons"].items())),
        ("first sentence p50 / p95 (ms)", f"{r['first_sentence_ms']['p50']} / {r['first_sentence_ms']['p95']}"),
        ("model's first sentence p50 / p95 (ms)",
         f"{r['model_first_sentence_ms']['p50']} / {r['model_first_sentence_ms']['p95']}"),
        ("whole reply p50 / p95 (ms)", f"{r['reply_ms']['p50']} / {r['reply_ms']['p95']}"),
        ("prompt prefill p50 (ms)", r["prefill_ms"]["p50"]),
        ("decoding tokens/s p50", f"{r['decode_tokens_per_s']['p50']} ({r['threads']} threads)"),
        ("reply words p50 / p95", f"{r['reply_words']['p50']} / {r['reply_words']['p95']}"),
    ]
    return "\n".join(["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


if __name__ == "__main__":
    import argparse
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reply_grounding.json"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main(args.out, args.n, threads=args.threads)
