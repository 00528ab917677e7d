"""faster-whisper (CTranslate2) speech-to-text: int8 on CPU, float16 on CUDA."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from speech.audio import SAMPLE_RATE
from speech.errors import SpeechToTextError
from speech.models import whisper_ct2_dir
from speech.stt import (
    SegmentStats,
    STTEngine,
    TranscribeOptions,
    Transcription,
    build_transcription,
    check_audio,
    is_silent,
    silent_transcription,
)

log = logging.getLogger(__name__)

SHORT_WINDOW_MAX_S = 25.0  # longer audio takes faster-whisper's regular 30 s-window path
SHORT_WINDOW_PAD_S = 0.5  # silence appended so the last word is not cut at the window's edge
SHORT_WINDOW_MIN_S = 10.0  # shorter windows make Whisper loop or drop very short utterances
MAX_NEW_TOKENS = 128  # a spoken shopping turn is far shorter


def resolve_ct2_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when CTranslate2 sees a GPU, else ``"cpu"``."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class FasterWhisperSTT(STTEngine):
    """Whisper through faster-whisper, loaded from the packaged CTranslate2 weights.

    Args:
        size: ``"tiny.en"`` or ``"base"``.
        cache_dir: Folder where the base model parts are joined.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        cpu_threads: CPU threads in all; 0 means ``os.cpu_count()``. They are split between the workers.
        compute_type: CTranslate2 compute type; default int8 on CPU, float16 on CUDA.
        workers: Concurrent model calls (CTranslate2 ``num_workers``): independent requests (two sessions' finals)
            decode in parallel, each on ``threads_per_worker`` intra-op threads.
        threads_per_worker: Intra-op threads of each worker; default ``cpu_threads // workers`` (at least 1).
    """

    def __init__(
        self,
        size: str,
        *,
        cache_dir: Path,
        device: str = "auto",
        cpu_threads: int = 0,
        compute_type: str | None = None,
        workers: int = 1,
        threads_per_worker: int | None = None,
    ) -> None:
        workers = max(1, workers)
        super().__init__(max_concurrency=workers)
        from faster_whisper import WhisperModel

        self.name = f"faster-whisper:{size}"
        self.device = resolve_ct2_device(device)
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        threads = threads_per_worker or max(1, (cpu_threads or os.cpu_count() or 1) // workers)
        self.workers, self.threads_per_worker = workers, threads
        model_dir = whisper_ct2_dir(size, cache_dir)
        start = time.perf_counter()
        try:
            self.model = WhisperModel(
                str(model_dir), device=self.device, compute_type=self.compute_type, cpu_threads=threads,
                num_workers=workers,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise SpeechToTextError(f"cannot load {self.name} from {model_dir}: {err}") from err
        log.info(
            "loaded %s (%s, %s, %d worker(s) x %d threads) in %.2f s",
            self.name,
            self.device,
            self.compute_type,
            workers,
            threads,
            time.perf_counter() - start,
        )

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Transcribe float32 mono 16 kHz audio (blocking); see :meth:`STTEngine.transcribe`."""
        opts = options or TranscribeOptions()
        samples = check_audio(audio)
        duration_s = samples.size / SAMPLE_RATE
        if is_silent(samples):
            return silent_transcription(opts.language, duration_s)
        language = opts.language if self.model.model.is_multilingual else "en"
        if opts.short_window and language is not None and duration_s <= SHORT_WINDOW_MAX_S:
            return self._transcribe_short(samples, language, opts, duration_s)
        with self._lock:
            try:
                segments, info = self.model.transcribe(
                    samples,
                    language=language,
                    beam_size=opts.beam_size,
                    temperature=opts.temperature,
                    initial_prompt=opts.initial_prompt,
                    vad_filter=False,
                    condition_on_previous_text=False,
                    without_timestamps=opts.without_timestamps,
                    no_speech_threshold=None,  # the shared guard decides, with the numbers in hand
                    log_prob_threshold=None,
                )
                stats = [
                    SegmentStats(s.text, s.avg_logprob, s.no_speech_prob, len(s.tokens)) for s in segments
                ]
            except (RuntimeError, ValueError) as err:
                raise SpeechToTextError(f"{self.name} failed: {err}") from err
        return build_transcription(stats, info.language, duration_s)

    def _transcribe_short(
        self, samples: np.ndarray, language: str, opts: TranscribeOptions, duration_s: float
    ) -> Transcription:
        """One greedy/beam decode over an encoder window cut to the utterance (no 30 s padding)."""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        window = max(samples.size + int(SHORT_WINDOW_PAD_S * SAMPLE_RATE), int(SHORT_WINDOW_MIN_S * SAMPLE_RATE))
        padded = np.concatenate([samples, np.zeros(window - samples.size, dtype=np.float32)])
        with self._lock:
            try:
                features = self.model.feature_extractor(padded)
                frames = min(features.shape[-1] - features.shape[-1] % 2, 3000)  # the encoder's conv has stride 2
                features = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
                encoded = self.model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
                tokenizer = Tokenizer(
                    self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language=language
                )
                previous = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
                prompt = self.model.get_prompt(tokenizer, previous, without_timestamps=True)
                sampling = (
                    {"sampling_temperature": opts.temperature, "sampling_topk": 0, "beam_size": 1}
                    if opts.temperature > 0
                    else {"beam_size": opts.beam_size,
                          "num_hypotheses": max(1, min(opts.num_hypotheses, opts.beam_size))}
                )
                result = self.model.model.generate(
                    encoded,
                    [prompt],
                    max_length=min(self.model.max_length, len(prompt) + MAX_NEW_TOKENS),
                    return_scores=True,
                    return_no_speech_prob=True,
                    suppress_blank=True,
                    suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1]) or []),
                    **sampling,
                )[0]
            except (RuntimeError, ValueError) as err:
                raise SpeechToTextError(f"{self.name} failed: {err}") from err
        hypotheses = []
        for ids, score in zip(result.sequences_ids, result.scores, strict=True):
            tokens = [t for t in ids if t < tokenizer.eot]
            # CTranslate2 returns the length-normalised score; recover the mean log-probability per token.
            hypotheses.append((tokenizer.decode(tokens).strip(), score * len(tokens) / (len(tokens) + 1), len(tokens)))
        text, avg_logprob, n_tokens = hypotheses[0]
        stats = [SegmentStats(text, avg_logprob, result.no_speech_prob, n_tokens)]
        transcription = build_transcription(stats, language, duration_s)
        if not transcription.is_hallucination and len(hypotheses) > 1:
            transcription.alternatives = tuple(
                (alt, round(float(lp), 4)) for alt, lp, _ in hypotheses[1:] if alt and alt != text
            )
        return transcription
