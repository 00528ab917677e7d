"""Micro-batching (assistant.runtime.scheduling): batches form under load, results stay per request, priorities and failures."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.runtime.scheduling import (
    BatchedQueryEncoder,
    BatcherClosed,
    MicroBatcher,
    ScheduledTTS,
    batched_ranker_queries,
)
from tests.fakes import FakeTTS


def _gate_first(fn):  # type: ignore[no-untyped-def]
    """`fn` behind an event: the first batch blocks until released, so later requests queue up behind it."""
    release = threading.Event()
    started = threading.Event()
    calls: list[list] = []

    def run(batch: list) -> list:
        calls.append(list(batch))
        started.set()
        release.wait(5)
        return fn(batch)

    return run, release, started, calls


def test_requests_from_many_threads_batch_and_get_their_own_results() -> None:
    def square(batch: list[int]) -> list[int]:
        time.sleep(0.02)
        return [x * x for x in batch]

    batcher: MicroBatcher[int, int] = MicroBatcher(square, max_batch=8)
    results: dict[int, int] = {}
    barrier = threading.Barrier(12)

    def client(i: int) -> None:
        barrier.wait()
        results[i] = batcher(i, timeout=5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i * i for i in range(12)}
    summary = batcher.summary()
    assert summary["max_batch"] > 1 and summary["max_batch"] <= 8
    assert summary["batches"] < 12
    batcher.close()


def test_lone_request_does_not_wait_and_max_wait_gathers() -> None:
    lone: MicroBatcher[int, int] = MicroBatcher(lambda b: b, max_batch=8)
    start = time.perf_counter()
    assert lone(3) == 3
    assert time.perf_counter() - start < 0.5
    lone.close()
    held: MicroBatcher[int, int] = MicroBatcher(lambda b: b, max_batch=8, max_wait_s=0.2)
    futures = [held.submit(i) for i in range(3)]
    assert [f.result(5) for f in futures] == [0, 1, 2]
    assert held.summary()["max_batch"] == 3  # held open for company instead of running the first alone
    held.close()


def test_priority_order_and_max_batch() -> None:
    run, release, started, calls = _gate_first(lambda b: b)
    batcher: MicroBatcher[str, str] = MicroBatcher(run, max_batch=2)
    first = batcher.submit("busy")
    assert started.wait(5)
    later = [batcher.submit(name, priority=p) for name, p in (("c", 3), ("a", 1), ("d", 3), ("b", 1))]
    release.set()
    assert first.result(5) == "busy" and [f.result(5) for f in later] == ["c", "a", "d", "b"]
    assert calls == [["busy"], ["a", "b"], ["c", "d"]]  # by priority, FIFO among equals, at most 2 a batch
    batcher.close()


def test_a_bad_input_fails_only_its_own_caller() -> None:
    def strict(batch: list[int]) -> list[int]:
        if any(x < 0 for x in batch):
            raise ValueError("negative input")
        return [x + 1 for x in batch]

    run, release, started, _ = _gate_first(strict)
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8)
    batcher.submit(0)
    assert started.wait(5)
    good = [batcher.submit(i) for i in (1, 2)]
    bad = batcher.submit(-1)
    release.set()
    assert [f.result(5) for f in good] == [2, 3]
    with pytest.raises(ValueError, match="negative"):
        bad.result(5)
    assert batcher.summary()["split_batches"] == 1
    assert batcher(5) == 6  # and it goes on
    batcher.close()


def test_wrong_result_count_is_an_error_not_a_mixup() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda b: b[:1], max_batch=4)
    assert batcher(1) == 1  # a batch of one is fine
    run, release, started, _ = _gate_first(lambda b: b[:1])
    short: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4)
    short.submit(0)
    assert started.wait(5)
    pair = [short.submit(1), short.submit(2)]
    release.set()
    assert [f.result(5) for f in pair] == [1, 2]  # the short batch was re-run one request at a time
    batcher.close()
    short.close()


def test_cancelled_request_leaves_the_queue_and_close_fails_the_rest() -> None:
    run, release, started, calls = _gate_first(lambda b: b)
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=8)

    async def scenario() -> None:
        busy = asyncio.ensure_future(batcher.run(0))
        await asyncio.to_thread(started.wait, 5)
        doomed = asyncio.ensure_future(batcher.run(1))
        kept = asyncio.ensure_future(batcher.run(2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0.01)
        release.set()
        assert await busy == 0 and await kept == 2

    asyncio.run(scenario())
    assert calls == [[0], [2]] and batcher.summary()["cancelled"] == 1
    run2, release2, started2, _ = _gate_first(lambda b: b)
    closing: MicroBatcher[int, int] = MicroBatcher(run2)
    running = closing.submit(1)
    assert started2.wait(5)
    queued = closing.submit(2)
    threading.Timer(0.05, release2.set).start()
    closing.close()
    assert running.result(5) == 1
    with pytest.raises(BatcherClosed):
        queued.result(5)
    with pytest.raises(BatcherClosed):
        closing.submit(3)
    batcher.close()


def test_two_workers_run_two_batches_at_once() -> None:
    both = threading.Event()
    running = []

    def run(batch: list[int]) -> list[int]:
        running.append(batch)
        if len(running) >= 2:
            both.set()
        both.wait(5)  # the first batch only finishes once a second one runs beside it
        return batch

    batcher: MicroBatcher[int, int] = MicroBatcher(run, workers=2, name="pair")
    first = batcher.submit(1)
    time.sleep(0.05)
    second = batcher.submit(2)
    assert first.result(5) == 1 and second.result(5) == 2
    assert both.is_set() and len({t.name for t in batcher._threads}) == 2
    batcher.close()


def test_idle_workers_share_the_queue() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda b: b, workers=2, max_batch=8)
    assert batcher(0) == 0  # both workers started and idle
    time.sleep(0.05)
    with batcher._cond:  # queue two at once: neither worker can look before both are there
        pair = [batcher.submit(1), batcher.submit(2)]
    assert [f.result(5) for f in pair] == [1, 2]
    assert batcher.batch_sizes == {1: 3}  # two batches of one side by side, not one batch of two
    with batcher._cond:
        many = [batcher.submit(i) for i in range(6)]
    assert [f.result(5) for f in many] == list(range(6))
    assert max(batcher.batch_sizes) == 3  # six queued, two idle workers: three each
    batcher.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda b: b, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(lambda b: b, max_wait_s=-1)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(lambda b: b, workers=0)


def test_scheduled_tts_serves_first_sentences_first() -> None:
    engine = FakeTTS()
    order: list[str] = []
    gate = threading.Event()
    started = threading.Event()
    plain = engine.synthesize

    def slow(text: str) -> np.ndarray:
        order.append(text)
        started.set()
        gate.wait(5)
        return plain(text)

    engine.synthesize = slow  # type: ignore[method-assign]
    tts = ScheduledTTS(engine)
    assert tts.sample_rate == engine.sample_rate and tts.name == engine.name

    async def scenario() -> None:
        a0 = asyncio.ensure_future(tts.run_tts("Reply A, first.", priority=0))
        await asyncio.to_thread(started.wait, 5)
        a1 = asyncio.ensure_future(tts.run_tts("Reply A, second.", priority=1))
        b0 = asyncio.ensure_future(tts.run_tts("Reply B, first.", priority=0))
        await asyncio.sleep(0.01)
        gate.set()
        for task in (a0, a1, b0):
            assert (await task).dtype == np.float32

    asyncio.run(scenario())
    assert order == ["Reply A, first.", "Reply B, first.", "Reply A, second."]
    tts.close()


# --- real models ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder():  # type: ignore[no-untyped-def]
    import torch

    from ranking.text_encoder import TextEncoder

    torch.set_num_threads(1)
    return TextEncoder(device="cpu")


QUERIES = [
    "black hoodie",
    "show me some running shorts under thirty dollars please",
    "a watch i can swim with",
    "yoga mat bag",
    "what goes with the blue jacket my friend bought last week",
    "tee",
]


@pytest.mark.real_model
def test_real_minilm_batched_queries_match_one_by_one(text_encoder) -> None:  # type: ignore[no-untyped-def]
    batched = text_encoder.encode_queries(QUERIES)
    alone = np.stack([text_encoder.encode_queries([q])[0] for q in QUERIES])
    np.testing.assert_allclose(batched, alone, atol=2e-5)
    assert batched.shape == (len(QUERIES), text_encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)

    wrapped = BatchedQueryEncoder(text_encoder, max_batch=8)
    got: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(QUERIES))

    def client(i: int) -> None:
        barrier.wait()
        got[i] = wrapped.encode_query(QUERIES[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(QUERIES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, q in enumerate(QUERIES):
        np.testing.assert_allclose(got[i], alone[i], atol=2e-5, err_msg=q)
    assert wrapped.batcher.summary()["max_batch"] > 1
    before = wrapped.batcher.summary()["submitted"]
    np.testing.assert_array_equal(wrapped.encode_query(QUERIES[0]), got[0])  # from the cache
    assert wrapped.batcher.summary()["submitted"] == before
    assert wrapped.dim == text_encoder.dim and wrapped.encode(["x"]).shape == (1, text_encoder.dim)
    wrapped.close()


@pytest.mark.real_model
def test_real_ranker_batched_query_encodes_match_and_rerank_is_unchanged(
    text_encoder, smollm2_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from assistant.catalog.demo import generate_demo_catalog
    from assistant.catalog.model import Catalog
    from assistant.search.query import parse_query
    from assistant.search.rerank import LLMReranker
    from assistant.search.retrieval import HybridRetriever
    from ranking.registry import create_ranker, shipped_checkpoint

    checkpoint = shipped_checkpoint("smollm2-lora")
    ranker = create_ranker("smollm2-lora", cache_dir=smollm2_dir.parent, checkpoint=checkpoint, device="cpu")
    batched = ranker.encode_queries(QUERIES)
    alone = np.stack([ranker.encode_query(q) for q in QUERIES])
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-4)

    catalog = Catalog.load_jsonl(generate_demo_catalog(tmp_path / "catalog"))
    retriever = HybridRetriever(catalog, text_encoder)
    plain = LLMReranker(ranker, catalog)
    batcher = batched_ranker_queries(ranker, max_batch=8)
    queued = LLMReranker(ranker, catalog, query_batcher=batcher)
    texts = ["black hoodies under fifty dollars", "running shoes", "something warm", "a jacket in medium"]
    queries = {t: parse_query(t, retriever.vocab) for t in texts}
    hits = {t: retriever.search(queries[t]) for t in texts}
    assert all(hits.values())
    expected = {t: [(h.product.id, h.score) for h in plain.rerank(queries[t], hits[t])] for t in texts}
    results: dict[str, list[tuple[str, float]]] = {}
    barrier = threading.Barrier(len(texts))

    def client(text: str) -> None:
        barrier.wait()
        results[text] = [(h.product.id, h.score) for h in queued.rerank(queries[text], hits[text])]

    threads = [threading.Thread(target=client, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for text in texts:
        assert [pid for pid, _ in results[text]] == [pid for pid, _ in expected[text]], text
        np.testing.assert_allclose([s for _, s in results[text]], [s for _, s in expected[text]], atol=1e-3)
    assert batcher.summary()["submitted"] == len(texts)
    batcher.close()


def test_metrics_collector_reports_requests_and_batches() -> None:
    from server.metrics import BatcherCollector

    batcher: MicroBatcher[int, int] = MicroBatcher(lambda b: b)
    for i in range(3):
        batcher(i)
    collector = BatcherCollector()
    collector.batchers["demo"] = batcher
    found = {m.name: m.samples[0] for m in collector.collect()}
    assert found["shoptalk_batcher_requests"].value == 3 and found["shoptalk_batcher_requests"].labels == {
        "batcher": "demo"}
    assert 1 <= found["shoptalk_batcher_batches"].value <= 3
    batcher.close()


def test_query_cache_is_lru_and_hands_out_copies() -> None:
    from ranking.text_encoder import QueryCache

    calls: list[str] = []

    def compute(text: str) -> np.ndarray:
        calls.append(text)
        return np.full(3, len(text), np.float32)

    cache = QueryCache(size=2)
    first = cache.get("a", compute)
    first[:] = 99  # a caller writing to its vector does not change the cached one
    assert cache.get("a", compute).tolist() == [1, 1, 1] and calls == ["a"]
    cache.get("bb", compute)
    cache.get("a", compute)  # "a" is now the most recent
    cache.get("ccc", compute)  # evicts "bb"
    assert len(cache) == 2 and calls == ["a", "bb", "ccc"]
    cache.get("bb", compute)
    assert calls[-1] == "bb"
    cache.clear()
    assert len(cache) == 0
