"""Speech-to-text: the engine interface, per-call options, the hallucination guard and the engine registry.

Engines take float32 mono audio at 16 kHz (:data:`speech.audio.SAMPLE_RATE`). Two backends share the packaged
Whisper weights: faster-whisper (CTranslate2, the CPU default) and openai-whisper (PyTorch, fp16 on CUDA).

Example:
    >>> engine = create_stt("faster-whisper:tiny.en", cache_dir=Path(".data/models"))
    >>> result = await engine.run_stt(audio)
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from speech.audio import SAMPLE_RATE
from speech.errors import AudioFormatError

log = logging.getLogger(__name__)

STT_BACKENDS = ("faster-whisper", "openai-whisper")
STT_SIZES = ("tiny.en", "base")

# Whisper's own skip rule (transcribe.py): a segment is silence when no_speech_prob > 0.6 and avg_logprob < -1.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4  # gzip ratio above this means repeated text (a decoding loop)
SILENCE_PEAK = 1e-3  # -60 dBFS: below this there is nothing to transcribe
# Phrases Whisper is known to produce on silence or noise (normalized: lowercase, no punctuation).
HALLUCINATION_PHRASES = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "thank you so much for watching",
        "thanks for watching and see you next time",
        "please subscribe",
        "subscribe to my channel",
        "bye",
        "bye bye",
        "so",
        "oh",
        "okay",
        "the end",
        "i",
        "um",
        "uh",
        "hmm",
        "subtitles by the amaraorg community",
        "transcription by castingwords",
    }
)
# Weak evidence for a short stock phrase: the model doubts there is speech, or doubts its words.
_PHRASE_NO_SPEECH = 0.2
_PHRASE_LOGPROB = -0.6
LOOP_RUN = 4  # the same word this many times in a row is a decoding loop, not speech
_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand".split()
)
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")
_NON_WORD = re.compile(r"[^\w\s']+")


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-call decoding options; change with ``dataclasses.replace``.

    Attributes:
        language: ISO code, or None to detect (multilingual models only).
        beam_size: 1 is greedy decoding (fastest).
        temperature: Sampling temperature; 0 is deterministic.
        initial_prompt: Text that biases the vocabulary (product names, brands).
        without_timestamps: Decode without timestamp tokens (faster; timestamps are not used).
        short_window: Encode only the utterance (plus padding) instead of Whisper's fixed 30 s window, like
            whisper.cpp's ``audio_ctx``: the encoder's cost scales with the window, so a 3 s query encodes about
            15x faster. Used by backends that support it, for audio up to ``SHORT_WINDOW_MAX_S``.
        num_hypotheses: Beam hypotheses to return (at most ``beam_size``): the best is the transcript, the others
            its ``alternatives`` (backends that cannot return them give none).
    """

    language: str | None = "en"
    beam_size: int = 1
    temperature: float = 0.0
    initial_prompt: str | None = None
    without_timestamps: bool = True
    short_window: bool = True
    num_hypotheses: int = 1


