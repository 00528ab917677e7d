"""SmolLM2 generation on transformers against CTranslate2 (``shoptalk bench llm-runtime``).

The reply writer's own prompts over the demo catalog (a shopper's request and its top pick), greedy, in turns: each
runtime answers every prompt, twice (the second run reuses the cached prompt prefix, as a serving writer does). It
reports decode speed (tokens/s after the first), time to the first token, the whole reply's time, and how often the
runtime's reply is token for token the transformers one (the baseline: float32, the writer until now).

Runtimes: transformers float32 (baseline), CTranslate2 float32 (same weights), CTranslate2 int8 (weights quantized).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_results

log = logging.getLogger(__name__)

REQUESTS = (
    "black hoodies under fifty dollars", "a warm jacket for winter hiking", "running shoes in size nine",
    "something for the gym", "a rain jacket", "jeans for men", "a gift for my dad", "socks for hiking",
    "a red dress", "a water bottle", "a backpack for school", "a hoodie for my son", "boots for the snow",
    "a tee for summer runs", "leggings for yoga", "a cap",
)
MAX_NEW_TOKENS = 48


def _prompts(data_dir: Path, n: int) -> list[Any]:
    from assistant.catalog.demo import ensure_demo_catalog
    from assistant.catalog.model import Catalog
    from assistant.replies.grounding import facts_from_hits
    from assistant.replies.llm import build_messages
    from assistant.search.query import ProductHit, parse_query
    from assistant.search.retrieval import HybridRetriever
    from ranking.text_encoder import TextEncoder

    catalog = Catalog.load_jsonl(ensure_demo_catalog(data_dir))
    retriever = HybridRetriever(catalog, TextEncoder(), cache_dir=data_dir / "index", sources=("lexical", "text"))
    out = []
    for text in REQUESTS[:n]:
        query = parse_query(text, retriever.vocab)
        hits: list[ProductHit] = retriever.search(query)
        if hits:
            out.append(build_messages(text, query, facts_from_hits(hits[:1])[0]))
    return out


def _run(generate: Any, prompts: list[Any]) -> dict[str, Any]:
    replies, speeds, first, whole = [], [], [], []
    for messages in prompts:
        for attempt in range(2):
            start = time.perf_counter()
            text = "".join(generate(messages, MAX_NEW_TOKENS))
            elapsed = 1000 * (time.perf_counter() - start)
            if attempt == 1:  # the served case: the prompt's fixed prefix is cached
                stats = generate.last_stats
                replies.append(text)
                speeds.append(stats.tokens_per_s)
                first.append(stats.prefill_ms)
                whole.append(elapsed)
    return {"replies": replies, "tokens_per_s_p50": round(statistics.median(speeds), 1),
            "first_token_ms_p50": round(statistics.median(first), 1),
            "reply_ms_p50": round(statistics.median(whole), 1)}


def main(data_dir: Path, out: Path = Path("bench/results/llm_runtime.json"), prompts: int = 12) -> dict[str, Any]:
    """Run the three runtimes on the same prompts, write `out`, print the table."""
    import torch

    from assistant.replies.llm import Ct2Generator, SmolLMGenerator
    from ranking.llm import prepare_smollm2
    from ranking.registry import SMOLLM2_FOLDER

    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = prepare_smollm2(data_dir / "models" / SMOLLM2_FOLDER)
    chats = _prompts(data_dir, prompts)
    runtimes = {
        "transformers float32": lambda: SmolLMGenerator.load(folder, "cpu"),
        "CTranslate2 float32": lambda: Ct2Generator.load(folder, device="cpu"),
        "CTranslate2 int8": lambda: Ct2Generator.load(folder, folder.with_name(folder.name + "-ct2-int8"),
                                                      device="cpu", quantization="int8"),
    }
    rows: dict[str, Any] = {}
    for name, load in runtimes.items():
        rows[name] = _run(load(), chats)
    baseline = rows["transformers float32"]
    for row in rows.values():
        same = sum(a == b for a, b in zip(row["replies"], baseline["replies"], strict=True))
        row["same_reply_as_baseline"] = round(same / len(baseline["replies"]), 3)
        row["decode_speedup"] = round(row["tokens_per_s_p50"] / baseline["tokens_per_s_p50"], 2)
        row["reply_speedup"] = round(baseline["reply_ms_p50"] / row["reply_ms_p50"], 2)
    results = {"benchmark": "SmolLM2-135M-Instruct reply generation: transformers vs CTranslate2",
               "machine": {**machine(), "torch_threads": torch.get_num_threads()}, "prompts": len(chats),
               "max_new_tokens": MAX_NEW_TOKENS, "runtimes": rows}
    write_results(out, results)
    print(table(results))
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| runtime | decode tokens/s p50 | first token ms p50 | reply ms p50 | reply speed-up | same reply as "
             "transformers |", "|---|---|---|---|---|---|"]
    for name, row in results["runtimes"].items():
        lines.append(f"| {name} | {row['tokens_per_s_p50']:.1f} | {row['first_token_ms_p50']:.0f} | "
                     f"{row['reply_ms_p50']:.0f} | {row['reply_speedup']:.2f}× | {row['same_reply_as_baseline']:.0%} |")
    lines += ["", f"{results['prompts']} reply-writer prompts over the demo catalog, greedy, up to "
              f"{results['max_new_tokens']} new tokens, the prompt prefix cached (second run of each); 2 CPU threads."]
    return "\n".join(lines)
