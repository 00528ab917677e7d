"""Scheduling the model calls of many concurrent sessions: one scheduler, batched or prioritised.

:class:`MicroBatcher` is the one implementation: requests from any thread in one priority queue (lower first, FIFO
among equals) that worker threads drain, optionally in batches, optionally with lanes of requests that may be
dropped (`Lane`). Three engines are built on it:

* :class:`BatchedQueryEncoder` (a ``SentenceEncoder``) and :func:`batched_ranker_queries` batch query encodes. On
  2 CPU cores a MiniLM query encode costs ~15 ms alone and ~4.5 ms a query in a batch of 8; the ranker's SmolLM2
  query encode ~16 ms alone and ~5.5 ms in a batch of 8 (``shoptalk bench batching``). Whatever queued while the
  previous batch ran goes into the next one (up to ``max_batch``), so batches grow with load and a lone request
  waits for nothing (``max_wait_s=0``, the default). The server runs one worker: two, beside the STT workers,
  starved its event loop in whole voice turns (``shoptalk bench load``; see the README).
* :class:`ScheduledTTS` synthesizes every reply's first sentence before any reply's later ones (hibari's ONNX graph
  takes one sentence at a time, so TTS is scheduled, not batched).
* :class:`ScheduledSTT` serves Whisper finals before partials, on a worker kept free of captions, and drops a
  caption that a newer request supersedes or that waited too long.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ranking.text_encoder import SentenceEncoder
from speech.errors import RequestDropped
from speech.stt import STTEngine, STTPriority, TranscribeOptions, Transcription
from speech.tts import TTSEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 16
PARTIAL_MAX_WAIT_S = 1.0  # a caption that could not even start within this long is not worth decoding


class BatcherClosed(RuntimeError):
    """The batcher was closed before the request ran."""


@dataclass(frozen=True)
class Lane:
    """A class of requests that may be refused when they would be of no use: live captions, for instance.

    Args:
        slots: At most this many of the lane's requests run at once (so other requests always find a worker).
        max_wait_s: A request of the lane still queued after this long is dropped (its answer would be stale).
    """

    slots: int = 1
    max_wait_s: float = math.inf


@dataclass(order=True)
class _Item(Generic[T, R]):
    priority: int
    seq: int
    value: T = field(compare=False)
    future: concurrent.futures.Future[R] = field(compare=False)
    key: object = field(default=None, compare=False)
    lane: str | None = field(default=None, compare=False)
    tag: str | None = field(default=None, compare=False)
    submitted: float = field(default=0.0, compare=False)
    dropped: bool = field(default=False, compare=False)


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
    """Serve ``fn(batch) -> results`` for requests submitted from any thread, by priority, in batches.

    The one scheduler of the runtime: query encodes are batched, TTS sentences (`ScheduledTTS`) and Whisper decodes
    (`ScheduledSTT`) are scheduled one at a time (``max_batch=1``) by priority.

    Args:
        fn: Runs one batch: a list of inputs -> a sequence of results in the same order.
        max_batch: Largest batch.
        max_wait_s: How long a batch smaller than `max_batch` is held open for more requests after its first
            arrived; 0 takes just what is queued (no added latency when idle).
        name: Thread name and log prefix.
        setup: Called once in each worker thread before its first batch (e.g. to set torch's thread count).
        workers: Threads serving batches; with 2 on 2 cores (each torch on 1 thread) two batches run at once, so
            two sessions are served in parallel as without batching, and more share batches.
        lanes: `Lane` policies by name, for requests submitted with ``lane=``: how many run at once, how long one
            may wait. A lane's pending request is also dropped when its ``key`` submits anything newer.
        dropped: Builds the error a dropped request's caller gets, from the reason (``superseded``, ``stale``).

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
        lanes: Mapping[str, Lane] | None = None,
        dropped: Callable[[str], BaseException] | None = None,
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
        self.lanes = dict(lanes or {})
        if self.lanes and dropped is None:
            raise ValueError("a batcher with lanes needs the error its dropped requests get (dropped=...)")
        self._dropped = dropped or (lambda reason: RuntimeError(f"{name}: request dropped ({reason})"))
        self._cond = threading.Condition()
        self._heap: list[_Item[T, R]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting for (or taking) a batch
        self._running: Counter[str] = Counter()  # requests of each lane running now
        self._pending_in_lane: dict[object, _Item[T, R]] = {}  # key -> its request waiting in a lane
        self._closed = False
        self.stats: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()

    def submit(self, value: T, *, priority: int = 0, key: object = None, lane: str | None = None,
               tag: str | None = None) -> concurrent.futures.Future[R]:
        """Queue one request; the future resolves with its result (or its own error).

        Args:
            value: The input.
            priority: Lower runs first; FIFO among equals.
            key: Who asks (e.g. one voice session): a newer request of the same key drops its pending lane request.
            lane: The `Lane` the request belongs to (None: it is never dropped).
            tag: Counted in `stats` as ``submitted_<tag>``, ``ran_<tag>`` and ``wait_ms_<tag>``.

        Raises:
            BatcherClosed: After `close`.
            KeyError: An unknown lane.
        """
        if lane is not None and lane not in self.lanes:
            raise KeyError(f"{self.name}: unknown lane {lane!r}")
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        item = _Item(priority, next(self._seq), value, future, key, lane, tag, time.monotonic())
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"{self.name} is closed")
            if key is not None:
                older = self._pending_in_lane.pop(key, None)
                if older is not None:
                    self._drop(older, "superseded")
                if lane is not None:
                    self._pending_in_lane[key] = item
            heapq.heappush(self._heap, item)
            self.stats["submitted"] += 1
            if tag is not None:
                self.stats[f"submitted_{tag}"] += 1
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return future

    def __call__(self, value: T, *, priority: int = 0, timeout: float | None = None) -> R:
        """Submit and wait (blocking)."""
        return self.submit(value, priority=priority).result(timeout)

    async def run(self, value: T, *, priority: int = 0, key: object = None, lane: str | None = None,
                  tag: str | None = None) -> R:
        """Submit and await; a cancelled awaiting task takes its request out of the queue if it has not run."""
        return await asyncio.wrap_future(self.submit(value, priority=priority, key=key, lane=lane, tag=tag))

    def pending(self) -> int:
        """Requests waiting (cancelled and dropped ones excluded)."""
        with self._cond:
            return sum(1 for item in self._heap if not item.dropped and not item.future.cancelled())

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
                if not item.dropped:
                    _settle(item.future, error=BatcherClosed(f"{self.name} is closed"))
            self._heap.clear()
            self._pending_in_lane.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _drop(self, item: _Item[T, R], reason: str) -> None:
        """Refuse a queued request (condition held): its caller gets the `dropped` error."""
        item.dropped = True
        self.stats[f"dropped_{reason}"] += 1
        if self._pending_in_lane.get(item.key) is item:
            del self._pending_in_lane[item.key]
        _settle(item.future, error=self._dropped(reason))

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

    def _admit(self, item: _Item[T, R], now: float) -> bool | None:
        """Whether `item` (popped) may run now: True; False to keep it queued (its lane is full); None: it is gone."""
        if item.dropped:
            return None
        lane = self.lanes.get(item.lane) if item.lane is not None else None
        if lane is not None:
            if now - item.submitted > lane.max_wait_s:
                self._drop(item, "stale")
                return None
            if self._running[item.lane or ""] >= lane.slots:
                return False
        if not item.future.set_running_or_notify_cancel():
            self.stats["cancelled"] += 1
            if self._pending_in_lane.get(item.key) is item:
                del self._pending_in_lane[item.key]
            return None
        if item.lane is not None:
            self._running[item.lane] += 1
            if self._pending_in_lane.get(item.key) is item:
                del self._pending_in_lane[item.key]
        return True

    def _take_share(self) -> list[_Item[T, R]] | None:
        while not self._closed:
            batch: list[_Item[T, R]] = []
            held: list[_Item[T, R]] = []  # lane requests whose lane is full: they stay queued
            deadline: float | None = None
            limit = self.max_batch
            if self._idle > 1 and self.max_wait_s <= 0:  # others idle too: take this worker's share only
                limit = min(limit, max(1, math.ceil(len(self._heap) / self._idle)))
            while len(batch) < limit:
                now = time.monotonic()
                while self._heap and len(batch) < limit:
                    item = heapq.heappop(self._heap)
                    admitted = self._admit(item, now)
                    if admitted:
                        batch.append(item)
                    elif admitted is False:
                        held.append(item)
                if not batch or len(batch) >= limit or self.max_wait_s <= 0 or self._closed:
                    break
                deadline = deadline if deadline is not None else time.monotonic() + self.max_wait_s
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for item in held:
                    heapq.heappush(self._heap, item)
                held = []
                self._cond.wait(timeout=left)
            for item in held:
                heapq.heappush(self._heap, item)
            if batch:
                if self._heap:
                    self._cond.notify()  # the rest is another idle worker's share
                return batch
            # Nothing may run: wait for a request, a free lane slot, or the first held request to go stale.
            stale_at = [item.submitted + self.lanes[item.lane].max_wait_s for item in held if item.lane is not None]
            timeout = max(0.01, min(stale_at) - time.monotonic()) if stale_at else None
            self._cond.wait(timeout=None if timeout is None or math.isinf(timeout) else timeout)
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
                now = time.monotonic()
                for item in batch:
                    if item.tag is not None:
                        self.stats[f"ran_{item.tag}"] += 1
                        self.stats[f"wait_ms_{item.tag}"] += int(1000 * (now - item.submitted))
            try:
                self._run(batch)
            finally:
                lanes = [item.lane for item in batch if item.lane is not None]
                if lanes:
                    with self._cond:
                        self._running.subtract(lanes)
                        self._cond.notify_all()

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


class ScheduledSTT(STTEngine):
    """An STT engine shared by many sessions: prioritised, coalescing, parallel over the engine's workers.

    Every session asks the one engine for live partial transcripts while the shopper speaks and for a final (or
    speculative final) transcript at the end of the turn. Served FIFO, a final would wait behind every other
    session's partials. Instead:

    * finals and speculative finals (`STTPriority.FINAL`, `STTPriority.SPECULATIVE`) first, FIFO among themselves,
      and never dropped;
    * partials (`STTPriority.PARTIAL`) last, and only on ``partial_slots`` of the workers at a time, so with two
      workers a final never waits for two captions to finish;
    * a pending partial is dropped (its caller gets `speech.errors.RequestDropped`) when the same session (``key``)
      submits a newer request, which supersedes it, or when it has waited longer than ``partial_max_wait_s`` (the
      caption would be stale when it arrived; the session asks again with more audio).

    Requests run on ``workers`` threads (the engine's ``max_concurrency``: CTranslate2 ``num_workers``), so
    independent requests decode in parallel; an awaiting task that is cancelled takes its request out of the queue
    if it has not started.

    Args:
        engine: The engine that decodes; at most ``workers`` of its ``transcribe`` calls run at once.
        workers: Threads that serve the queue; default ``engine.max_concurrency``.
        partial_slots: How many partials may run at once; default ``workers - 1`` (at least 1), so that a worker
            is free for the next final.
        partial_max_wait_s: A partial still queued after this long is dropped.

    Example:
        >>> stt = ScheduledSTT(create_stt("faster-whisper:tiny.en", cache_dir=cache, workers=2))
        >>> final = await stt.run_stt(audio, priority=STTPriority.FINAL, key=session)
    """

    def __init__(
        self,
        engine: STTEngine,
        *,
        workers: int | None = None,
        partial_slots: int | None = None,
        partial_max_wait_s: float = PARTIAL_MAX_WAIT_S,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.workers = max(1, workers or engine.max_concurrency)
        super().__init__(max_concurrency=self.workers)
        self.partial_slots = max(1, partial_slots if partial_slots is not None else self.workers - 1)
        self.partial_max_wait_s = partial_max_wait_s
        self.scheduler: MicroBatcher[tuple[np.ndarray, TranscribeOptions | None], Transcription] = MicroBatcher(
            lambda batch: [engine.transcribe(audio, options) for audio, options in batch],
            max_batch=1, workers=self.workers, name="stt",
            lanes={"partial": Lane(slots=self.partial_slots, max_wait_s=partial_max_wait_s)},
            dropped=lambda reason: RequestDropped(f"partial transcription dropped ({reason})"),
        )

    @property
    def stats(self) -> Counter[str]:
        """``submitted_<priority>``, ``ran_<priority>``, ``wait_ms_<priority>``, ``dropped_<reason>``, ..."""
        return self.scheduler.stats

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Blocking transcription straight on the engine (warm-up, benchmarks); sessions use :meth:`run_stt`."""
        return self.engine.transcribe(audio, options)

    async def run_stt(
        self,
        audio: np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        priority: STTPriority = STTPriority.FINAL,
        key: object = None,
    ) -> Transcription:
        """Queue a transcription and await it; see :meth:`submit`.

        Raises:
            RequestDropped: For a partial that was superseded or went stale.
            SpeechToTextError: What the engine raised, for this request only.
        """
        return await asyncio.wrap_future(self.submit(audio, options, priority=priority, key=key))

    def submit(
        self,
        audio: np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        priority: STTPriority = STTPriority.FINAL,
        key: object = None,
    ) -> concurrent.futures.Future[Transcription]:
        """Queue a transcription; returns its future (cancel it to withdraw a request that has not started).

        Args:
            audio: 1-D float32 samples at 16 kHz.
            options: Decoding options.
            priority: Finals and speculative finals are served before partials and never dropped.
            key: The asking session; its pending partial is dropped when it submits anything newer.

        Raises:
            BatcherClosed: After `close` (a ``RuntimeError``).
        """
        priority = STTPriority(priority)
        partial = priority is STTPriority.PARTIAL
        return self.scheduler.submit((audio, options), priority=1 if partial else 0, key=key,
                                     lane="partial" if partial else None, tag=priority.name.lower())

    def warm_up(self, audio: np.ndarray, rounds: int = 2) -> None:
        """Decode ``audio`` on every worker at once, ``rounds`` times.

        Each worker's first real request then does not pay for lazy allocations, and the server's memory settles
        before the first shopper.
        """
        for _ in range(rounds):
            futures = [self.submit(audio, priority=STTPriority.FINAL) for _ in range(self.workers)]
            for future in futures:
                future.result()

    def pending(self) -> int:
        """Requests waiting to start (cancelled and dropped ones excluded)."""
        return self.scheduler.pending()

    def close(self) -> None:
        """Stop the worker threads after the requests in progress; queued ones fail with `BatcherClosed`."""
        self.scheduler.close()


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
