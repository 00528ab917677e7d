"""A shared, prioritised scheduler for speech-to-text calls of many concurrent voice sessions.

Every session asks the one STT engine for live partial transcripts while the shopper speaks and for a final (or
speculative final) transcript at the end of the turn. Served FIFO, a final waits behind every other session's
partials. :class:`ScheduledSTT` wraps an :class:`~speech.stt.STTEngine` and serves requests by priority instead:

* finals and speculative finals (:attr:`STTPriority.FINAL`, :attr:`STTPriority.SPECULATIVE`) first, FIFO among
  themselves, and never dropped;
* partials (:attr:`STTPriority.PARTIAL`) last, and only on ``partial_slots`` of the engine's workers at a time, so
  with two workers a final never waits for two captions to finish;
* a pending partial is dropped (its caller gets :class:`RequestDropped`) when the same session (``key``) submits a
  newer request, which supersedes it, or when it has waited longer than ``partial_max_wait_s`` (the caption would
  be stale when it arrived; the session asks again with more audio).

Requests run on ``workers`` threads (the engine's ``max_concurrency``: CTranslate2 ``num_workers``), so independent
requests decode in parallel. The queue is thread-based, so ``run_stt`` may be awaited from any event loop; an
awaiting task that is cancelled takes its request out of the queue if it has not started.

Example:
    >>> stt = ScheduledSTT(create_stt("faster-whisper:tiny.en", cache_dir=cache, workers=2))
    >>> final = await stt.run_stt(audio, priority=STTPriority.FINAL, key=session)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from speech.errors import SpeechError
from speech.stt import STTEngine, STTPriority, TranscribeOptions, Transcription

log = logging.getLogger(__name__)

PARTIAL_MAX_WAIT_S = 1.0  # a caption that could not even start within this long is not worth decoding


class RequestDropped(SpeechError):
    """A partial transcription was dropped by the scheduler (superseded or stale); not a failure."""

    code = "stt_dropped"


@dataclass(order=True)
class _Request:
    rank: int
    seq: int
    audio: np.ndarray = field(compare=False)
    options: TranscribeOptions | None = field(compare=False)
    priority: STTPriority = field(compare=False)
    key: object = field(compare=False)
    submitted: float = field(compare=False)
    future: concurrent.futures.Future[Transcription] = field(compare=False)
    done: bool = field(default=False, compare=False)  # taken off the queue (started, dropped or cancelled)


def _settle(future: concurrent.futures.Future[Transcription], *, result: Transcription | None = None,
            error: BaseException | None = None) -> None:
    """Resolve a future unless its caller already cancelled it."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except concurrent.futures.InvalidStateError:
        pass


class ScheduledSTT(STTEngine):
    """An STT engine shared by many sessions: prioritised, coalescing, parallel over the engine's workers.

    Args:
        engine: The engine that decodes; at most ``workers`` of its ``transcribe`` calls run at once.
        workers: Threads that serve the queue; default ``engine.max_concurrency``.
        partial_slots: How many partials may run at once; default ``workers - 1`` (at least 1), so that a worker
            is free for the next final.
        partial_max_wait_s: A partial still queued after this long is dropped.
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
        self._cond = threading.Condition()
        self._heap: list[_Request] = []
        self._pending_partial: dict[object, _Request] = {}
        self._running_partials = 0
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.stats: Counter[str] = Counter()

    # --- the STTEngine interface ----------------------------------------------------------------------------
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

    # --- queue ----------------------------------------------------------------------------------------------
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
        """
        future: concurrent.futures.Future[Transcription] = concurrent.futures.Future()
        rank = 0 if priority in (STTPriority.FINAL, STTPriority.SPECULATIVE) else 1
        request = _Request(rank, next(self._seq), audio, options, STTPriority(priority), key, time.monotonic(),
                           future)
        with self._cond:
            if self._closed:
                raise RuntimeError("the STT scheduler is closed")
            if key is not None:
                older = self._pending_partial.pop(key, None)
                if older is not None and not older.done:
                    self._drop(older, "superseded")
                if request.priority is STTPriority.PARTIAL:
                    self._pending_partial[key] = request
            heapq.heappush(self._heap, request)
            self.stats[f"submitted_{request.priority.name.lower()}"] += 1
            self._start_threads()
            self._cond.notify_all()
        return future

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
        with self._cond:
            return sum(1 for r in self._heap if not r.done and not r.future.cancelled())

    def close(self) -> None:
        """Stop the worker threads after the requests in progress; queued ones fail with ``RuntimeError``."""
        with self._cond:
            self._closed = True
            for request in self._heap:
                if not request.done:
                    request.done = True
                    _settle(request.future, error=RuntimeError("the STT scheduler is closed"))
            self._heap.clear()
            self._pending_partial.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _drop(self, request: _Request, reason: str) -> None:
        request.done = True
        self.stats[f"dropped_{reason}"] += 1
        if self._pending_partial.get(request.key) is request:
            del self._pending_partial[request.key]
        _settle(request.future, error=RequestDropped(f"partial transcription dropped ({reason})"))

    def _start_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._serve, name=f"stt-worker-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next(self) -> _Request | None:
        """The next request to run (called with the condition held); None once closed."""
        while not self._closed:
            while self._heap and (self._heap[0].done or self._heap[0].future.cancelled()):
                stale = heapq.heappop(self._heap)
                if not stale.done:
                    stale.done = True
                    self.stats["cancelled"] += 1
                    if self._pending_partial.get(stale.key) is stale:
                        del self._pending_partial[stale.key]
            if self._heap:
                top = self._heap[0]
                if top.priority is not STTPriority.PARTIAL:
                    return heapq.heappop(self._heap)
                if time.monotonic() - top.submitted > self.partial_max_wait_s:
                    heapq.heappop(self._heap)
                    self._drop(top, "stale")
                    continue
                if self._running_partials < self.partial_slots:
                    heapq.heappop(self._heap)
                    if self._pending_partial.get(top.key) is top:
                        del self._pending_partial[top.key]
                    self._running_partials += 1
                    return top
                # Only partials are queued and their slots are busy: wait for a slot, a final, or staleness.
                self._cond.wait(timeout=max(0.01, top.submitted + self.partial_max_wait_s - time.monotonic()))
                continue
            self._cond.wait()
        return None

    def _serve(self) -> None:
        while True:
            with self._cond:
                request = self._next()
                if request is None:
                    return
                request.done = True
            try:
                if not request.future.set_running_or_notify_cancel():  # cancelled between the pop and here
                    with self._cond:
                        self.stats["cancelled"] += 1
                    continue
                waited = time.monotonic() - request.submitted
                outcome: Transcription | None = None
                error: BaseException | None = None
                try:
                    outcome = self.engine.transcribe(request.audio, request.options)
                except BaseException as err:  # noqa: BLE001 - delivered to the one caller that asked
                    error = err
                with self._cond:
                    self.stats[f"ran_{request.priority.name.lower()}"] += 1
                    self.stats[f"wait_ms_{request.priority.name.lower()}"] += int(1000 * waited)
                _settle(request.future, result=outcome, error=error)
            finally:
                if request.priority is STTPriority.PARTIAL:
                    with self._cond:
                        self._running_partials -= 1
                        self._cond.notify_all()
