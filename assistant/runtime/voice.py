"""Voice input of one session: resampling, end-of-turn detection, partial and final transcripts.

Audio arrives in small PCM16 frames at the client's rate.  It is resampled to 16 kHz, fed to Silero VAD (server VAD
mode) and buffered per utterance.  While the shopper speaks, the growing utterance is re-decoded for a partial
transcript whenever at least ``partial_interval_ms`` of new audio has arrived and no decode is in flight, so the
decoder never falls behind on 2 cores.  When the VAD sees the first silent frame after speech it starts a
*speculative* final decode; if the silence lasts (``speech_stopped``) that result is the final transcript and no
time is spent after the end of the turn; if speech resumes the speculation is dropped.

Every decode states its priority (``STTPriority``) and the session as its ``key``: an engine shared by many sessions
(:class:`assistant.runtime.scheduling.ScheduledSTT`) serves finals and speculative finals before partials and drops a partial that
a newer request of the same session supersedes or that waited too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

from assistant.core.errors import InvalidInputError, TranscriptionError
from assistant.core.frames import Frame, SpeechStarted, SpeechStopped, Transcript, TranscriptDelta
from speech.audio import SAMPLE_RATE, StreamResampler, pcm16_to_float32
from speech.errors import AudioFormatError, RequestDropped
from speech.stt import STTEngine, STTPriority, TranscribeOptions, Transcription
from speech.vad import SileroVAD, TurnDetector, VADEvent, VADOptions

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # protocol cap per binary frame
MAX_UTTERANCE_S = 60  # protocol cap per buffered utterance
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

Emit = Callable[[Frame], Awaitable[None]]


FINAL_BEAM_SIZE = 5  # beam search for finals: with the catalog prompt it finds "hoodie" where greedy hears "holding"
FINAL_HYPOTHESES = 3  # beam hypotheses kept for the repair of misheard product words
# Audio kept after the VAD's first silent frame: a word's soft ending ("hoodie-s", "pant-s") falls below the VAD's
# threshold before it ends, and a final cut right there loses it (push-to-talk, which keeps the tail, did not).
END_PADDING_MS = 250
RETRY_MIN_SPEECH_S = 0.5  # a final this long that decodes to nothing is decoded once more, the other way


@dataclass(frozen=True)
class VoiceOptions:
    """Per-session voice input options (changed with ``dataclasses.replace``).

    ``final_beam_size``: beam width of final (and speculative final) decodes; partials stay greedy (cheap, they are
    only captions). ``end_padding_ms``: audio after the VAD's end of speech that a final still decodes (the
    speculative final starts once it has arrived, still well before ``speech_stopped``).
    """

    input_rate: int = SAMPLE_RATE
    server_vad: bool = True
    vad: VADOptions = field(default_factory=VADOptions)
    partial_interval_ms: int = 700
    min_partial_ms: int = 500
    language: str | None = "en"
    max_utterance_s: int = MAX_UTTERANCE_S
    final_beam_size: int = FINAL_BEAM_SIZE
    end_padding_ms: int = END_PADDING_MS


def transcribe_options(language: str | None, prompt: str | None, *, final: bool,
                       beam_size: int = FINAL_BEAM_SIZE) -> TranscribeOptions:
    """The decoding options of one voice decode: what the server uses, and what an offline check must use.

    Args:
        language: The session's language.
        prompt: The catalog's biasing prompt (`assistant.conversation.vocabulary.CatalogVocabulary.prompt`), or
            None for none.
        final: A final or speculative final (beam search, several hypotheses) rather than a partial (greedy).
        beam_size: The finals' beam width (1: greedy finals, one hypothesis).
    """
    if not final or beam_size <= 1:
        return TranscribeOptions(language=language, initial_prompt=prompt)
    return TranscribeOptions(language=language, initial_prompt=prompt, beam_size=beam_size,
                             num_hypotheses=min(FINAL_HYPOTHESES, beam_size))


def new_item_id() -> str:
    return "item_" + uuid.uuid4().hex[:16]


class VoiceInput:
    """Turns a stream of PCM16 frames into speech events and transcripts, emitted through ``emit``.

    Final transcripts are delivered through ``on_final`` (the session starts a reply from there).
    """

    def __init__(
        self,
        stt: STTEngine,
        vad_factory: Callable[[], SileroVAD],
        options: VoiceOptions,
        emit: Emit,
        on_final: Callable[[Transcript], Awaitable[None]],
        prompt: Callable[[], str | None] | None = None,
    ) -> None:
        self._stt = stt
        self._prompt = prompt  # the served catalog's biasing prompt, read at every decode (a reload changes it)
        self._vad_factory = vad_factory
        self._vad = vad_factory()
        self._check_vad: SileroVAD | None = None
        self._emit = emit
        self._on_final = on_final
        self._tasks: set[asyncio.Task[None]] = set()
        self.configure(options)

    # --- configuration --------------------------------------------------------------------------------------
    def configure(self, options: VoiceOptions) -> None:
        if options.input_rate not in SUPPORTED_RATES:
            raise InvalidInputError(
                f"unsupported input sample rate {options.input_rate}; use one of {list(SUPPORTED_RATES)}",
                code="unsupported_audio_format",
                param="session.input_audio.rate",
            )
        self.options = options
        self._resampler = (
            StreamResampler(options.input_rate, SAMPLE_RATE) if options.input_rate != SAMPLE_RATE else None
        )
        self._detector = TurnDetector(self._vad, options.vad)
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        self._vad_origin = 0  # stream sample where the turn detector's clock (its events' at_ms) starts
        self._chunks: list[np.ndarray] = []
        self._buffered = 0  # samples in _chunks
        self._offset = 0  # stream sample index of _chunks[0][0]
        self._stream_pos = 0  # total 16 kHz samples received
        self._item_id: str | None = None
        self._speech_start = 0  # stream sample where the current utterance begins (incl. padding)
        self._last_partial_at = 0
        self._partial_task: asyncio.Task[None] | None = None
        self._speculation: asyncio.Task[Transcription] | None = None
        self._speculation_end = 0
        self._pause_at: int | None = None  # stream sample where the current pause began (server VAD)
        self._last_partial_text = ""
        self._generation = 0  # bumps on clear/commit so late results of old work are ignored

    # --- audio in -------------------------------------------------------------------------------------------
    async def append(self, pcm16: bytes) -> None:
        """Add one frame of PCM16 audio at the session's input rate."""
        if len(pcm16) > MAX_FRAME_BYTES:
            raise InvalidInputError(
                f"audio frame of {len(pcm16)} bytes exceeds the {MAX_FRAME_BYTES}-byte cap; send 20-100 ms frames",
                code="frame_too_large",
            )
        try:
            audio = pcm16_to_float32(pcm16)
        except AudioFormatError as err:
            raise InvalidInputError(str(err), code="unsupported_audio_format") from err
        if self._resampler is not None:
            audio = self._resampler.process(audio)
        if audio.size == 0:
            return
        limit = self.options.max_utterance_s * SAMPLE_RATE
        if self._utterance_samples() + audio.size > limit:
            self._overflow()
        self._chunks.append(audio)
        self._buffered += audio.size
        self._stream_pos += audio.size
        if self.options.server_vad:
            for event in self._detector.feed(audio):
                await self._on_vad(event)
            self._maybe_speculate()
            if not self._detector.in_speech:
                self._trim_idle()
        elif self._item_id is None:
            self._item_id = new_item_id()
            self._speech_start = self._offset
        if self._utterance_samples() > limit:
            # Speech that started inside this frame can reach back before it (the VAD's prefix padding).
            self._overflow()
        if self._item_id is not None:
            self._maybe_partial()

    def _overflow(self) -> NoReturn:
        """Drop the utterance (keeping the stream position) and tell the client it was too long."""
        self._reset_buffer_keep_stream()
        raise InvalidInputError(
            f"utterance longer than {self.options.max_utterance_s} s; the buffer was cleared",
            code="buffer_overflow",
        )

    def _utterance_samples(self) -> int:
        if self._item_id is None:
            return 0
        return self._stream_pos - self._speech_start

    def _reset_buffer_keep_stream(self) -> None:
        pos = self._stream_pos
        self._generation += 1
        self._cancel_work()
        gen = self._generation
        self._reset_buffer()
        self._generation = gen
        self._stream_pos = pos
        self._offset = pos
        self._detector.reset()
        self._vad_origin = pos  # the detector's clock restarts here

    def _trim_idle(self) -> None:
        """Outside speech keep only the prefix padding (so the start of the next utterance is not clipped)."""
        keep = int(self.options.vad.prefix_padding_ms * SAMPLE_RATE / 1000) + SileroVAD.FRAME_SAMPLES * 8
        while self._chunks and self._buffered - self._chunks[0].size >= keep:
            first = self._chunks.pop(0)
            self._buffered -= first.size
            self._offset += first.size

    def _audio(self, start: int, end: int | None = None) -> np.ndarray:
        """Stream samples [start, end) still in the buffer."""
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        whole = np.concatenate(self._chunks)
        lo = max(0, start - self._offset)
        hi = whole.size if end is None else max(lo, min(whole.size, end - self._offset))
        return whole[lo:hi]

    # --- VAD events -----------------------------------------------------------------------------------------
    async def _on_vad(self, event: VADEvent) -> None:
        # The detector counts from its last reset (the end of the previous turn); buffers count from the stream's
        # start. (Before, a second turn's end came out relative, and only the speculative final -- cut at the
        # stream position -- hid it.)
        at = self._vad_origin + int(event.at_ms * SAMPLE_RATE / 1000)
        if event.kind == "speech_started":
            pad = int(self.options.vad.prefix_padding_ms * SAMPLE_RATE / 1000)
            self._item_id = new_item_id()
            self._speech_start = max(self._offset, at - pad)
            self._last_partial_at = self._speech_start
            self._last_partial_text = ""
            await self._emit(SpeechStarted(audio_start_ms=at * 1000 // SAMPLE_RATE))
        elif event.kind == "speech_paused" and self._item_id is not None:
            self._pause_at = at  # the speculative final starts once the end padding has arrived (append)
        elif event.kind == "speech_resumed":
            self._pause_at = None
            self._drop_speculation()
        elif event.kind == "speech_stopped" and self._item_id is not None:
            await self._emit(SpeechStopped(audio_end_ms=at * 1000 // SAMPLE_RATE))
            await self._finish_turn(end=min(self._stream_pos, at + self._end_padding()))

    def _end_padding(self) -> int:
        return self.options.end_padding_ms * SAMPLE_RATE // 1000

    def _maybe_speculate(self) -> None:
        """Start the speculative final once the end padding after the pause has arrived."""
        if self._pause_at is None or self._speculation is not None or self._item_id is None:
            return
        end = self._pause_at + self._end_padding()
        if self._stream_pos >= end:
            self._start_speculation(end=end)

    # --- decoding -------------------------------------------------------------------------------------------
    def _transcribe_options(self, final: bool = False) -> TranscribeOptions:
        prompt = self._prompt() if self._prompt is not None else None
        return transcribe_options(self.options.language, prompt, final=final, beam_size=self.options.final_beam_size)

    def _retry_options(self) -> TranscribeOptions:
        """The final's options the other way round: with the catalog prompt dropped, or added when there was none."""
        first = self._transcribe_options(final=True)
        prompt = None if first.initial_prompt else (self._prompt() if self._prompt is not None else None)
        return transcribe_options(self.options.language, prompt, final=True,
                                  beam_size=max(FINAL_BEAM_SIZE, self.options.final_beam_size))

    def _maybe_partial(self) -> None:
        min_new = self.options.partial_interval_ms * SAMPLE_RATE // 1000
        if self._partial_task is not None and not self._partial_task.done():
            return
        if self._speculation is not None:
            return
        if self._stream_pos - self._last_partial_at < min_new:
            return
        if self._stream_pos - self._speech_start < self.options.min_partial_ms * SAMPLE_RATE // 1000:
            return
        self._last_partial_at = self._stream_pos
        audio = self._audio(self._speech_start)
        self._partial_task = self._spawn(self._partial(audio, self._item_id or "", self._generation))

    async def _partial(self, audio: np.ndarray, item_id: str, generation: int) -> None:
        try:
            result = await self._stt.run_stt(
                audio, self._transcribe_options(), priority=STTPriority.PARTIAL, key=self
            )
        except RequestDropped:  # superseded by a newer request of this session, or stale: the next one comes
            return
        except Exception:  # a failed partial is not worth ending the turn for
            log.exception("partial transcription failed")
            return
        if generation != self._generation or item_id != self._item_id or result.is_hallucination:
            return
        text = result.text.strip()
        if not text or text == self._last_partial_text:
            return
        old = self._last_partial_text
        delta = text[len(old):] if text.startswith(old) else text
        self._last_partial_text = text
        await self._emit(TranscriptDelta(item_id=item_id, text=text, delta=delta))

    def _start_speculation(self, end: int) -> None:
        self._drop_speculation()
        audio = self._audio(self._speech_start, end)
        self._speculation_end = end
        self._speculation = asyncio.ensure_future(
            self._stt.run_stt(audio, self._transcribe_options(final=True), priority=STTPriority.SPECULATIVE,
                              key=self)
        )

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.add_done_callback(_swallow)
            self._speculation.cancel()  # withdraws the request if it has not started decoding
            self._speculation = None

    async def commit(self) -> None:
        """Push-to-talk end of turn (``input_audio_buffer.commit``)."""
        if self._item_id is None or self._utterance_samples() == 0:
            raise InvalidInputError("input audio buffer is empty; nothing to commit", code="empty_buffer")
        await self._finish_turn(end=self._stream_pos)

    async def _finish_turn(self, end: int) -> None:
        item_id = self._item_id or new_item_id()
        speculation, spec_end = self._speculation, self._speculation_end
        self._speculation = None
        audio = self._audio(self._speech_start, end)
        generation = self._generation
        # The next utterance starts clean; decoding of this one runs on its own.
        self._reset_buffer_keep_stream()
        self._spawn(self._final(item_id, audio, speculation, spec_end >= end, generation))

    async def _final(
        self,
        item_id: str,
        audio: np.ndarray,
        speculation: asyncio.Task[Transcription] | None,
        use_speculation: bool,
        generation: int,
    ) -> None:
        if not self.options.server_vad:
            if self._check_vad is None:
                self._check_vad = self._vad_factory()
            if not await asyncio.to_thread(_has_speech, self._check_vad, audio):
                await self._on_final(Transcript(item_id=item_id, text=""))
                return
        try:
            result: Transcription | None = None
            if speculation is not None and use_speculation:
                result = await speculation
            elif speculation is not None:
                speculation.add_done_callback(_swallow)
                speculation.cancel()
            if result is None:
                result = await self._stt.run_stt(
                    audio, self._transcribe_options(final=True), priority=STTPriority.FINAL, key=self
                )
            if (result.is_hallucination or not result.text.strip()) and audio.size >= RETRY_MIN_SPEECH_S * SAMPLE_RATE:
                # The VAD heard speech but the decode gave nothing it trusts (an immediate end of text, a loop):
                # decode once more the other way (without the prompt, or with it) before losing the request.
                retry = await self._stt.run_stt(audio, self._retry_options(), priority=STTPriority.FINAL, key=self)
                if not retry.is_hallucination and retry.text.strip():
                    result = retry
        except asyncio.CancelledError:
            raise
        except Exception as err:
            raise TranscriptionError(f"transcription failed: {err}") from err
        text = "" if result.is_hallucination else result.text.strip()
        await self._on_final(Transcript(item_id=item_id, text=text, language=result.language,
                                        avg_logprob=result.avg_logprob if text else None,
                                        alternatives=result.alternatives if text else ()))

    # --- housekeeping ---------------------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop buffered audio (``input_audio_buffer.clear``)."""
        self._reset_buffer_keep_stream()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            # Surface errors of background decoding through the session's error path.
            from assistant.core.frames import ErrorFrame

            self._spawn(self._emit(ErrorFrame.of(err)))

    def _cancel_work(self) -> None:
        if self._partial_task is not None:
            self._partial_task.cancel()
        self._drop_speculation()

    async def close(self) -> None:
        self._generation += 1
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    @property
    def in_speech(self) -> bool:
        return self._detector.in_speech


def _has_speech(vad: SileroVAD, audio: np.ndarray, threshold: float = 0.5, min_frames: int = 4) -> bool:
    """Push-to-talk guard: True when a committed buffer holds any speech at all."""
    detector = vad
    detector.reset()
    n = SileroVAD.FRAME_SAMPLES
    voiced = 0
    for i in range(0, audio.size - n + 1, n):
        if detector.prob(audio[i : i + n]) >= threshold:
            voiced += 1
            if voiced >= min_frames:
                return True
    return False


def _swallow(task: asyncio.Future[Transcription]) -> None:
    if not task.cancelled():
        task.exception()