@dataclass
class Transcription:
    """The result of one transcription.

    Attributes:
        text: The transcript; "" when nothing was said (or the guard rejected a hallucination).
        language: Language code that was decoded.
        avg_logprob: Mean token log-probability (higher is more confident).
        no_speech_prob: Whisper's probability that the audio holds no speech.
        duration_s: Length of the input audio in seconds.
        is_hallucination: True when the guard emptied a result it did not trust.
        alternatives: The other beam hypotheses (text, mean log-probability), best first, when asked for with
            ``TranscribeOptions.num_hypotheses``; a repair may prefer one that names a catalog product.
    """

    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    duration_s: float
    is_hallucination: bool = False
    alternatives: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class SegmentStats:
    """What a backend reports for one decoded segment, before the guard runs."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    num_tokens: int


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation and collapse spaces (used for phrase matching and word error rates)."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("’", "'")).split())


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def collapse_repeat(text: str) -> str:
    """One copy of an utterance that the decoder wrote out again ("Red jacket. Red jacket.", "X, X, X").

    Whisper, prompted and given trailing silence, sometimes starts over after the end of a short utterance; the
    text then holds the same words two or more times in a row (with a trailing partial copy). A short request is
    never said twice over in one breath, so the first copy is what was said. Only a whole-utterance loop of at
    least two words is collapsed; "one one two" or "very very warm" stay as they are.
    """
    tokens = text.split()
    words = [normalize_text(t) for t in tokens]
    # One word stuck in a loop ("comfy comfy comfy comfy ..."): keep one copy and what came before it.
    for i in range(len(words) - LOOP_RUN + 1):
        if words[i] and not words[i].isdigit() and words[i] not in _NUMBER_WORDS \
                and len(set(words[i : i + LOOP_RUN])) == 1:
            return " ".join(tokens[: i + 1]).rstrip(",;")
    n = len(words)
    for size in range(2, n // 2 + 1):
        unit = words[:size]
        if words[size : 2 * size] != unit:
            continue
        rest = words[2 * size :]
        if all(w.isdigit() or w in _NUMBER_WORDS for w in unit):
            return text  # "one two one two" may well be an order number
        if all(w == unit[i % size] for i, w in enumerate(rest)):
            return " ".join(tokens[:size]).rstrip(",;")
    return text


def hallucination_reason(text: str, avg_logprob: float, no_speech_prob: float) -> str | None:
    """Return why a decoded result should not be trusted, or None when it looks like real speech.

    Args:
        text: The raw decoded text.
        avg_logprob: Mean token log-probability.
        no_speech_prob: Whisper's no-speech probability.

    Returns:
        A short reason string, or None.
    """
    words = normalize_text(_ANNOTATION.sub(" ", text))
    if len(words.replace(" ", "")) < 2:
        return "empty"
    if no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
        return "no_speech"
    if len(text) > 40 and _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
        return "repetition"
    if words in HALLUCINATION_PHRASES and (no_speech_prob > _PHRASE_NO_SPEECH or avg_logprob < _PHRASE_LOGPROB):
        return "stock_phrase"
    return None


def build_transcription(
    segments: Sequence[SegmentStats], language: str, duration_s: float
) -> Transcription:
    """Merge backend segments into a :class:`Transcription` and apply the hallucination guard.

    Args:
        segments: Decoded segments in order.
        language: Decoded language code.
        duration_s: Input duration in seconds.

    Returns:
        The transcription; ``text`` is "" and ``is_hallucination`` True when the guard rejects it.
    """
    text = collapse_repeat(" ".join(s.text.strip() for s in segments if s.text.strip()))
    if segments:
        weights = np.array([max(1, s.num_tokens) for s in segments], dtype=np.float64)
        avg_logprob = float(np.average([s.avg_logprob for s in segments], weights=weights))
        no_speech_prob = float(max(s.no_speech_prob for s in segments))
    else:
        avg_logprob, no_speech_prob = float("-inf"), 1.0
    reason = hallucination_reason(text, avg_logprob, no_speech_prob)
    if reason is not None:
        if text:
            log.info(
                "dropped untrusted transcript %r (%s, avg_logprob=%.2f, no_speech_prob=%.2f)",
                text,
                reason,
                avg_logprob,
                no_speech_prob,
            )
        return Transcription("", language, avg_logprob, no_speech_prob, duration_s, is_hallucination=True)
    return Transcription(text, language, avg_logprob, no_speech_prob, duration_s)


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Validate engine input: 1-D float audio, returned as contiguous float32.

    Raises:
        AudioFormatError: If ``audio`` is not 1-D.
    """
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise AudioFormatError(f"STT expects 1-D mono audio at {SAMPLE_RATE} Hz, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def is_silent(audio: np.ndarray) -> bool:
    """True when the audio is too quiet (peak under -60 dBFS) or too short to hold a word."""
    return audio.size < SAMPLE_RATE // 10 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def silent_transcription(language: str | None, duration_s: float) -> Transcription:
    """The result for audio that is not worth decoding."""
    return Transcription("", language or "en", 0.0, 1.0, duration_s, is_hallucination=True)


class STTPriority(IntEnum):
    """What a transcription is for, most urgent first (lower value is served first).

    ``FINAL`` ends a turn and the reply waits on it; ``SPECULATIVE`` is a final decoded ahead of the VAD's end of
    turn (it usually becomes the final, so it ranks with finals); ``PARTIAL`` is a live caption (a UI nicety that
    may be dropped when it is stale or superseded).
    """

    FINAL = 0
    SPECULATIVE = 1
    PARTIAL = 2


class STTEngine(ABC):
    """A speech-to-text engine.

    ``transcribe`` blocks; ``run_stt`` runs it in a worker thread. At most ``max_concurrency`` threads are inside
    the model at once (subclasses hold ``self._lock``, a semaphore with that many slots, around model calls); an
    engine whose model runs concurrent calls (CTranslate2's ``num_workers``) has more than one slot. To share one
    engine between sessions with priorities, wrap it in :class:`assistant.runtime.scheduling.ScheduledSTT`.

    Attributes:
        name: Registry name, e.g. ``"faster-whisper:tiny.en"``.
        max_concurrency: How many ``transcribe`` calls may run in parallel.
    """

    name: str

    def __init__(self, max_concurrency: int = 1) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self._lock = threading.BoundedSemaphore(self.max_concurrency)

    @abstractmethod
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Transcribe float32 mono 16 kHz audio (blocking).

        Args:
            audio: 1-D float32 samples at 16 kHz.
            options: Decoding options; defaults to ``TranscribeOptions()``.

        Returns:
            The guarded transcription.

        Raises:
            AudioFormatError: If the audio is not 1-D.
            SpeechToTextError: If the model fails.
        """

    async def run_stt(
        self,
        audio: np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        priority: STTPriority = STTPriority.FINAL,
        key: object = None,
    ) -> Transcription:
        """Transcribe without blocking the event loop (runs :meth:`transcribe` in a thread).

        Args:
            audio: 1-D float32 samples at 16 kHz.
            options: Decoding options.
            priority: What the result is for; a bare engine ignores it (calls queue FIFO on the model's slots),
                :class:`assistant.runtime.scheduling.ScheduledSTT` serves finals first and may drop stale partials.
            key: Who asks (one voice session); a scheduler coalesces that caller's pending partials.
        """
        return await asyncio.to_thread(self.transcribe, audio, options)
