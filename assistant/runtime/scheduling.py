"""Micro-batching: model calls of many concurrent sessions served together, in one forward pass.

On 2 CPU cores a MiniLM query encode costs ~15 ms alone and ~4.5 ms a query in a batch of 8; the ranker's SmolLM2
query encode ~16 ms alone and ~5.5 ms in a batch of 8 (``shoptalk bench batching`` measures it). With one thread
per session each would pay the batch-of-one price and wait behind the others. :class:`MicroBatcher` puts their
requests in one queue that a single worker drains: whatever queued while the previous batch ran goes into the next
one (up to ``max_batch``), so batches grow with load and a lone request waits for nothing (``max_wait_s=0``, the
default; a positive value holds a batch open that long for company). With several workers (torch on one thread each)
idle workers split the queue rather than one taking it all; the server runs one, because two, beside the STT
workers, starved its event loop in whole voice turns (``shoptalk bench load``; see the README).

Requests carry a priority (lower first, FIFO among equals). :class:`ScheduledTTS` uses it to synthesize every
reply's first sentence before any reply's later ones; hibari's ONNX graph takes one sentence at a time
(``ids: [1, L]``), so TTS is scheduled rather than batched.

The wrappers keep the interfaces the rest of the code uses: :class:`BatchedQueryEncoder` is a ``TextEncoder``
whose ``encode_query`` is batched across callers, :class:`ScheduledTTS` a ``TTSEngine``; ``LLMReranker`` takes a
batched query encoder (:func:`batched_ranker_queries`).

Example:
    >>> encoder = BatchedQueryEncoder(TextEncoder())
    >>> vec = encoder.encode_query("black hoodies")   # from any thread; batched with the others
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ranking.text_encoder import SentenceEncoder
from speech.tts import TTSEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 16


class BatcherClosed(RuntimeError):
    """The batcher was closed before the request ran."""


@dataclass(order=True)
class _Item(Generic[T, R]):
    priority: int
    seq: int
    value: T = field(compare=False)
    future: concurrent.futures.Future[R] = field(compare=False)


def _settle(future: concurrent.futures.Future[R], *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class MicroBatcher(Generic[T, R]):
    """Serve ``fn(batch) -> results`` for requests submitted from any thread, in batches.

    Args:
        fn: Runs one batch: a list of inputs -> a sequence of results in the same order.
        max_batch: Largest batch.
        max_wait_s: How long a batch smaller than `max_batch` is held open for more requests after its first
            arrived; 0 takes just what is queued (no added latency when idle).
        name: Thread name and log prefix.
        setup: Called once in each worker thread before its first batch (e.g. to set torch's thread count).
        workers: Threads serving batches; with 2 on 2 cores (each torch on 1 thread) two batches run at once, so
            two sessions are served in parallel as without batching, and more share batches.

    A batch that raises is retried one request at a time, so one bad input fails only its own caller.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = 0.0,
        name: str = "batcher",
        setup: Callable[[], None] | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self._setup = setup
        self.workers = workers
        self._cond = threading.Condition()
        self._heap: list[_Item[T, R]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting for (or taking) a batch
        self._closed = False
        self.stats: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()

    def submit(self, value: T, *, priority: int = 0) -> concurrent.futures.Future[R]:
        """Queue one request; the future resolves with its result (or its own error).

        Raises:
            BatcherClosed: After `close`.
        """
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"{self.name} is closed")
            heapq.heappush(self._heap, _Item(priority, next(self._seq), value, future))
            self.stats["submitted"] += 1
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return future

    def __call__(self, value: T, *, priority: int = 0, timeout: float | None = None) -> R:
        """Submit and wait (blocking)."""
        return self.submit(value, priority=priority).result(timeout)

    async def run(self, value: T, *, priority: int = 0) -> R:
        """Submit and await; a cancelled awaiting task takes its request out of the queue if it has not run."""
        return await asyncio.wrap_future(self.submit(value, priority=priority))

    def pending(self) -> int:
        """Requests waiting (cancelled ones excluded)."""
        with self._cond:
            return sum(1 for item in self._heap if not item.future.cancelled())

    def summary(self) -> dict[str, Any]:
        """Counts for metrics and benchmarks: requests, batches, mean and largest batch size."""
        with self._cond:
            batches = sum(self.batch_sizes.values())
            items = sum(size * n for size, n in self.batch_sizes.items())
            return {
                **dict(self.stats),
                "batches": batches,
                "mean_batch": round(items / batches, 2) if batches else 0.0,
                "max_batch": max(self.batch_sizes, default=0),
            }

    def close(self) -> None:
        """Finish the batch in progress; queued requests fail with :class:`BatcherClosed`."""
        with self._cond:
            self._closed = True
            for item in self._heap:
                _settle(item.future, error=BatcherClosed(f"{self.name} is closed"))
            self._heap.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _take(self) -> list[_Item[T, R]] | None:
        """The next batch (condition held): the best live requests; None once closed.

        A worker takes its share of the queue, not all of it, when other workers are idle too: two queued requests
        and two idle workers run as two batches of one side by side (faster on 2 cores than one batch of two).
        """
        self._idle += 1
        try:
            return self._take_share()
        finally:
            self._idle -= 1

    def _take_share(self) -> list[_Item[T, R]] | None:
        while not self._closed:
            batch: list[_Item[T, R]] = []
            deadline: float | None = None
            limit = self.max_batch
            if self._idle > 1 and self.max_wait_s <= 0:  # others idle too: take this worker's share only
                limit = min(limit, max(1, math.ceil(len(self._heap) / self._idle)))
            while len(batch) < limit:
                while self._heap and len(batch) < limit:
                    item = heapq.heappop(self._heap)
                    if item.future.set_running_or_notify_cancel():
                        batch.append(item)
                    else:
                        self.stats["cancelled"] += 1
                if not batch or len(batch) >= limit or self.max_wait_s <= 0 or self._closed:
                    break
                deadline = deadline if deadline is not None else time.monotonic() + self.max_wait_s
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            if batch:
                if self._heap:
                    self._cond.notify()  # the rest is another idle worker's share
                return batch
            self._cond.wait()
        return None

    def _serve(self) -> None:
        if self._setup is not None:
            self._setup()
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    return
                self.batch_sizes[len(batch)] += 1
            self._run(batch)

    def _run(self, batch: list[_Item[T, R]]) -> None:
        try:
            results = list(self.fn([item.value for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(batch)} inputs gave {len(results)} results")
        except BaseException as err:  # noqa: BLE001 - retried alone below, or delivered to its one caller
            if len(batch) == 1:
                _settle(batch[0].future, error=err)
                return
            log.warning("%s: a batch of %d failed (%s); running its requests one by one", self.name, len(batch), err)
            with self._cond:
                self.stats["split_batches"] += 1
            for item in batch:
                self._run([item])
            return
        for item, result in zip(batch, results, strict=True):
            _settle(item.future, result=result)


class BatchedQueryEncoder:
    """A `ranking.text_encoder.SentenceEncoder` whose ``encode_query`` is micro-batched across threads.

    Args:
        encoder: The encoder that runs the batches (``encode_queries(texts) -> [n, dim]``); product texts
            (``encode``) and already batched queries go straight to it.
        max_batch: Largest batch of queries.
        max_wait_s: See :class:`MicroBatcher`.
        workers: Batches run at once (see :class:`MicroBatcher`).
        threads: torch threads in each worker; None leaves torch's setting alone.
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = 0.0,
        workers: int = 1,
        threads: int | None = None,
    ) -> None:
        from ranking.text_encoder import QueryCache

        self.encoder = encoder
        self.model_path = encoder.model_path
        self.device = encoder.device
        self.batcher = query_batcher(encoder, name="query-encoder", max_batch=max_batch, max_wait_s=max_wait_s,
                                     workers=workers, threads=threads)
        self.query_cache = QueryCache()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def name(self) -> str:
        return self.encoder.name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Product texts, in the wrapped encoder's own batches."""
        return self.encoder.encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries already batched by the caller, in one call."""
        return self.encoder.encode_queries(texts)

    def encode_query(self, text: str) -> np.ndarray:
        """One query's L2-normalised vector ``[dim]``; recent queries come from a cache."""
        return self.query_cache.get(text, self.batcher)

    def close(self) -> None:
        self.batcher.close()


def _torch_threads(threads: int | None) -> Callable[[], None] | None:
    """A worker-thread setup that gives torch `threads` intra-op threads there (OpenMP: per thread)."""
    if threads is None:
        return None

    def setup() -> None:
        import torch

        torch.set_num_threads(threads)

    return setup


def query_batcher(
    model: Any,
    *,
    name: str,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_s: float = 0.0,
    workers: int = 1,
    threads: int | None = None,
) -> MicroBatcher[str, np.ndarray]:
    """A batcher of one query text -> its vector, over ``model.encode_queries(texts) -> [n, dim]``.

    Args:
        model: A ``TextEncoder`` or ``Ranker`` (or their Ray Serve proxies).
        name: Thread name and log prefix.
        max_batch: Largest batch of queries.
        max_wait_s: See :class:`MicroBatcher`.
        workers: Batches run at once.
        threads: torch threads in each worker; None leaves torch's setting alone.
    """
    return MicroBatcher(
        lambda texts: list(model.encode_queries(texts)),
        max_batch=max_batch,
        max_wait_s=max_wait_s,
        name=name,
        setup=_torch_threads(threads),
        workers=workers,
    )


def batched_ranker_queries(
    ranker: Any,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_s: float = 0.0,
    workers: int = 1,
    threads: int | None = 1,
) -> MicroBatcher[str, np.ndarray]:
    """A `query_batcher` for a ``ranking.ranker.Ranker``'s query encodes, for ``LLMReranker(query_batcher=...)``.

    Args:
        ranker: The ranker (or its Ray Serve proxy).
        max_batch: Largest batch of queries.
        max_wait_s: See :class:`MicroBatcher`.
        workers: Batches run at once.
        threads: torch threads in each worker (the ranker's small matmuls run best on one); None leaves torch's
            setting alone.
    """
    return query_batcher(ranker, name="ranker-queries", max_batch=max_batch, max_wait_s=max_wait_s,
                         workers=workers, threads=threads)


class ScheduledTTS(TTSEngine):
    """A TTS engine shared by all sessions, serving sentences by priority: every reply's first sentence first.

    ``run_tts(text, priority=i)`` with ``i`` the sentence's index in its reply; a cancelled reply (barge-in) takes
    its queued sentences out. ``synthesize`` (warm-up, tools) goes straight to the engine.
    """

    def __init__(self, engine: TTSEngine) -> None:
        super().__init__()
        self.engine = engine
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self.batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            lambda texts: [engine.synthesize(t) for t in texts], max_batch=1, name="tts"
        )

    def synthesize(self, text: str) -> np.ndarray:
        return self.engine.synthesize(text)

    async def run_tts(self, text: str, *, priority: int = 0) -> np.ndarray:
        return await self.batcher.run(text, priority=priority)

    def close(self) -> None:
        self.batcher.close()
