"""The shared STT scheduler with fake engines: priorities, coalescing and dropping partials, cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from assistant.runtime.scheduling import ScheduledSTT
from speech.errors import RequestDropped, SpeechToTextError
from speech.stt import STTEngine, STTPriority, TranscribeOptions, Transcription

FINAL, SPEC, PARTIAL = STTPriority.FINAL, STTPriority.SPECULATIVE, STTPriority.PARTIAL


def clip(tag: int) -> np.ndarray:
    """Audio whose first sample names the request (the fake engine echoes it)."""
    audio = np.zeros(1600, dtype=np.float32)
    audio[0] = tag
    return audio


class GatedSTT(STTEngine):
    """Records the order of calls; each call blocks until the test opens the gate (or ``delay_s`` passes)."""

    name = "gated"

    def __init__(self, workers: int = 1, delay_s: float = 0.0, fail_on: int | None = None) -> None:
        super().__init__(max_concurrency=workers)
        self.gate = threading.Event()
        self.started: list[int] = []
        self.running = 0
        self.max_running = 0
        self.delay_s = delay_s
        self.fail_on = fail_on
        self._count = threading.Lock()
        self.entered = threading.Semaphore(0)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        tag = int(audio[0])
        with self._lock:
            with self._count:
                self.started.append(tag)
                self.running += 1
                self.max_running = max(self.max_running, self.running)
            self.entered.release()
            try:
                if self.delay_s:
                    time.sleep(self.delay_s)
                else:
                    assert self.gate.wait(5), "gate never opened"
                if tag == self.fail_on:
                    raise SpeechToTextError(f"boom {tag}")
                return Transcription(f"t{tag}", "en", -0.1, 0.0, audio.size / 16000)
            finally:
                with self._count:
                    self.running -= 1


def wait_started(engine: GatedSTT, n: int) -> None:
    for _ in range(n):
        assert engine.entered.acquire(timeout=5), "request never started"


@pytest.fixture
def make():
    made: list[ScheduledSTT] = []

    def build(engine: STTEngine, **kwargs: object) -> ScheduledSTT:
        sched = ScheduledSTT(engine, **kwargs)  # type: ignore[arg-type]
        made.append(sched)
        return sched

    yield build
    for sched in made:
        sched.close()


async def test_finals_run_before_partials_in_submission_order(make):
    engine = GatedSTT()
    stt = make(engine)
    blocker = stt.submit(clip(0), priority=FINAL, key="a")
    await asyncio.to_thread(wait_started, engine, 1)
    futs = [
        stt.submit(clip(1), priority=PARTIAL, key="p1"),
        stt.submit(clip(2), priority=PARTIAL, key="p2"),
        stt.submit(clip(3), priority=FINAL, key="f1"),
        stt.submit(clip(4), priority=SPEC, key="s1"),
        stt.submit(clip(5), priority=FINAL, key="f2"),
    ]
    engine.gate.set()
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in [blocker, *futs]))
    assert [r.text for r in results] == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert engine.started == [0, 3, 4, 5, 1, 2]  # finals and speculations FIFO first, then the partials


async def test_newer_request_of_a_session_drops_its_pending_partial(make):
    engine = GatedSTT()
    stt = make(engine)
    blocker = stt.submit(clip(0), priority=FINAL, key="other")
    await asyncio.to_thread(wait_started, engine, 1)
    old_partial = stt.run_stt(clip(1), priority=PARTIAL, key="s")
    task = asyncio.ensure_future(old_partial)
    await asyncio.sleep(0)
    newer_partial = asyncio.ensure_future(stt.run_stt(clip(2), priority=PARTIAL, key="s"))
    await asyncio.sleep(0)
    with pytest.raises(RequestDropped):
        await task
    final = asyncio.ensure_future(stt.run_stt(clip(3), priority=FINAL, key="s"))
    with pytest.raises(RequestDropped):
        await newer_partial
    engine.gate.set()
    assert (await final).text == "t3"
    await asyncio.wrap_future(blocker)
    assert engine.started == [0, 3]
    assert stt.stats["dropped_superseded"] == 2


async def test_finals_are_never_dropped(make):
    engine = GatedSTT()
    stt = make(engine, partial_max_wait_s=0.01)
    blocker = stt.submit(clip(0), priority=FINAL, key="x")
    await asyncio.to_thread(wait_started, engine, 1)
    finals = [stt.submit(clip(i), priority=FINAL, key="s") for i in (1, 2)]
    spec = stt.submit(clip(3), priority=SPEC, key="s")
    await asyncio.sleep(0.05)  # far past the partial deadline
    engine.gate.set()
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in [blocker, *finals, spec]))
    assert [r.text for r in results] == ["t0", "t1", "t2", "t3"]


async def test_stale_partial_is_dropped(make):
    engine = GatedSTT()
    stt = make(engine, partial_max_wait_s=0.05)
    blocker = stt.submit(clip(0), priority=FINAL, key="x")
    await asyncio.to_thread(wait_started, engine, 1)
    partial = asyncio.ensure_future(stt.run_stt(clip(1), priority=PARTIAL, key="s"))
    await asyncio.sleep(0.15)
    engine.gate.set()
    with pytest.raises(RequestDropped):
        await partial
    await asyncio.wrap_future(blocker)
    fresh = await stt.run_stt(clip(2), priority=PARTIAL, key="s")
    assert fresh.text == "t2" and engine.started == [0, 2]
    assert stt.stats["dropped_stale"] == 1


async def test_a_worker_stays_free_for_finals(make):
    engine = GatedSTT(workers=2)
    stt = make(engine)
    assert stt.workers == 2 and stt.partial_slots == 1
    p1 = stt.submit(clip(1), priority=PARTIAL, key="a")
    p2 = stt.submit(clip(2), priority=PARTIAL, key="b")
    await asyncio.to_thread(wait_started, engine, 1)
    await asyncio.sleep(0.05)
    assert engine.started == [1]  # the second partial waits for the partial slot
    final = stt.submit(clip(3), priority=FINAL, key="c")
    await asyncio.to_thread(wait_started, engine, 1)
    assert engine.started == [1, 3] and engine.running == 2  # the final runs beside the partial
    engine.gate.set()
    await asyncio.gather(*(asyncio.wrap_future(f) for f in (p1, p2, final)))
    assert engine.started == [1, 3, 2]


async def test_independent_requests_run_in_parallel(make):
    engine = GatedSTT(workers=2, delay_s=0.2)
    stt = make(engine)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(stt.run_stt(clip(i), priority=FINAL, key=i) for i in range(4)))
    elapsed = time.perf_counter() - t0
    assert [r.text for r in results] == ["t0", "t1", "t2", "t3"]
    assert engine.max_running == 2
    assert elapsed < 0.7  # 4 x 0.2 s on 2 workers, not 0.8 s serial


async def test_cancelled_request_is_withdrawn(make):
    engine = GatedSTT()
    stt = make(engine)
    blocker = stt.submit(clip(0), priority=FINAL, key="x")
    await asyncio.to_thread(wait_started, engine, 1)
    spec = asyncio.ensure_future(stt.run_stt(clip(1), priority=SPEC, key="s"))
    other = asyncio.ensure_future(stt.run_stt(clip(2), priority=FINAL, key="t"))
    await asyncio.sleep(0)
    assert stt.pending() == 2
    spec.cancel()
    await asyncio.sleep(0)
    assert stt.pending() == 1
    engine.gate.set()
    assert (await other).text == "t2"
    await asyncio.wrap_future(blocker)
    assert spec.cancelled() and engine.started == [0, 2]


async def test_errors_reach_only_their_caller(make):
    engine = GatedSTT(workers=2, fail_on=2)
    engine.gate.set()
    stt = make(engine)
    results = await asyncio.gather(
        *(stt.run_stt(clip(i), priority=FINAL, key=i) for i in (1, 2, 3)), return_exceptions=True
    )
    assert results[0].text == "t1" and results[2].text == "t3"  # type: ignore[union-attr]
    assert isinstance(results[1], SpeechToTextError) and "boom 2" in str(results[1])
    assert (await stt.run_stt(clip(4))).text == "t4"  # the workers survive a failure


async def test_bare_engine_accepts_priority():
    engine = GatedSTT()
    engine.gate.set()
    result = await engine.run_stt(clip(7), priority=PARTIAL, key="s")
    assert result.text == "t7"


def test_transcribe_bypasses_the_queue(make):
    engine = GatedSTT()
    engine.gate.set()
    stt = make(engine)
    assert stt.transcribe(clip(5)).text == "t5" and stt.name == "gated"


async def test_close_fails_queued_requests(make):
    engine = GatedSTT()
    stt = make(engine)
    running = stt.submit(clip(0), priority=FINAL)
    await asyncio.to_thread(wait_started, engine, 1)
    queued = stt.submit(clip(1), priority=FINAL)
    threading.Timer(0.1, engine.gate.set).start()
    await asyncio.to_thread(stt.close)
    assert isinstance(queued.exception(timeout=1), RuntimeError)
    assert running.result(timeout=1).text == "t0"  # the request in progress finished
    with pytest.raises(RuntimeError):
        stt.submit(clip(2))


async def test_voice_sessions_share_a_scheduled_engine():
    """Two voice sessions on one scheduled fake engine: partials are tagged, each turn gets its final."""
    from assistant.core.frames import Frame, Transcript, TranscriptDelta
    from assistant.runtime.voice import VoiceInput, VoiceOptions
    from tests.fakes import EnergyVAD, FakeSTT, silence, tone

    stt = ScheduledSTT(FakeSTT(delay_s=0.02), workers=2)
    frames: dict[int, list[Frame]] = {0: [], 1: []}
    finals: dict[int, list[Transcript]] = {0: [], 1: []}

    def sink(i: int):
        async def emit(frame: Frame) -> None:
            frames[i].append(frame)

        async def on_final(t: Transcript) -> None:
            finals[i].append(t)

        return emit, on_final

    voices = [VoiceInput(stt, EnergyVAD, VoiceOptions(), *sink(i)) for i in (0, 1)]  # type: ignore[arg-type]
    audio = np.concatenate([silence(0.3), tone(2.0), silence(1.0)])
    pcm = (audio * 32767).astype("<i2").tobytes()
    step = 640  # 20 ms of PCM16 at 16 kHz
    try:
        for off in range(0, len(pcm), step):
            for voice in voices:
                await voice.append(pcm[off : off + step])
            await asyncio.sleep(0.005)
        for _ in range(100):
            if all(finals.values()):
                break
            await asyncio.sleep(0.02)
    finally:
        for voice in voices:
            await voice.close()
        stt.close()
    for i in (0, 1):
        assert [t.text for t in finals[i]] == ["black hoodie under fifty dollars"]
        assert any(isinstance(f, TranscriptDelta) for f in frames[i])
    assert stt.stats["submitted_partial"] >= 2 and stt.stats["submitted_speculative"] >= 2
