"""Voice activity detection (Silero VAD v6 over onnxruntime) and end-of-turn detection.

:class:`SileroVAD` scores one 32 ms frame at a time, keeping the model's recurrent state between calls.
:class:`TurnDetector` turns frame scores into turn events for a live microphone stream::

    speech_started ──► speech_paused ──► speech_resumed ──► speech_paused ──► speech_stopped
                       (first silent frame:                   (after silence_duration_ms of silence)
                        start speculative decoding)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from speech.audio import SAMPLE_RATE
from speech.errors import AudioFormatError

log = logging.getLogger(__name__)

HYSTERESIS = 0.15  # once in speech, a frame counts as silent only below threshold - 0.15 (Silero's neg_threshold)


def default_vad_model_path() -> Path:
    """The Silero VAD v6 ONNX file that faster-whisper ships."""
    import importlib.util

    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed; it carries the Silero VAD model")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


class SileroVAD:
    """Streaming Silero VAD: call :meth:`prob` on consecutive 512-sample frames of 16 kHz audio.

    The v6 model is stateful: it takes the frame prefixed with the last 64 samples of the previous frame
    (``[1, 576]``) plus LSTM state ``h``/``c`` (``[1, 1, 128]`` each) and returns the speech probability and the
    new state, exactly as ``faster_whisper.vad.SileroVADModel`` feeds it.

    Args:
        model_path: ONNX file; defaults to :func:`default_vad_model_path`.
    """

    FRAME_SAMPLES = 512  # 32 ms at 16 kHz
    CONTEXT_SAMPLES = 64  # tail of the previous frame the model sees before each frame
    STATE_SHAPE = (1, 1, 128)

    def __init__(self, model_path: Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        self.model_path = Path(model_path) if model_path is not None else default_vad_model_path()
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._h = np.zeros(self.STATE_SHAPE, np.float32)
        self._c = np.zeros(self.STATE_SHAPE, np.float32)
        self._context = np.zeros(self.CONTEXT_SAMPLES, np.float32)

    def reset(self) -> None:
        """Forget the recurrent state (start of a new stream)."""
        self._h = np.zeros(self.STATE_SHAPE, np.float32)
        self._c = np.zeros(self.STATE_SHAPE, np.float32)
        self._context = np.zeros(self.CONTEXT_SAMPLES, np.float32)

    def prob(self, frame: np.ndarray) -> float:
        """Speech probability of the next frame in the stream.

        Args:
            frame: Exactly :attr:`FRAME_SAMPLES` float32 samples at 16 kHz.

        Returns:
            Probability in [0, 1].

        Raises:
            AudioFormatError: If the frame does not have 512 samples.
        """
        samples = np.asarray(frame, dtype=np.float32).reshape(-1)
        if samples.size != self.FRAME_SAMPLES:
            raise AudioFormatError(f"Silero VAD needs frames of {self.FRAME_SAMPLES} samples, got {samples.size}")
        x = np.concatenate([self._context, samples])[None, :]  # [1, 576]
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = samples[-self.CONTEXT_SAMPLES :].copy()
        return float(np.asarray(out).reshape(-1)[0])


class FrameScorer(Protocol):
    """Anything that scores consecutive 512-sample frames (SileroVAD, or a fake in tests)."""

    def prob(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class VADOptions:
    """Turn detection settings.

    Attributes:
        threshold: Speech probability that starts (or resumes) speech.
        silence_duration_ms: Silence that ends a turn.
        min_speech_ms: Voiced time needed before ``speech_started`` (filters clicks and coughs).
        prefix_padding_ms: Audio a caller keeps before ``speech_started.at_ms`` when cutting the utterance.
    """

    threshold: float = 0.5
    silence_duration_ms: int = 500
    min_speech_ms: int = 200
    prefix_padding_ms: int = 300


@dataclass(frozen=True)
class VADEvent:
    """A turn event; ``at_ms`` counts from the start of the stream (or the last :meth:`TurnDetector.reset`).

    ``speech_started.at_ms`` is where speech began, ``speech_paused``/``speech_stopped.at_ms`` where it ended,
    ``speech_resumed.at_ms`` where it came back.
    """

    kind: Literal["speech_started", "speech_paused", "speech_resumed", "speech_stopped"]
    at_ms: int


class TurnDetector:
    """Frame-by-frame turn detection with hysteresis over a :class:`SileroVAD` (or any :class:`FrameScorer`).

    Args:
        vad: The frame scorer; it is reset together with the detector.
        options: Thresholds and durations.
    """

    FRAME_SAMPLES = SileroVAD.FRAME_SAMPLES
    FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32

    def __init__(self, vad: FrameScorer, options: VADOptions | None = None) -> None:
        self.vad = vad
        self.options = options or VADOptions()
        self._neg_threshold = max(0.0, self.options.threshold - HYSTERESIS)
        self._pending = np.zeros(0, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio, turn state and the stream clock."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._frames = 0  # frames scored since reset
        self._samples_fed = 0
        self._in_speech = False
        self._candidate_start: int | None = None  # ms where unconfirmed speech began
        self._candidate_frames = 0
        self._pause_start: int | None = None  # ms where the current silence began (while in speech)

    @property
    def in_speech(self) -> bool:
        """True between ``speech_started`` and ``speech_stopped`` (including pauses)."""
        return self._in_speech

    @property
    def fed_ms(self) -> int:
        """Milliseconds of audio fed since the last reset."""
        return self._samples_fed * 1000 // SAMPLE_RATE

    def feed(self, audio: np.ndarray) -> list[VADEvent]:
        """Feed 16 kHz float32 audio of any length; return the events its complete frames produced.

        Args:
            audio: 1-D float samples; a remainder shorter than a frame waits for the next call.

        Returns:
            Events in stream order (often empty).
        """
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        self._samples_fed += samples.size
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n_frames = buf.size // self.FRAME_SAMPLES
        events: list[VADEvent] = []
        for i in range(n_frames):
            frame = buf[i * self.FRAME_SAMPLES : (i + 1) * self.FRAME_SAMPLES]
            event = self._step(self.vad.prob(frame))
            if event is not None:
                events.append(event)
        self._pending = buf[n_frames * self.FRAME_SAMPLES :].copy()
        return events

    def _step(self, prob: float) -> VADEvent | None:
        start_ms = self._frames * self.FRAME_MS
        self._frames += 1
        opts = self.options
        if not self._in_speech:
            if self._candidate_start is None:
                if prob >= opts.threshold:
                    self._candidate_start, self._candidate_frames = start_ms, 1
            elif prob >= self._neg_threshold:
                self._candidate_frames += 1
            else:
                self._candidate_start, self._candidate_frames = None, 0
            if self._candidate_start is not None and self._candidate_frames * self.FRAME_MS >= opts.min_speech_ms:
                began = self._candidate_start
                self._in_speech, self._candidate_start, self._candidate_frames = True, None, 0
                log.debug("speech started at %d ms", began)
                return VADEvent("speech_started", began)
            return None
        if self._pause_start is None:
            if prob < self._neg_threshold:
                self._pause_start = start_ms
                return VADEvent("speech_paused", start_ms)
            return None
        if prob >= opts.threshold:
            self._pause_start = None
            return VADEvent("speech_resumed", start_ms)
        if start_ms + self.FRAME_MS - self._pause_start >= opts.silence_duration_ms:
            ended = self._pause_start
            self._in_speech, self._pause_start = False, None
            log.debug("speech stopped at %d ms", ended)
            return VADEvent("speech_stopped", ended)
        return None
