import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.catalog.model import Product
from assistant.core.frames import ReplyTextDelta, ResponseDone, UserTurn
from assistant.replies.grounding import ProductFact, check_generated, check_grounding, unsupported_terms
from assistant.replies.llm import (
    LLMReplyWriter,
    ReplyStats,
    build_messages,
    fact_line,
    repeated_words,
    speakability,
)
from assistant.replies.templates import compose_reply, reply_facts
from assistant.runtime.turn import Brain
from assistant.search.query import ProductHit, parse_query
from tests.fakes import KeywordSearcher


def product(pid: str, title: str, price: float, color: str = "Black", **attrs: object) -> Product:
    return Product.from_dict({
        "id": pid, "title": title, "price": price, "currency": "USD", "category": "Men/Tops/Hoodies",
        "description": "A pullover hoodie in recycled polyester.",
        "attributes": {"color": color, "size": ["XS", "S", "M", "L", "XL"], "material": "recycled polyester",
                       "style": "pullover", **attrs},
    })


HITS = [
    ProductHit(product("A", "Harbor Fleece Hoodie — Black", 39.99), 0.7, ""),
    ProductHit(product("B", "Ridge Zip Hoodie — Black", 44.0, style="full-zip"), 0.6, ""),
    ProductHit(product("C", "Cove Pullover Hoodie — Black", 47.5), 0.5, ""),
]
TEXT = "black hoodie under fifty dollars"
QUERY = parse_query(TEXT)


class FakeLLM:
    """Streams a canned answer word by word; records the prompts and whether it was stopped early."""

    def __init__(self, answer: str, fail: bool = False, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[Sequence[dict[str, str]]] = []
        self.closed_early = False

    def __call__(self, messages: Sequence[dict[str, str]], max_new_tokens: int) -> Iterator[str]:
        self.calls.append(messages)
        if self.fail:
            raise RuntimeError("model exploded")
        words = self.answer.split(" ")
        finished = False
        try:
            for i, word in enumerate(words):
                time.sleep(self.delay_s)
                yield word if i == 0 else " " + word
            finished = True
        finally:
            self.closed_early = not finished


def run(writer: LLMReplyWriter, hits: Sequence[ProductHit] = HITS) -> tuple[list[str], ReplyStats]:
    async def go() -> tuple[list[str], ReplyStats]:
        stats = ReplyStats()
        return [d async for d in writer.stream(TEXT, QUERY, hits, stats)], stats

    return asyncio.run(go())


def test_prompt_holds_only_the_top_pick_and_constraints():
    messages = build_messages(TEXT, QUERY, reply_facts(HITS)[0])
    last = messages[-1]["content"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert '"black hoodie under fifty dollars"' in last and "Wants: black, under $50" in last
    assert "Harbor Fleece Hoodie | $39.99 | black | material: recycled polyester; style: pullover | sizes XS to XL" in last
    assert "Ridge" not in last and "Cove" not in last
    assert fact_line(ProductFact("X", "Plain Tee", 10.0, "USD", name="Plain Tee")) == "Plain Tee | $10"


def test_good_sentence_is_kept_and_others_are_named():
    llm = FakeLLM("The Harbor Fleece Hoodie is a black pullover in recycled polyester, at $39.99.")
    deltas, stats = run(LLMReplyWriter(generate=llm))
    text = "".join(deltas)
    assert deltas[0] == compose_reply(QUERY, HITS).split(". ")[0] + "."  # the template's opening comes first
    assert len(deltas) == 3 and not stats.used_template and stats.rejected == []
    assert "recycled polyester, at $39.99." in text
    assert text.endswith("I also have the Ridge Zip Hoodie at $44 and the Cove Pullover Hoodie at $47.50.")
    assert check_grounding(text, reply_facts(HITS), query=QUERY) == []
    assert stats.first_sentence_ms is not None and stats.first_sentence_ms < 50


@pytest.mark.parametrize("answer, kind", [
    ("The Harbor Fleece Hoodie is only $19.99 today.", "price"),
    ("The Summit Alpine Parka is a black pullover at $39.99.", "off topic"),
    ("The Harbor Fleece Hoodie is $39.99 and ships free with free returns.", "policy"),
    ("The Harbor Fleece Hoodie is a waterproof black pullover, at $39.99.", "attribute"),
    ("The Harbor Fleece Hoodie is a luxury pullover, at $39.99.", "word"),
    ("The Harbor Fleece Hoodie comes in purple, at $39.99.", "colour"),
    ("The Harbor Fleece Hoodie is $44.", "price"),  # another product's price is not this one's
])
def test_invented_claim_is_replaced_by_the_template(answer, kind):
    llm = FakeLLM(answer + " It is a great pick" + ", a great pick" * 20 + ".", delay_s=0.005)
    deltas, stats = run(LLMReplyWriter(generate=llm))
    text = "".join(deltas)
    assert stats.used_template and len(stats.rejected) == 1
    assert any(v.startswith(kind) for v in stats.rejected[0][1]), stats.rejected
    assert text == compose_reply(QUERY, HITS)  # opening + the template's own listing
    assert check_grounding(text, reply_facts(HITS), query=QUERY) == []
    assert llm.closed_early  # the model was stopped at the first bad sentence


def test_second_bad_sentence_is_dropped_first_kept():
    llm = FakeLLM("The Harbor Fleece Hoodie is a black pullover, at $39.99. Get 20% off with free shipping today.")
    deltas, stats = run(LLMReplyWriter(generate=llm))
    text = "".join(deltas)
    assert stats.accepted == ["The Harbor Fleece Hoodie is a black pullover, at $39.99."]
    assert "off" not in text and "shipping" not in text and "I also have" in text
    assert check_grounding(text, reply_facts(HITS), query=QUERY) == []


def test_no_hits_gives_the_templates_no_results_reply():
    llm = FakeLLM("The Harbor Fleece Hoodie is $39.99.")
    deltas, stats = run(LLMReplyWriter(generate=llm), hits=[])
    assert "".join(deltas) == compose_reply(QUERY, []) and llm.calls == [] and stats.used_template


def test_near_misses_get_the_template_not_the_model():
    # "black hoodie": a generated "a black pullover" about a grey near miss would pass the check (the query's
    # colour may be said back), so the model is not asked at all.
    llm = FakeLLM("The Ridge Zip Hoodie is a black pullover at $44.")
    near = [replace(HITS[0], near_miss=("colour",)), *HITS[1:]]
    deltas, stats = run(LLMReplyWriter(generate=llm), hits=near)
    assert "".join(deltas) == compose_reply(QUERY, near) and llm.calls == [] and stats.used_template


def test_failing_model_falls_back_to_the_template():
    deltas, stats = run(LLMReplyWriter(generate=FakeLLM("", fail=True)))
    assert "".join(deltas) == compose_reply(QUERY, HITS) and stats.error and "exploded" in stats.error


def test_writer_plugs_into_the_brain():
    searcher = KeywordSearcher()
    llm = FakeLLM("Nothing useful here.")
    brain = Brain(searcher, tts=None, writer=LLMReplyWriter(generate=llm))

    async def go() -> list[object]:
        return [f async for f in brain.respond(UserTurn(item_id="i1", text=TEXT, wants_audio=False), "r1")]

    frames = asyncio.run(go())
    done = frames[-1]
    assert isinstance(done, ResponseDone) and done.status == "completed"
    assert "".join(f.delta for f in frames if isinstance(f, ReplyTextDelta)) == done.text


def test_grounding_policy_size_and_attribute_claims():
    facts = reply_facts(HITS)
    assert check_grounding("The Ridge Zip Hoodie is $44, in sizes XS to XL.", facts) == []
    assert any(v.startswith("size 'XXL'") for v in check_grounding("It comes in sizes S to XXL.", facts))
    assert check_grounding("The Ridge Zip Hoodie comes in sizes S and M.", facts) == []  # sizes, not a name
    assert any(v.startswith("attribute 'waterproof'") for v in check_grounding("It is waterproof.", facts))
    assert check_grounding("It is recycled polyester.", facts) == []
    for claim in ("free shipping", "returns", "20% off", "on sale", "in stock"):
        bad = f"The Ridge Zip Hoodie is $44, {claim}."
        assert any(v.startswith("policy") for v in check_grounding(bad, facts)), claim
    passage = "Returns are free within 30 days."
    assert check_grounding("Returns are free within 30 days.", facts, passages=[passage]) == []


def test_grounding_of_generated_words():
    facts = reply_facts(HITS)[:1]
    assert unsupported_terms("A luxury hoodie with 20 litres, at $44.", "hoodies") == ["luxury", "20", "litres"]
    assert check_generated("The Harbor Fleece Hoodie is a great black pullover, at $39.99.", facts, query=QUERY) == []
    assert check_generated("The Harbor Fleece Hoodie is one of the pullovers.", facts) == []  # plural = same word
    assert any("luxury" in v for v in check_generated("The Harbor Fleece Hoodie is luxury.", facts))
    assert repeated_words("A lightweight, lightweight jacket.") == ["lightweight"]
    assert speakability("It comes in size S to L, a hoodie in size S to L.")  # a looping model


@pytest.mark.real_model
def test_real_smollm2_writes_a_grounded_streamed_reply(smollm2_dir: Path) -> None:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    writer = LLMReplyWriter(smollm2_dir, device="cpu", max_new_tokens=24)  # ~10 s on 2 idle cores
    start = time.perf_counter()
    deltas, stats = run(writer)
    text = "".join(deltas)
    assert len(deltas) > 1 and stats.llm_text.strip()  # the model did write, and the reply came in pieces
    assert check_grounding(text, reply_facts(HITS), query=QUERY) == []
    for sentence in stats.accepted:
        assert check_generated(sentence, reply_facts(HITS)[:1], query=QUERY, support=TEXT) == []
    assert stats.generation is not None and stats.generation.new_tokens > 0
    assert stats.first_sentence_ms is not None and stats.first_sentence_ms < 1000 * (time.perf_counter() - start)


@pytest.mark.real_model
def test_ctranslate2_runs_the_same_model_token_for_token(smollm2_dir: Path, tmp_path: Path) -> None:
    """The writer runs SmolLM2 on CTranslate2 when it is installed: the same float32 weights give the same greedy
    reply as transformers (faster: ``shoptalk bench llm-runtime``)."""
    import torch

    from assistant.replies.llm import Ct2Generator, SmolLMGenerator, build_messages, load_generator

    torch.set_num_threads(min(2, torch.get_num_threads()))
    messages = build_messages(TEXT, QUERY, reply_facts(HITS)[0])
    fast = Ct2Generator.load(smollm2_dir, tmp_path / "ct2", device="cpu")
    slow = SmolLMGenerator.load(smollm2_dir, "cpu")
    first, again = "".join(fast(messages, 16)), "".join(fast(messages, 16))  # the second reuses the cached prefix
    assert first and first == again == "".join(slow(messages, 16))
    assert fast.last_stats.cached_tokens > 0 and 0 < fast.last_stats.new_tokens <= 16
    assert isinstance(load_generator(smollm2_dir, "cpu", runtime="torch"), SmolLMGenerator)
    with pytest.raises(ValueError, match="unknown LLM runtime"):
        load_generator(smollm2_dir, "cpu", runtime="onnx")


PASSAGE = "Returns are free within 30 days of delivery. Items must be unworn, with their tags on."


def answer(writer: LLMReplyWriter, question: str, passages: Sequence[str]) -> tuple[str, ReplyStats]:
    async def go() -> tuple[str, ReplyStats]:
        stats = ReplyStats()
        return "".join([d async for d in writer.write_answer(question, passages, stats)]), stats

    return asyncio.run(go())


def test_answer_from_a_passage_is_checked_against_it():
    good = FakeLLM("Yes, returns are free within 30 days of delivery.")
    text, stats = answer(LLMReplyWriter(generate=good), "can I return it", [PASSAGE])
    assert text == "Yes, returns are free within 30 days of delivery." and not stats.used_template
    assert check_generated(text, [], passages=[PASSAGE]) == []

    bad = FakeLLM("Yes, returns are free within 60 days and shipping is free too.")
    text, stats = answer(LLMReplyWriter(generate=bad), "can I return it", [PASSAGE])
    assert stats.used_template and text == PASSAGE  # quoted instead
    assert any("60" in v for v in stats.rejected[0][1]) and any("shipping" in v for v in stats.rejected[0][1])

    text, stats = answer(LLMReplyWriter(generate=good), "can I pay with bitcoin", [])
    assert "don't know" in text and good.calls and len(good.calls) == 1


def test_warm_up_primes_both_prompts():
    llm = FakeLLM("Hi.")
    LLMReplyWriter(generate=llm).warm_up()
    assert [m[0]["role"] for m in llm.calls] == ["system", "system"] and len({m[0]["content"] for m in llm.calls}) == 2
